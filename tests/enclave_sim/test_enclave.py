"""The enclave process: provisioning, joint training on German credit, output policy, sealing, crashes."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave_sim import crypto
from enclave_sim.core import EnclaveCore
from enclave_sim.errors import (
    AttestationError,
    EnclaveCrashed,
    EnclaveProtocolError,
    OutputPolicyViolation,
    ProvisioningError,
    SealingError,
)
from enclave_sim.host import EnclaveHost
from enclave_sim.jobs import EnclaveJob, joined_design, parse_table, predict_exported, train_gbdt
from enclave_sim.platform import CODE_ROOT, EnclaveConfig, derive_seal_key, expected_measurement
from pps_wire import provision
from pps_wire.provision import table_bytes
from pps_wire.quote import NonceRegistry, Quote, encode_body, sign_quote, signer_id, standard_policy
from tests.enclave_sim.conftest import GermanCredit

MEASUREMENT = expected_measurement()


def raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Bank:
    """A party: verifies a fresh quote, then provisions its rows and output policy to that enclave."""

    def __init__(self, vendor: Ed25519PrivateKey, *, trusted: bytes = MEASUREMENT) -> None:
        self.vendor = vendor.public_key()
        self.trusted = trusted
        self.recipient = X25519PrivateKey.generate()
        self.registry = NonceRegistry()

    def provision(
        self, enclave: EnclaveHost, handle: str, body: bytes, release: tuple[str, ...]
    ) -> provision.OutputPolicy:
        nonce = os.urandom(32)
        quote = enclave.quote(nonce)
        policy = standard_policy(measurements=[self.trusted], nonce=nonce, registry=self.registry)
        out = provision.OutputPolicy(release, os.urandom(32), raw_public(self.recipient))
        # verifies the quote first: there is no way to encrypt to an enclave without a policy
        ct = provision.encrypt_for_enclave(
            quote, policy, vendor_key=self.vendor, job="gbdt", slot="bank", body=body, output=out
        )
        enclave.provision(
            handle, job="gbdt", slot="bank", quote_hash=Quote.parse(quote).quote_hash, ciphertext=ct
        )
        return out


def bank_body(gc: GermanCredit) -> bytes:
    return table_bytes(gc.keys, {k: v.tolist() for k, v in gc.bank.items()}, gc.labels.tolist())


def platform_body(gc: GermanCredit, order: np.ndarray[Any, Any] | None = None) -> bytes:
    idx = order if order is not None else np.arange(len(gc.keys))
    return table_bytes([gc.keys[i] for i in idx], {k: v[idx].tolist() for k, v in gc.platform.items()})


@pytest.mark.slow
@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_german_credit_in_the_enclave_matches_plaintext(
    enclave: EnclaveHost, vendor: Ed25519PrivateKey, german_credit: GermanCredit
) -> None:
    gc = german_credit
    bank = Bank(vendor)
    out = bank.provision(enclave, "gc", bank_body(gc), ("metrics", "model", "scores"))
    # the platform holds its part in another order, and 100 applicants the bank does not have
    order = np.random.default_rng(1).permutation(len(gc.keys))
    enclave.supply("gc", job="gbdt", slot="platform", data=platform_body(gc, order))
    started = time.perf_counter()
    release, plain = enclave.run("gc", params={"seed": 7}, output=out.public())
    seconds = time.perf_counter() - started
    opened = provision.open_release(release, result_key=out.result_key, recipient=bank.recipient)
    metrics = opened["outputs"]["metrics"]
    assert plain == {"metrics": metrics}  # the host sees the plain metrics and nothing else
    assert metrics["joined"] == 1000 and metrics["test"] == 300
    # the same computation on plaintext, same split, same parameters
    keys, names, x, y = joined_design(
        parse_table(bank_body(gc), what="bank", labelled=True),
        parse_table(platform_body(gc, order), what="platform", labelled=False),
    )
    model, plain_metrics, _test_mask = train_gbdt(
        x, y, {"max_iter": 100, "max_leaf_nodes": 31, "min_samples_leaf": 20, "test_percent": 30, "seed": 7}
    )
    print(
        f"\nGerman credit, enclave GBDT: test AUC {metrics['test_auc']:.4f}, KS {metrics['test_ks']:.4f} "
        f"(plaintext {plain_metrics['test_auc']:.4f}); run {seconds:.2f} s"
    )
    assert metrics["test_auc"] > 0.7
    assert abs(metrics["test_auc"] - plain_metrics["test_auc"]) <= 0.01
    # the exported trees are data, and predict what sklearn predicts
    exported = opened["outputs"]["model"]
    assert exported["features"] == names
    np.testing.assert_allclose(
        predict_exported(exported, x[:200]), model.predict_proba(x[:200])[:, 1], atol=1e-9
    )
    scores = opened["outputs"]["scores"]
    assert len(scores) == 1000 and set(scores) == set(keys)
    # the inputs are gone after the run
    with pytest.raises(EnclaveProtocolError, match="no inputs"):
        enclave.run("gc", params={}, output=out.public())


def test_a_bank_pinning_the_old_build_refuses_to_provision_a_changed_one(
    tmp_path: Path, vendor: Ed25519PrivateKey, platform_secret: bytes
) -> None:
    code = tmp_path / "enclave_sim"
    shutil.copytree(CODE_ROOT, code)
    shutil.copytree(CODE_ROOT.parent / "protocols", tmp_path / "protocols")  # the coordinator's measured code
    with (code / "jobs.py").open("a") as fh:
        fh.write("\nLEAK = True  # a changed enclave\n")
    changed = EnclaveHost(vendor_key=vendor, platform_secret=platform_secret, code_root=code)
    changed.start()
    try:
        assert changed.measurement == expected_measurement(code_root=code) != MEASUREMENT
        bank = Bank(vendor)
        with pytest.raises(AttestationError) as err:
            bank.provision(changed, "h", b"{}", ("metrics",))
        assert err.value.reason == "measurement"
        # and a blob sealed by the real build does not open in the changed one
        sealed = crypto.seal(derive_seal_key(platform_secret, MEASUREMENT), MEASUREMENT, "state", b"secret")
        with pytest.raises(SealingError):
            changed.unseal("state", sealed)
    finally:
        changed.stop()


def test_a_debug_enclave_is_refused(vendor: Ed25519PrivateKey, platform_secret: bytes) -> None:
    debug = EnclaveHost(vendor_key=vendor, platform_secret=platform_secret, config=EnclaveConfig(debug=True))
    debug.start()
    try:
        bank = Bank(vendor, trusted=debug.measurement)  # even a verifier that pins the debug build
        with pytest.raises(AttestationError) as err:
            bank.provision(debug, "h", b"{}", ("metrics",))
        assert err.value.reason == "debug"
    finally:
        debug.stop()


def test_provisioned_data_opens_only_for_its_quote_and_slot(
    enclave: EnclaveHost, vendor: Ed25519PrivateKey
) -> None:
    nonce = os.urandom(32)
    quote = enclave.quote(nonce)
    policy = standard_policy(measurements=[MEASUREMENT], nonce=nonce)
    out = provision.OutputPolicy(("metrics",), os.urandom(32))
    ct = provision.encrypt_for_enclave(
        quote, policy, vendor_key=vendor.public_key(), job="gbdt", slot="bank", body=b"{}", output=out
    )
    other_quote = enclave.quote(os.urandom(32))
    with pytest.raises(ProvisioningError, match="does not decrypt"):  # named another quote
        enclave.provision(
            "p1", job="gbdt", slot="bank", quote_hash=Quote.parse(other_quote).quote_hash, ciphertext=ct
        )
    with pytest.raises(ProvisioningError, match="not issued by this enclave"):
        enclave.provision("p2", job="gbdt", slot="bank", quote_hash=os.urandom(32), ciphertext=ct)
    tampered = ct[:-1] + bytes([ct[-1] ^ 1])
    with pytest.raises(ProvisioningError):
        enclave.provision(
            "p3", job="gbdt", slot="bank", quote_hash=Quote.parse(quote).quote_hash, ciphertext=tampered
        )
    with pytest.raises(
        EnclaveProtocolError, match="no slot"
    ):  # the host cannot pose as the bank, or vice versa
        enclave.supply("p4", job="gbdt", slot="bank", data=b"{}")
    receipt = enclave.provision(
        "p5", job="gbdt", slot="bank", quote_hash=Quote.parse(quote).quote_hash, ciphertext=ct
    )
    assert receipt["output"] == out.public() and "result_key" not in str(receipt)
    enclave.drop("p5")


def test_a_job_cannot_release_what_its_output_policy_forbids(
    enclave: EnclaveHost, vendor: Ed25519PrivateKey, german_credit: GermanCredit
) -> None:
    gc = german_credit
    bank = Bank(vendor)
    out = bank.provision(enclave, "m", bank_body(gc), ("metrics",))
    enclave.supply("m", job="gbdt", slot="platform", data=platform_body(gc))
    # the host declares a wider policy than the bank provisioned: refused, nothing runs, the inputs are gone
    wider = {"release": ["metrics", "model"], "recipient_key": raw_public(bank.recipient).hex()}
    with pytest.raises(OutputPolicyViolation):
        enclave.run("m", params={"max_iter": 20}, output=wider)
    out = bank.provision(enclave, "m2", bank_body(gc), ("metrics",))
    enclave.supply("m2", job="gbdt", slot="platform", data=platform_body(gc))
    release, plain = enclave.run("m2", params={"max_iter": 20}, output=out.public())
    opened = provision.open_release(release, result_key=out.result_key, recipient=None)
    assert set(opened["outputs"]) == {"metrics"} and set(plain) == {"metrics"}
    doc = release.decode()
    assert "applicant-" not in doc and '"encrypted":null' in doc  # no keys, no scores, no model
    # the host cannot alter a release unnoticed
    forged = release.replace(b'"joined":1000', b'"joined":1001')
    with pytest.raises(ProvisioningError, match="tag"):
        provision.open_release(forged, result_key=out.result_key, recipient=None)


class _Rogue(EnclaveJob):
    kind = "rogue"
    party_slots = ("bank",)
    owner_slot = "bank"
    outputs = frozenset({"metrics"})
    plain_outputs = frozenset({"metrics"})

    def finish(self) -> dict[str, Any]:
        return {"metrics": {"n": 1}, "rows": self.inputs["bank"].decode()}


class _Platform:
    measurement = MEASUREMENT
    isv_svn = 1
    debug = False
    seal_key = os.urandom(32)

    def __init__(self, vendor: Ed25519PrivateKey) -> None:
        self.vendor = vendor

    def quote(self, enclave_key: bytes, nonce: bytes) -> bytes:
        body = encode_body(
            debug=False,
            isv_svn=1,
            issued_at_ms=int(time.time() * 1000),
            measurement=MEASUREMENT,
            enclave_key=enclave_key,
            nonce=nonce,
            signer=signer_id(self.vendor.public_key()),
        )
        return sign_quote(body, self.vendor)


def test_a_job_that_tries_to_release_an_undeclared_output_releases_nothing(vendor: Ed25519PrivateKey) -> None:
    import base64
    import json

    core = EnclaveCore(_Platform(vendor), jobs={"rogue": _Rogue})

    def call(**msg: Any) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads(core.handle(json.dumps(msg).encode()))
        return reply

    nonce = os.urandom(32)
    quote = base64.b64decode(call(op="quote", nonce=base64.b64encode(nonce).decode())["quote"])
    out = provision.OutputPolicy(("metrics",), os.urandom(32))
    ct = provision.encrypt_for_enclave(
        quote,
        standard_policy(measurements=[MEASUREMENT], nonce=nonce),
        vendor_key=vendor.public_key(),
        job="rogue",
        slot="bank",
        body=b"SECRET ROWS",
        output=out,
    )
    got = call(
        op="provision",
        handle="r",
        job="rogue",
        slot="bank",
        quote_hash=Quote.parse(quote).quote_hash.hex(),
        ciphertext=base64.b64encode(ct).decode(),
    )
    assert got["ok"], got
    reply = call(op="run", handle="r", params={}, output=out.public())
    assert reply == {"ok": False, "code": "output_policy_violation", "message": reply["message"]}
    assert "SECRET" not in json.dumps(reply)
    assert call(op="nonsense")["code"] == "enclave_protocol_error"
    assert json.loads(core.handle(b"\x80not json"))["code"] == "enclave_protocol_error"


def test_sealing_binds_the_build_and_the_platform(enclave: EnclaveHost, platform_secret: bytes) -> None:
    blob = enclave.seal("model", b"state only this build may read")
    assert enclave.unseal("model", blob) == b"state only this build may read"
    with pytest.raises(SealingError):
        enclave.unseal("other-label", blob)
    with pytest.raises(SealingError):
        enclave.unseal("model", blob[:-1] + bytes([blob[-1] ^ 1]))
    other_measurement = os.urandom(32)
    with pytest.raises(SealingError, match="another enclave build"):
        crypto.unseal(derive_seal_key(platform_secret, other_measurement), other_measurement, "model", blob)
    relabelled = blob[:5] + other_measurement + blob[37:]  # claim the other build: its key does not open it
    with pytest.raises(SealingError, match="does not open"):
        crypto.unseal(
            derive_seal_key(platform_secret, other_measurement), other_measurement, "model", relabelled
        )
    with pytest.raises(SealingError, match="does not open"):  # same build, another platform
        crypto.unseal(derive_seal_key(os.urandom(32), MEASUREMENT), MEASUREMENT, "model", blob)


@pytest.mark.slow
def test_killing_the_enclave_mid_job_fails_cleanly_and_a_new_one_works(
    vendor: Ed25519PrivateKey, platform_secret: bytes, german_credit: GermanCredit
) -> None:
    gc = german_credit
    host = EnclaveHost(vendor_key=vendor, platform_secret=platform_secret)
    host.start()
    try:
        bank = Bank(vendor)
        out = bank.provision(host, "long", bank_body(gc), ("metrics", "model"))
        host.supply("long", job="gbdt", slot="platform", data=platform_body(gc))
        blob = host.seal("state", b"kept across restarts")
        killer = threading.Timer(1.0, host.kill)
        killer.start()
        started = time.monotonic()
        with pytest.raises(EnclaveCrashed):
            host.run(
                "long",
                params={"max_iter": 10_000, "max_leaf_nodes": 255, "min_samples_leaf": 1},
                output=out.public(),
            )
        assert time.monotonic() - started < 10
        assert not host.alive
        with pytest.raises(EnclaveCrashed):
            host.quote(os.urandom(32))
        old_key = host.hello["enclave_key"]
        host.start()
        assert host.hello["enclave_key"] != old_key  # a new instance: new key, empty memory
        assert host.unseal("state", blob) == b"kept across restarts"  # same build, same platform
        with pytest.raises(EnclaveProtocolError, match="no inputs"):
            host.run("long", params={}, output=out.public())
        out = bank.provision(host, "again", bank_body(gc), ("metrics",))
        host.supply("again", job="gbdt", slot="platform", data=platform_body(gc))
        _, plain = host.run("again", params={"max_iter": 20}, output=out.public())
        assert plain["metrics"]["joined"] == 1000
    finally:
        host.stop()
