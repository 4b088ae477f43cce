"""Quotes: the format, and every way verification must refuse one (no enclave process needed)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_sim.platform import EnclaveConfig, expected_measurement
from pps_wire.enclave_errors import AttestationError
from pps_wire.quote import (
    BODY_BYTES,
    QUOTE_BYTES,
    AllOf,
    MinimumSVN,
    NonceRegistry,
    Quote,
    encode_body,
    sign_quote,
    signer_id,
    standard_policy,
    verify_quote,
    verify_quote_at_time,
)

VENDOR = Ed25519PrivateKey.generate()
MEASUREMENT = expected_measurement()
NONCE = bytes(range(32))


def make(
    *,
    key: Ed25519PrivateKey = VENDOR,
    debug: bool = False,
    svn: int = 1,
    nonce: bytes = NONCE,
    measurement: bytes = MEASUREMENT,
    issued_ms: int | None = None,
) -> bytes:
    body = encode_body(
        debug=debug,
        isv_svn=svn,
        issued_at_ms=issued_ms if issued_ms is not None else int(time.time() * 1000),
        measurement=measurement,
        enclave_key=os.urandom(32),
        nonce=nonce,
        signer=signer_id(key.public_key()),
    )
    return sign_quote(body, key)


def policy(**kw: object) -> AllOf:
    return standard_policy(measurements=[MEASUREMENT], nonce=NONCE, **kw)  # type: ignore[arg-type]


def test_a_good_quote_verifies_and_parses() -> None:
    raw = make()
    assert len(raw) == QUOTE_BYTES == 184
    verify_quote(raw, policy(), vendor_key=VENDOR.public_key())
    q = Quote.parse(raw)
    assert (q.measurement, q.nonce, q.isv_svn, q.debug) == (MEASUREMENT, NONCE, 1, False)
    assert raw[:4] == b"PEQT" and raw[4] == 1


def _flip(i: int) -> Callable[[bytes], bytes]:
    return lambda raw: raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1 :]


BAD: dict[str, tuple[Callable[[], bytes], str]] = {
    "truncated": (lambda: make()[:-1], "malformed"),
    "truncated_to_body": (lambda: make()[:BODY_BYTES], "malformed"),
    "empty": (lambda: b"", "malformed"),
    "extended": (lambda: make() + b"\x00", "malformed"),
    "wrong_magic": (lambda: b"XEQT" + make()[4:], "malformed"),
    "unknown_flag": (lambda: (lambda raw: raw[:5] + b"\x02" + raw[6:])(make()), "malformed"),
    "signed_by_another_key": (lambda: make(key=Ed25519PrivateKey.generate()), "unknown_signer"),
    "signature_by_another_key_under_the_pinned_id": (
        lambda: (lambda body: body + Ed25519PrivateKey.generate().sign(body))(make()[:BODY_BYTES]),
        "bad_signature",
    ),
    "tampered_measurement": (lambda: _flip(20)(make()), "bad_signature"),
    "tampered_enclave_key": (lambda: _flip(50)(make()), "bad_signature"),
    "debug_enclave": (lambda: make(debug=True), "debug"),
    "other_nonce": (lambda: make(nonce=os.urandom(32)), "nonce"),
    "untrusted_measurement": (lambda: make(measurement=os.urandom(32)), "measurement"),
    "old_security_version": (lambda: make(svn=0), "svn"),
    "stale": (lambda: make(issued_ms=int(time.time() * 1000) - 3_600_000), "stale"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_quote_is_refused_with_its_reason(case: str) -> None:
    build, reason = BAD[case]
    with pytest.raises(AttestationError) as err:
        verify_quote(build(), policy(), vendor_key=VENDOR.public_key())
    assert err.value.reason == reason, err.value.message
    assert err.value.code == "attestation_failed"


def test_a_replayed_nonce_is_refused() -> None:
    registry = NonceRegistry()
    raw = make()
    verify_quote(raw, policy(registry=registry), vendor_key=VENDOR.public_key())
    with pytest.raises(AttestationError) as err:
        verify_quote(raw, policy(registry=registry), vendor_key=VENDOR.public_key())
    assert err.value.reason == "replay"
    # a quote refused for another reason does not spend the nonce (the freshness check comes last)
    other = os.urandom(32)
    with pytest.raises(AttestationError):
        verify_quote(
            make(nonce=other, svn=0),
            standard_policy(measurements=[MEASUREMENT], nonce=other, registry=registry),
            vendor_key=VENDOR.public_key(),
        )
    verify_quote(
        make(nonce=other),
        standard_policy(measurements=[MEASUREMENT], nonce=other, registry=registry),
        vendor_key=VENDOR.public_key(),
    )


def test_policies_compose() -> None:
    raw = make(svn=3)
    verify_quote(raw, AllOf(policy(), MinimumSVN(3)), vendor_key=VENDOR.public_key())
    with pytest.raises(AttestationError, match="below 4"):
        verify_quote(raw, AllOf(policy(), MinimumSVN(4)), vendor_key=VENDOR.public_key())
    future = int(time.time() * 1000) + 3_600_000
    with pytest.raises(AttestationError):
        verify_quote_at_time(raw, policy(), vendor_key=VENDOR.public_key(), now_ms=future)


def test_a_changed_enclave_module_or_config_changes_the_measurement(tmp_path: Path) -> None:
    import enclave_sim.platform as platform

    code = tmp_path / "enclave_sim"
    shutil.copytree(platform.CODE_ROOT, code)
    shutil.copytree(
        platform.CODE_ROOT.parent / "protocols", tmp_path / "protocols"
    )  # the coordinator's measured code
    assert expected_measurement(code_root=code) == MEASUREMENT
    with (code / "jobs.py").open("a") as fh:
        fh.write("\n# one changed line\n")
    assert expected_measurement(code_root=code) != MEASUREMENT
    assert expected_measurement(EnclaveConfig(debug=True)) != MEASUREMENT
    assert expected_measurement(EnclaveConfig(isv_svn=2)) != MEASUREMENT
    # an unmeasured file (the host side) does not change it
    with (code / "host.py").open("a") as fh:
        fh.write("\n# host code is not the enclave's\n")
    shutil.copy(platform.CODE_ROOT / "jobs.py", code / "jobs.py")
    assert expected_measurement(code_root=code) == MEASUREMENT


def test_the_coordinators_protocol_code_is_part_of_the_measurement(tmp_path: Path) -> None:
    import enclave_sim.platform as platform

    code = tmp_path / "enclave_sim"
    shutil.copytree(platform.CODE_ROOT, code)
    shutil.copytree(platform.CODE_ROOT.parent / "protocols", tmp_path / "protocols")
    with (tmp_path / "protocols" / "vertical_lr" / "coordinator.py").open("a") as fh:
        fh.write("\n# a coordinator that would keep what it decrypts\n")
    assert expected_measurement(code_root=code) != MEASUREMENT


def test_the_wire_formats_the_enclave_shares_are_part_of_its_measurement(tmp_path: Path) -> None:
    """The enclave loads the quote, provisioning and sealed-request formats of pps_wire as its own code: a
    changed copy of them beside the enclave's code is a changed build."""
    import enclave_sim.platform as platform
    import pps_wire
    from pps_wire.measurement import MODULES

    assert {"pps_wire.quote", "pps_wire.provision", "pps_wire.sealed"} <= set(MODULES)
    code = tmp_path / "enclave_sim"
    shutil.copytree(platform.CODE_ROOT, code)
    shutil.copytree(Path(pps_wire.__file__).parent, tmp_path / "pps_wire")
    assert expected_measurement(code_root=code) == MEASUREMENT
    with (tmp_path / "pps_wire" / "provision.py").open("a") as fh:
        fh.write("\n# a provisioning format that would keep the plaintext\n")
    assert expected_measurement(code_root=code) != MEASUREMENT
