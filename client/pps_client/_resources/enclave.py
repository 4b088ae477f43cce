"""The simulated enclave: quotes, provisioning to a verified quote, and attested jobs on joint data."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Mapping, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from pps_client._client import dumps
from pps_client._exceptions import AttestationError, ReleaseVerificationError, verification
from pps_client._resources._base import Resource
from pps_client._types import EnclaveQuote, GBDTResult
from pps_client._verify import trusted_measurements, verify_quote
from pps_wire import provision, quote
from pps_wire.schemas import ALL_CONSENTED, EnclaveJobIn, JobPublic, QuoteOut


class Enclave(Resource):
    def quote(self, nonce: bytes | None = None) -> EnclaveQuote:
        """A quote of the enclave for ``nonce`` (32 bytes; random if None). Not yet trusted: verify it with
        :func:`pps_client.verify_quote` against the vendor key and the measurements you pinned."""
        nonce = nonce if nonce is not None else os.urandom(quote.NONCE_BYTES)
        if len(nonce) != quote.NONCE_BYTES:
            raise ValueError(f"nonce must be {quote.NONCE_BYTES} bytes")
        info = self._client._call("GET", "/v1/enclave/quote", QuoteOut, params={"nonce": nonce.hex()})
        return EnclaveQuote(base64.b64decode(info.quote), nonce, info)

    def provision(
        self,
        *,
        job: str,
        slot: str,
        body: bytes,
        output: provision.OutputPolicy | None,
        vendor_key: Ed25519PublicKey,
        measurements: Iterable[bytes] | None = None,
    ) -> tuple[bytes, bytes]:
        """Verify a fresh quote of a trusted build (``measurements``; default: the build whose source is
        installed here) and encrypt ``body`` and the ``output`` policy to that enclave for ``job``'s ``slot``
        (HPKE). Returns ``(quote, sealed)``; only that enclave instance can open ``sealed``."""
        trusted = trusted_measurements(measurements)
        got = self.quote()
        verify_quote(got.quote, vendor_key=vendor_key, nonce=got.nonce, measurements=trusted)
        with verification(AttestationError):
            sealed = provision.encrypt_for_enclave(
                got.quote,
                quote.standard_policy(measurements=trusted, nonce=got.nonce),
                vendor_key=vendor_key,
                job=job,
                slot=slot,
                body=body,
                output=output,
            )
        return got.quote, sealed

    def gbdt(
        self,
        *,
        purpose: str,
        keys: Sequence[str],
        labels: Sequence[int],
        bank_features: Mapping[str, Sequence[float | None]],
        features: Sequence[str],
        vendor_key: Ed25519PublicKey,
        release: Iterable[str] = ("metrics",),
        subjects: Iterable[str] | None = None,
        measurements: Iterable[bytes] | None = None,
        params: Mapping[str, int] | None = None,
        timeout: float = 600.0,
    ) -> GBDTResult:
        """Train gradient-boosted trees in the enclave on this bank's labelled rows (``keys`` are USCCs) joined
        with the platform ``features`` of consented subjects: verify a fresh quote, encrypt the rows and the
        output policy to that enclave, submit, wait, check that the release came from the enclave, decrypt.
        ``metrics`` come in the clear; ``scores`` and the ``model`` encrypted to a key made here for this job."""
        recipient = X25519PrivateKey.generate()
        wanted = sorted(set(release))
        output = provision.OutputPolicy(
            tuple(wanted),
            os.urandom(32),
            recipient.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            if set(wanted) - {"metrics"}
            else None,
        )
        raw_quote, sealed = self.provision(
            job="gbdt",
            slot="bank",
            body=provision.table_bytes(keys, bank_features, labels),
            output=output,
            vendor_key=vendor_key,
            measurements=measurements,
        )
        body = EnclaveJobIn.model_validate(
            {
                "job": "gbdt",
                "purpose": purpose,
                "subjects": ALL_CONSENTED if subjects is None else list(subjects),
                "features": list(features),
                "quote_hash": quote.Quote.parse(raw_quote).quote_hash.hex(),
                "rows": {
                    "enc": base64.b64encode(sealed[: provision.ENC_BYTES]).decode(),
                    "ciphertext": base64.b64encode(sealed[provision.ENC_BYTES :]).decode(),
                },
                "output": output.public(),
                "params": dict(params or {}),
            }
        )
        job = self._client._call("POST", "/v1/enclave/jobs", JobPublic, json_body=dumps(body))
        done = self._client.jobs.wait(job.id, timeout=timeout)
        with verification(ReleaseVerificationError):
            opened = provision.open_release(
                self._client.jobs.result(job.id), result_key=output.result_key, recipient=recipient
            )
        return GBDTResult(done, dict(opened["outputs"]), str(opened["measurement"]))
