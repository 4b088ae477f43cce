"""Errors of the simulated enclave. Independent of ``pps``: callers map them to their own hierarchy.

Every error has a stable ``code``; an :class:`AttestationError` also names the ``reason`` the quote was refused.
"""

from __future__ import annotations


class EnclaveError(Exception):
    """Base of every error the enclave library raises on purpose."""

    code: str = "enclave_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AttestationError(EnclaveError):
    """A quote is malformed, not signed by the pinned vendor key, or fails the verifier's policy.

    ``reason`` is one of: ``malformed``, ``unknown_signer``, ``bad_signature``, ``measurement``, ``svn``,
    ``debug``, ``nonce``, ``replay``, ``stale``, ``policy``.
    """

    code = "attestation_failed"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProvisioningError(EnclaveError):
    """Provisioned data does not decrypt under the enclave's key for the quote and slot it names, or does not
    have the shape the job expects."""

    code = "provisioning_failed"


class SealingError(EnclaveError):
    """A sealed blob does not open: another enclave build, another platform, or tampering."""

    code = "unseal_failed"


class OutputPolicyViolation(EnclaveError):
    """A job tried to release something its output policy does not allow; nothing was released."""

    code = "output_policy_violation"


class EnclaveJobError(EnclaveError):
    """A job inside the enclave could not run (too few rows, a single class, bad parameters)."""

    code = "enclave_job_failed"


class EnclaveProtocolError(EnclaveError):
    """A message to or from the enclave is not one of its operations or is malformed."""

    code = "enclave_protocol_error"


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
        EnclaveProtocolError,
        EnclaveCrashed,
    )
}
"""Errors that cross the process boundary by code (an AttestationError never does: verifiers raise it)."""
