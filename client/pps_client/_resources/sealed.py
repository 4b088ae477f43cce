"""Sealed datasets: columns a provider encrypts under the enclave's public HE contexts; aggregates and encrypted
scoring over them, decrypted only inside the attested enclave."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from pps_client._client import dumps
from pps_client._exceptions import AttestationError, ReleaseVerificationError, verification
from pps_client._resources._base import Resource
from pps_client._sealed import encrypt_sealed_columns, encrypt_sealed_integer_columns, encrypt_sealed_weights
from pps_client._types import SealedContext, SealedScores
from pps_client._verify import trusted_measurements, verify_quote
from pps_wire import provision, quote, sealed
from pps_wire.schemas import (
    ContextOut,
    RotatedOut,
    RotateIn,
    SealedAggregateIn,
    SealedAggregateOut,
    SealedDatasetOut,
    SealedScoringIn,
    SealedScoringOut,
    SealedUploadIn,
)


class Sealed(Resource):
    def context(
        self,
        *,
        vendor_key: Ed25519PublicKey,
        measurements: Iterable[bytes] | None = None,
        nonce: bytes | None = None,
    ) -> SealedContext:
        """The enclave's public CKKS context (and BFV context, for exact integer columns), checked: each context
        id is the SHA-256 of its context, and a quote (pinned ``vendor_key``, trusted build, fresh, not debug)
        answers a nonce that binds both context ids to a nonce chosen here. Raises
        :class:`~pps_client.AttestationError` if anything does not hold."""
        nonce = nonce if nonce is not None else os.urandom(quote.NONCE_BYTES)
        got = self._client._call("GET", "/v1/sealed/context", ContextOut, params={"nonce": nonce.hex()})
        public = base64.b64decode(got.public_context)
        context_id = hashlib.sha256(public).hexdigest()
        if context_id != got.context_id:
            raise AttestationError(
                "the context id is not the SHA-256 of the public context", reason="context"
            )
        bfv_public = base64.b64decode(got.bfv_public_context) if got.bfv_public_context is not None else None
        bfv_id = hashlib.sha256(bfv_public).hexdigest() if bfv_public is not None else None
        if bfv_id != got.bfv_context_id:
            raise AttestationError(
                "the BFV context id is not the SHA-256 of the public BFV context", reason="context"
            )
        raw_quote = base64.b64decode(got.quote)
        bound = sealed.report_nonce(context_id, nonce, bfv_id)
        verify_quote(raw_quote, vendor_key=vendor_key, nonce=bound, measurements=measurements)
        return SealedContext(context_id, public, bfv_id, bfv_public, dict(got.params), raw_quote, bound)

    def upload(
        self,
        name: str,
        *,
        context: SealedContext,
        subjects: Sequence[str],
        columns: Mapping[str, Iterable[float]],
        bounds: Mapping[str, tuple[float, float]],
        attributes: Mapping[str, Sequence[str]] | None = None,
        integer_columns: Iterable[str] = (),
    ) -> SealedDatasetOut:
        """Encrypt ``columns`` (one value per subject, clipped to ``bounds``) under the verified ``context`` (from
        :meth:`context`) and upload them with the plaintext ``subjects`` and C1 ``attributes``. Columns named in
        ``integer_columns`` (counts, months, case numbers) are encrypted exactly under the BFV context instead:
        their values must already be integers in ``[lower, upper]`` (refused otherwise, not clipped), and their
        sums then come back exact before noise."""
        exact = set(integer_columns)
        unknown = sorted(exact - set(columns))
        if unknown:
            raise ValueError(f"integer_columns names columns not given: {unknown}")
        blocks = encrypt_sealed_columns(
            context.public_context, {c: v for c, v in columns.items() if c not in exact}, dict(bounds)
        )
        if exact:
            if context.bfv_public_context is None:
                raise ValueError(
                    "this sealed context has no BFV pair for integer columns (the enclave's key predates it)"
                )
            blocks.update(
                encrypt_sealed_integer_columns(
                    context.bfv_public_context, {c: columns[c] for c in exact}, dict(bounds)
                )
            )
        body = SealedUploadIn.model_validate(
            {
                "name": name,
                "context_id": context.context_id,
                "subjects": list(subjects),
                "attributes": {k: list(v) for k, v in (attributes or {}).items()},
                "columns": {
                    c: {
                        "lower": bounds[c][0],
                        "upper": bounds[c][1],
                        "type": "integer" if c in exact else "real",
                        "blocks": [base64.b64encode(b).decode() for b in bs],
                    }
                    for c, bs in blocks.items()
                },
            }
        )
        return self._client._call("POST", "/v1/sealed/datasets", SealedDatasetOut, json_body=dumps(body))

    def aggregate(
        self,
        *,
        purpose: str,
        dataset_id: str,
        column: str,
        epsilon: float,
        where: Mapping[str, str] | None = None,
    ) -> SealedAggregateOut:
        """A noisy sum, count and mean of a sealed column over the consented cohort matching ``where`` (for an
        integer column the enclave's sum is exact before the noise: ``exact``)."""
        body = SealedAggregateIn(
            purpose=purpose, dataset_id=dataset_id, column=column, epsilon=epsilon, where=dict(where or {})
        )
        return self._client._call("POST", "/v1/sealed/aggregates", SealedAggregateOut, json_body=dumps(body))

    def score(
        self,
        *,
        vendor_key: Ed25519PublicKey,
        purpose: str,
        dataset_id: str,
        subjects: Sequence[str],
        weights: Mapping[str, float],
        measurements: Iterable[bytes] | None = None,
    ) -> SealedScores:
        """Score ``subjects`` with ``weights`` (column -> weight) over a sealed dataset. Verifies a fresh context
        quote (pinned ``vendor_key``, trusted ``measurements``), encrypts the weights under that context (nobody
        outside the enclave can read them, this bank included) and provisions to that quote its score request:
        a recipient key and a result key made here, bound to the context, the dataset and ``subjects``. The
        enclave releases scores only to that key; the release is checked (it came from the enclave, for this
        query) and decrypted here."""
        trusted = trusted_measurements(measurements)
        context = self.context(vendor_key=vendor_key, measurements=trusted)
        encrypted = encrypt_sealed_weights(context.public_context, dict(weights))
        key = X25519PrivateKey.generate()
        output = provision.OutputPolicy(
            (sealed.SCORES_OUTPUT,),
            os.urandom(32),
            key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        )
        asked = list(subjects)
        with verification(AttestationError):
            request = sealed.encrypt_score_request(
                context.quote,
                quote.standard_policy(measurements=trusted, nonce=context.report_nonce),
                vendor_key=vendor_key,
                output=output,
                context_id=context.context_id,
                dataset_id=dataset_id,
                subjects=asked,
            )
        quote_hash = quote.Quote.parse(context.quote).quote_hash
        body = SealedScoringIn(
            purpose=purpose,
            dataset_id=dataset_id,
            subjects=asked,
            weights={k: base64.b64encode(v).decode() for k, v in encrypted.items()},
            quote_hash=quote_hash.hex(),
            provision=base64.b64encode(request).decode(),
        )
        got = self._client._call("POST", "/v1/sealed/scoring", SealedScoringOut, json_body=dumps(body))
        with verification(ReleaseVerificationError):
            scores = sealed.open_scores(
                base64.b64decode(got.release),
                key,
                result_key=output.result_key,
                quote_hash=quote_hash,
                query_id=got.query_id,
                dataset_id=dataset_id,
                subjects=asked,
            )
        if list(scores) != list(got.subjects):
            raise ReleaseVerificationError(
                "the service's list of scored subjects is not the enclave's", reason="subjects"
            )
        return SealedScores(got.query_id, scores, dict(got.not_used))

    def rotate(self) -> RotatedOut:
        """Platform admin: rotate the enclave's HE key (datasets under the old one then need re-upload)."""
        return self._client._call(
            "POST", "/v1/sealed/rotate", RotatedOut, json_body=dumps(RotateIn(confirm=True))
        )
