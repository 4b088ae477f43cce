"""The errors of the simulated enclave's wire formats: quotes and provisioning.

They belong to the enclave's own small hierarchy, independent of :mod:`pps_wire.errors` (the HTTP API's): the
enclave library (``enclave_sim``, which adds the errors of its jobs and sealing) raises them, they cross the
enclave's process boundary by ``code``, and a server maps them onto its own errors. A party verifying a quote
(:mod:`pps_wire.quote`) or opening a release (:mod:`pps_wire.provision`) sees them directly.
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
    have the shape the job expects; or a release does not verify for the party opening it."""

    code = "provisioning_failed"


class EnclaveProtocolError(EnclaveError):
    """A message to or from the enclave is not one of its operations or is malformed."""

    code = "enclave_protocol_error"
