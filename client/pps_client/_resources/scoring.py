"""Encrypted scoring: the bank's private model, encrypted under its own CKKS key, scored over consented data."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pps_client._client import dumps
from pps_client._exceptions import InvalidResponse, ReleaseVerificationError
from pps_client._resources._base import Resource
from pps_client._types import ProgressCallback, ScoringResult
from pps_wire import frames
from pps_wire.errors import InvalidInput
from pps_wire.schemas import ALL_CONSENTED, FeatureOut, JobPublic, ScoreResultHeader, ScoringIn

if TYPE_CHECKING:
    from protocols.he_scoring import BankScoringKey, EncryptedModelMessage

Preprocess = Mapping[str, Mapping[str, Any]]
"""feature -> ``{"center", "scale", "clip": [low, high]}``: ``(clip(x) - center) / scale`` before scoring."""


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
