"""Errors of the simulated enclave. Independent of ``pps``: callers map them to their own hierarchy.

Every error has a stable ``code``; an :class:`AttestationError` also names the ``reason`` the quote was refused.
The errors of the formats a party shares with the enclave (quotes, provisioning, the release) are defined in
:mod:`pps_wire.enclave_errors` and re-exported here with the enclave's own (jobs, sealing, its process).
"""

from __future__ import annotations

from pps_wire.enclave_errors import AttestationError, EnclaveError, EnclaveProtocolError, ProvisioningError

__all__ = [
    "BY_CODE",
    "AttestationError",
    "EnclaveCrashed",
    "EnclaveError",
    "EnclaveJobError",
    "EnclaveProtocolError",
    "OutputPolicyViolation",
    "ProvisioningError",
    "SealingError",
]


class SealingError(EnclaveError):
    """A sealed blob does not open: another enclave build, another platform, or tampering."""

    code = "unseal_failed"


class OutputPolicyViolation(EnclaveError):
    """A job tried to release something its output policy does not allow; nothing was released."""

    code = "output_policy_violation"


class EnclaveJobError(EnclaveError):
    """A job inside the enclave could not run (too few rows, a single class, bad parameters)."""

    code = "enclave_job_failed"


class ModelRefused(EnclaveJobError):
    """A bank's model does not meet the published model policy (:mod:`enclave_sim.model_check`); the message
    names every rule it breaks. Nothing was computed with it."""

    code = "model_refused"


class EnclaveCrashed(EnclaveError):
    """The enclave process died or stopped answering; everything it held in memory is gone."""

    code = "enclave_crashed"


BY_CODE: dict[str, type[EnclaveError]] = {
    cls.code: cls
    for cls in (
        EnclaveError,
        ProvisioningError,
        SealingError,
        OutputPolicyViolation,
        EnclaveJobError,
        ModelRefused,
        EnclaveProtocolError,
        EnclaveCrashed,
    )
}
"""Errors that cross the process boundary by code (an AttestationError never does: verifiers raise it)."""
