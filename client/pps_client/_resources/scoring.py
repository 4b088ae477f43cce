"""Encrypted scoring: the bank's private model, encrypted under its own CKKS key, scored over consented data."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pps_client._client import dumps
from pps_client._exceptions import InvalidResponse, ReleaseVerificationError
from pps_client._resources._base import Resource
from pps_client._types import ProgressCallback, ScoringResult
from pps_wire import frames
from pps_wire.errors import InvalidInput
from pps_wire.schemas import (
    ALL_CONSENTED,
    FeatureOut,
    GradedScoringIn,
    JobPublic,
    ModelApprovalIn,
    ScoreResultHeader,
    ScoringIn,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from protocols.he_scoring import BankScoringKey, EncryptedModelMessage

Preprocess = Mapping[str, Mapping[str, Any]]
"""feature -> ``{"center", "scale", "clip": [low, high]}``: ``(clip(x) - center) / scale`` before scoring."""


APPROVAL_RELEASE = ("approval", "encrypted_model", "sealed_model")


class Scoring(Resource):
    def features(self) -> list[FeatureOut]:
        """The platform features a model may read: names, kinds, units, resolution, the fields they read."""
        return self._client._call_list("GET", "/v1/features", FeatureOut)

    def submit(
        self,
        key: BankScoringKey,
        model: EncryptedModelMessage,
        *,
        purpose: str,
        subjects: Iterable[str] | None = None,
        preprocess: Preprocess | None = None,
    ) -> JobPublic:
        """Queue a scoring job. ``key`` is the bank's :class:`protocols.he_scoring.BankScoringKey` — only its
        public context is sent —, ``model`` the encrypted model from ``key.encrypt_model`` /
        ``key.encrypt_scorecard``; ``subjects`` None scores every subject that consented to this bank."""
        body = ScoringIn.model_validate(
            {
                "purpose": purpose,
                "subjects": ALL_CONSENTED if subjects is None else list(subjects),
                "context": base64.b64encode(key.public_context_bytes()).decode(),
                "model": base64.b64encode(model.to_bytes()).decode(),
                "preprocess": {k: dict(v) for k, v in (preprocess or {}).items()},
            }
        )
        return self._client._call("POST", "/v1/scoring", JobPublic, json_body=dumps(body))

    def result(
        self, job_id: str, key: BankScoringKey, model: EncryptedModelMessage | None = None
    ) -> ScoringResult:
        """A finished scoring job's result, decrypted here with the bank's key (refused if it was made under
        another key, or — with ``model`` — for another model)."""
        try:
            raw_header, result = frames.unpack_score_result(self._client.jobs.result(job_id))
            header = ScoreResultHeader.model_validate(raw_header)
        except (InvalidInput, ValueError) as exc:
            raise InvalidResponse(f"the scoring job's result is not a scoring result: {exc}") from None
        subjects = list(header.subjects)
        raw: Any = None
        probabilities: Any = None
        if result:
            from protocols.errors import ProtocolError

            try:
                scores = key.decrypt_scores(result, model=model)
            except (InvalidInput, ProtocolError) as exc:
                raise ReleaseVerificationError(exc.message, reason="decrypt") from None
            if len(scores.raw) != len(subjects):
                raise ReleaseVerificationError(
                    "the result holds another number of scores than subjects", reason="shape"
                )
            raw, probabilities = scores.raw, scores.probabilities
        return ScoringResult(job_id, subjects, raw, probabilities, list(header.not_scored), header)

    def score(
        self,
        key: BankScoringKey,
        model: EncryptedModelMessage,
        *,
        purpose: str,
        subjects: Iterable[str] | None = None,
        preprocess: Preprocess | None = None,
        timeout: float = 600.0,
        on_progress: ProgressCallback | None = None,
    ) -> ScoringResult:
        """Score ``subjects`` with an encrypted model and decrypt the answer here: submit, wait, fetch, decrypt."""
        job = self.submit(key, model, purpose=purpose, subjects=subjects, preprocess=preprocess)
        self._client.jobs.wait(job.id, timeout=timeout, on_progress=on_progress)
        return self.result(job.id, key, model)

    # --- model approval and graded scoring ----------------------------------------------------------------

    def model_policy(self) -> dict[str, Any]:
        """The model policy the operator published (its fields, digest, and the features' resolutions)."""
        out: dict[str, Any] = self._client._json("GET", "/v1/scoring/model-policy")
        return out

    def approve(
        self,
        key: BankScoringKey | None,
        model: Mapping[str, Any],
        *,
        vendor_key: Ed25519PublicKey,
        measurements: Iterable[bytes] | None = None,
        timeout: float = 300.0,
    ) -> tuple[dict[str, Any], EncryptedModelMessage | None]:
        """Have ``model`` (plaintext: ``{"kind": "logistic", "weights", "bias", "preprocess", "release"}``)
        checked in the enclave against the published model policy: verify a fresh quote, encrypt the model to
        that enclave, submit. Returns the signed approval and, with ``key``, the model the *enclave* encrypted
        under ``key``'s public context — the only encrypted model scoring will run for this bank. A refused
        model raises :class:`pps_client.Refused` (code ``model_refused``) naming every rule it breaks."""
        import json

        from pps_wire import provision
        from pps_wire.quote import Quote

        body = {"model": dict(model)}
        if key is not None:
            body["context"] = base64.b64encode(key.public_context_bytes()).decode()  # type: ignore[assignment]
        output = provision.OutputPolicy(tuple(sorted(APPROVAL_RELEASE)), os.urandom(32), None)
        raw_quote, sealed = self._client.enclave.provision(
            job="model_approval",
            slot="bank",
            body=json.dumps(body).encode(),
            output=output,
            vendor_key=vendor_key,
            measurements=measurements,
        )
        req = ModelApprovalIn.model_validate(
            {
                "quote_hash": Quote.parse(raw_quote).quote_hash.hex(),
                "model": {
                    "enc": base64.b64encode(sealed[: provision.ENC_BYTES]).decode(),
                    "ciphertext": base64.b64encode(sealed[provision.ENC_BYTES :]).decode(),
                },
            }
        )
        # the check runs in the enclave while the request waits (the first one also loads TenSEAL there)
        got: dict[str, Any] = self._client._json(
            "POST", "/v1/scoring/approvals", json_body=dumps(req), timeout=timeout
        )
        encrypted = None
        if got.get("encrypted_model"):
            from protocols.he_scoring import decode_model

            encrypted = decode_model(base64.b64decode(got["encrypted_model"]))
        return got["approval"], encrypted

    def graded(
        self,
        approval_id: str,
        model_digest: str,
        *,
        purpose: str,
        vendor_key: Ed25519PublicKey,
        subjects: Iterable[str] | None = None,
        measurements: Iterable[bytes] | None = None,
        timeout: float = 600.0,
    ) -> dict[str, dict[str, Any]]:
        """Score subjects with an approved model inside the enclave; per subject what its consent allows:
        ``{"decision": ...}``, ``{"grade": n, "band": [low, high]}`` or ``{"pd": p}`` (decrypted here)."""
        import json
        import os

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        from pps_client._exceptions import verification
        from pps_wire import provision
        from pps_wire.quote import Quote

        recipient = X25519PrivateKey.generate()
        raw_key = recipient.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        output = provision.OutputPolicy(("scores", "summary"), os.urandom(32), raw_key)
        raw_quote, sealed = self._client.enclave.provision(
            job="graded_score",
            slot="bank",
            body=json.dumps({"model_digest": model_digest}).encode(),
            output=output,
            vendor_key=vendor_key,
            measurements=measurements,
        )
        req = GradedScoringIn.model_validate(
            {
                "approval_id": approval_id,
                "purpose": purpose,
                "subjects": ALL_CONSENTED if subjects is None else list(subjects),
                "quote_hash": Quote.parse(raw_quote).quote_hash.hex(),
                "request": {
                    "enc": base64.b64encode(sealed[: provision.ENC_BYTES]).decode(),
                    "ciphertext": base64.b64encode(sealed[provision.ENC_BYTES :]).decode(),
                },
                "recipient_key": raw_key.hex(),
            }
        )
        job = self._client._call("POST", "/v1/scoring/graded", JobPublic, json_body=dumps(req))
        self._client.jobs.wait(job.id, timeout=timeout)
        with verification(ReleaseVerificationError):
            opened = provision.open_release(
                self._client.jobs.result(job.id), result_key=output.result_key, recipient=recipient
            )
        return dict(opened["outputs"].get("scores", {}))

    def disclosures(self) -> dict[str, Any]:
        """(An enterprise's token) which banks received results of which models about you."""
        out: dict[str, Any] = self._client._json("GET", "/v1/me/disclosures")
        return out
