"""GB 11643 resident ID numbers and the keyed person codes (pps_wire.resident_id, pps.identity.persons)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pps.errors import InvalidResidentID
from pps.identity.persons import Pseudonymizer, is_person_code
from pps.identity.uscc import validate_uscc
from pps_wire.resident_id import id_check_character, make_resident_id, mask_resident_id, validate_resident_id

# the worked example of GB 11643-1999 and a number with check character X
VALID = ["11010519491231002X", make_resident_id("63282119800101123")]


@pytest.mark.parametrize("number", VALID)
def test_valid_numbers(number: str) -> None:
    assert validate_resident_id(number) == number
    assert validate_resident_id(" " + number.lower() + " ") == number


def test_every_single_digit_change_is_caught() -> None:
    number = VALID[0]
    for pos in range(18):
        for c in "0123456789X":
            if c == number[pos]:
                continue
            changed = number[:pos] + c + number[pos + 1 :]
            with pytest.raises(InvalidResidentID):
                validate_resident_id(changed)


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("11010519491231002", "18 characters"),
        ("11010519491231002XX", "18 characters"),
        ("1101051949123100AX", "17 digits"),
        ("110105194913310021", "date of birth"),
        ("110105219912310021", "out of range"),
        ("11010519491231002Y", "17 digits"),
        ("110105194912310021", "check character"),
    ],
)
def test_invalid_numbers_say_why_without_repeating_them(number: str, reason: str) -> None:
    with pytest.raises(InvalidResidentID, match=reason) as info:
        validate_resident_id(number)
    assert number[:14] not in str(info.value)


@given(
    st.from_regex(
        r"63[0-9]{4}(19[5-9][0-9]|200[0-5])(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}", fullmatch=True
    )
)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_made_numbers_validate(first17: str) -> None:
    number = make_resident_id(first17)
    assert validate_resident_id(number) == number
    assert id_check_character(first17) == number[17]


def test_mask_keeps_first_six_and_last_four() -> None:
    assert mask_resident_id("11010519491231002X") == "110105********002X"


def test_person_codes_are_keyed_stable_distinct_and_uscc_shaped() -> None:
    a, b = Pseudonymizer(b"k" * 32), Pseudonymizer(b"j" * 32)
    number = VALID[1]
    code = a.code(number)
    assert code == a.code(number.lower())  # stable, normalised first
    assert code != b.code(number)  # keyed: another key, another code
    assert validate_uscc(code) == code  # both check characters hold: every subject path carries it
    assert is_person_code(code) and code[2:8] == "632821" and number[6:] not in code
    assert not is_person_code("91350100M000100Y43")
    codes = {a.code(make_resident_id(f"632821198001{d:02d}{s:03d}")) for d in range(1, 29) for s in range(40)}
    assert len(codes) == 28 * 40
    with pytest.raises(InvalidResidentID):
        a.code("632821198001011230")
