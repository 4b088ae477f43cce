"""``pps.errors.translate``: the one mapping of the libraries' errors onto PPS errors. A protocol error keeps its
message, details and code and becomes a PPS error whose class gives the HTTP status it had before the protocols
had their own errors; an enclave error maps as the services used to map it; anything else is not translated."""

from __future__ import annotations

import json
import pickle

import pytest

from api.errors import status_for
from enclave_sim import errors as ee
from pps import errors as e
from protocols import errors as pe


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        (pe.InvalidPSIMessage, e.InvalidInput, 422),
        (pe.PSISetTooLarge, e.InvalidInput, 422),
        (pe.InvalidSecAggMessage, e.InvalidInput, 422),
        (pe.SecAggStageError, e.Conflict, 409),
        (pe.SecAggAborted, e.Conflict, 409),
        (pe.InvalidContext, e.InvalidInput, 422),
        (pe.ContextHasSecretKey, e.InvalidInput, 422),
        (pe.WeakParameters, e.InvalidInput, 422),
        (pe.InvalidCiphertext, e.InvalidInput, 422),
        (pe.ForeignCiphertext, e.InvalidInput, 422),
        (pe.InvalidScoringModel, e.InvalidInput, 422),
        (pe.InvalidFeatureMatrix, e.InvalidInput, 422),
        (pe.ScoringLimitExceeded, e.PayloadTooLarge, 413),
        (pe.InvalidTrainingData, e.InvalidInput, 422),
        (pe.EncodingOverflow, e.InvalidInput, 422),
        (pe.WorkerCrashed, e.InvalidInput, 422),
    ],
)
def test_a_protocol_error_becomes_its_pps_error_and_keeps_its_code(
    error: type[pe.ProtocolError], kind: type[e.PPSError], status: int
) -> None:
    original = error("what went wrong", details={"index": 2})
    translated = e.translate(original)
    assert isinstance(translated, kind) and isinstance(translated, error)
    assert (translated.code, translated.message, translated.details) == (
        error.code,
        "what went wrong",
        {"index": 2},
    )
    assert status_for(translated) == status
    assert type(pickle.loads(pickle.dumps(translated))) is type(translated)


def test_a_subclass_made_elsewhere_maps_as_its_nearest_class() -> None:
    class Private(pe.InvalidCiphertext):
        pass

    translated = e.translate(Private("x"))
    assert isinstance(translated, e.InvalidInput) and translated.code == "invalid_ciphertext"


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (ee.AttestationError("bad quote", reason="nonce"), e.AttestationError, "attestation_failed"),
        (ee.ProvisioningError("does not open"), e.ProvisioningFailed, "provisioning_failed"),
        (ee.OutputPolicyViolation("no"), e.OutputPolicyViolation, "output_policy_violation"),
        (ee.EnclaveJobError("one class"), e.EnclaveJobFailed, "enclave_job_failed"),
        (ee.EnclaveCrashed("gone"), e.EnclaveUnavailable, "enclave_unavailable"),
        (ee.SealingError("tampered"), e.InvalidInput, "invalid_input"),
    ],
)
def test_an_enclave_error_maps_as_before(error: ee.EnclaveError, kind: type[e.PPSError], code: str) -> None:
    translated = e.translate(error)
    assert type(translated) is kind and translated.code == code
    if isinstance(error, ee.AttestationError):
        assert translated.details == {"reason": "nonce"}


def test_pps_errors_pass_and_anything_else_is_not_translated() -> None:
    own = e.Conflict("x")
    assert e.translate(own) is own
    assert e.translate(ValueError("a bug")) is None
    assert e.translate(KeyError("a bug")) is None


def test_the_sdk_maps_every_protocol_code_to_the_class_of_its_status() -> None:
    """A protocol error reaches the bank as the SDK class of the HTTP status the server answers it with,
    keeping the protocol's own code (the SDK need not know every library's codes)."""
    from api.errors import status_for
    from pps_client._exceptions import api_error, error_class
    from pps_wire import envelope

    for code, cls in pe.BY_CODE.items():
        translated = e.translate(cls("refused"))
        assert translated is not None and translated.code == code
        status = status_for(translated)
        assert 400 <= status < 500, code
        err = api_error(status, json.dumps(envelope.error_body(code, "refused", "req_1")).encode())
        assert (err.status, err.code, err.message) == (status, code, "refused")
        assert isinstance(err, error_class("", status)), code  # the class of its status
