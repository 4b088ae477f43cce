"""GB 32100-2015 unified social credit codes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pps.errors import InvalidUSCC
from pps.identity.uscc import ALPHABET, check_character, make_uscc, mask_uscc, validate_uscc

# valid codes as published in public documentation and registration records
REAL = ["91350100M000100Y43", "91440300708461136T", "911100001000080343"]


@pytest.mark.parametrize("code", REAL)
def test_real_codes_validate(code: str) -> None:
    assert validate_uscc(code) == code
    assert validate_uscc(" " + code.lower() + " ") == code


@pytest.mark.parametrize("code", REAL)
def test_every_single_character_change_is_caught(code: str) -> None:
    for pos in range(18):
        for c in ALPHABET:
            if c == code[pos]:
                continue
            changed = code[:pos] + c + code[pos + 1 :]
            with pytest.raises(InvalidUSCC):
                validate_uscc(changed)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("91350100M000100Y4", "18 characters"),
        ("91350100M000100Y433", "18 characters"),
        ("91350100I000100Y43", "not allowed"),
        ("9135O100M000100Y43", "not allowed"),
        ("91AB0100M000100Y43", "digits"),
        ("91350100M000100Y44", "check character"),
    ],
)
def test_invalid_codes_say_why(code: str, reason: str) -> None:
    with pytest.raises(InvalidUSCC, match=reason):
        validate_uscc(code)


@given(st.text(alphabet=ALPHABET, min_size=9, max_size=9))
def test_made_codes_validate(org_code: str) -> None:
    code = make_uscc("91320500" + org_code)
    assert validate_uscc(code) == code
    assert check_character(code[:17]) == code[17]


def test_mask_hides_the_organisation_code() -> None:
    assert mask_uscc("91350100M000100Y43") == "9135************43"
