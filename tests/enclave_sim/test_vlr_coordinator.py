"""The vertical-LR coordinator inside the enclave: its Paillier key is made there and never leaves; guest
and host train through it exactly as with an in-process coordinator."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_sim.errors import EnclaveError
from enclave_sim.host import EnclaveHost, RemoteCoordinator
from enclave_sim.platform import expected_measurement
from models import datasets
from pps_wire import provision as crypto
from pps_wire.quote import NonceRegistry, Quote, standard_policy
from protocols import paillier_fast as pf
from protocols import vertical_lr as vl

pytestmark = pytest.mark.slow
CONFIG = vl.VerticalLRConfig(epochs=3, batch_size=64, learning_rate=0.1, early_stopping=False)


def provision_coordinator(
    enclave: EnclaveHost, vendor: Ed25519PrivateKey, handle: str, body: bytes = b'{"key_bits": 1024}'
) -> crypto.OutputPolicy:
    """The guest verifies a fresh quote of the build it trusts, then starts a coordinator there."""
    nonce = os.urandom(32)
    quote = enclave.quote(nonce)
    policy = standard_policy(measurements=[expected_measurement()], nonce=nonce, registry=NonceRegistry())
    out = crypto.OutputPolicy(("summary",), os.urandom(32))
    ct = crypto.encrypt_for_enclave(
        quote,
        policy,
        vendor_key=vendor.public_key(),
        job="vlr_coordinator",
        slot="guest",
        body=body,
        output=out,
    )
    enclave.provision(
        handle, job="vlr_coordinator", slot="guest", quote_hash=Quote.parse(quote).quote_hash, ciphertext=ct
    )
    return out


def test_training_through_the_enclave_coordinator_equals_training_in_process(
    enclave: EnclaveHost, vendor: Ed25519PrivateKey
) -> None:
    split = datasets.breast_cancer_vertical(seed=3)
    out = provision_coordinator(enclave, vendor, "vlr")
    remote = RemoteCoordinator(enclave, "vlr")
    inside = vl.train_vertical_lr(
        vl.Guest(split.guest_train, split.y_train),
        vl.Host(split.host_train),
        remote,  # type: ignore[arg-type]
        CONFIG,
    )
    local = vl.train_vertical_lr(
        vl.Guest(split.guest_train, split.y_train),
        vl.Host(split.host_train),
        vl.Coordinator(pf.generate_keypair(1024)[1]),
        CONFIG,
    )
    np.testing.assert_allclose(inside.guest_model.weights, local.guest_model.weights, atol=1e-9)
    np.testing.assert_allclose(inside.host_model.weights, local.host_model.weights, atol=1e-9)
    assert inside.guest_model.intercept == pytest.approx(local.guest_model.intercept, abs=1e-9)
    # the job releases only its summary: never the private key, which was made in the enclave
    release, plain = enclave.run("vlr", params={}, output=out.public())
    assert plain == {
        "summary": {"decryptions": local.decryptions, "sigmoids": local.sigmoids, "epochs": CONFIG.epochs}
    }
    assert release


def test_a_bad_coordinator_message_fails_that_job_only(
    enclave: EnclaveHost, vendor: Ed25519PrivateKey
) -> None:
    provision_coordinator(enclave, vendor, "bad")
    remote = RemoteCoordinator(enclave, "bad")
    remote.public_key_message()
    with pytest.raises(EnclaveError):
        remote.decrypt(b"not a protocol message")
    with pytest.raises(EnclaveError, match="no inputs"):
        remote.public_key_message()  # the failed job's handle is gone
    provision_coordinator(enclave, vendor, "weak", body=b'{"key_bits": 512}')
    with pytest.raises(EnclaveError, match="key_bits"):
        RemoteCoordinator(enclave, "weak").public_key_message()  # the job starts at its first round
    provision_coordinator(enclave, vendor, "fine")
    assert RemoteCoordinator(enclave, "fine").public_key_message()  # the enclave itself is fine
