"""GB 32100-2015 unified social credit codes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pps.errors import InvalidUSCC
from pps.identity.uscc import (
    ALPHABET,
    check_character,
    make_uscc,
    mask_uscc,
    new_uscc,
    org_code_check,
    validate_uscc,
)

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


@given(st.text(alphabet=ALPHABET, min_size=8, max_size=8))
def test_made_codes_validate(org_body: str) -> None:
    code = new_uscc("91630100", org_body)
    assert validate_uscc(code) == code
    assert check_character(code[:17]) == code[17]
    assert org_code_check(code[8:16]) == code[16]


@pytest.mark.parametrize(
    ("org_code", "check"),
    # GB 11714 organisation codes from real USCCs (positions 9-17) and the worked cases 10 -> X, 11 -> 0
    [("70846113", "6"), ("10000803", "4"), ("M000100Y", "4"), ("00000000", "0"), ("79965505", "8")],
)
def test_organisation_code_check(org_code: str, check: str) -> None:
    assert org_code_check(org_code) == check


def test_x_check_digit() -> None:
    bodies = ["".join(ALPHABET[(i * 7 + k) % 31] for k in range(8)) for i in range(200)]
    xs = [b for b in bodies if org_code_check(b) == "X"]
    assert xs
    code = new_uscc("93632800", xs[0])
    assert code[16] == "X" and validate_uscc(code) == code


def test_a_code_with_only_the_last_check_is_refused() -> None:
    """Completing only the GB 32100 check character is not enough: positions 9-17 must pass GB 11714."""
    code = make_uscc("91630100" + "MA1FL0A0" + "1")  # the organisation-code check should be 0
    with pytest.raises(InvalidUSCC, match="GB 11714"):
        validate_uscc(code)


def test_mask_hides_the_organisation_code() -> None:
    assert mask_uscc("91350100M000100Y43") == "9135************43"
