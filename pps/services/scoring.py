"""Encrypted scoring as a service: a bank's secret model over the platform features of consented subjects.

The bank sends (``POST /v1/scoring``) its *public* CKKS context, its encrypted model (logistic regression or
scorecard, :mod:`protocols.he_scoring`), a purpose, the subjects (USCCs, or every subject that consented) and
its plaintext preprocessing (per feature: clip bounds, centre, scale — not secret). The safe-room answers in
a job:

1. **At the door** (:meth:`ScoringService.submit`): the context is checked (public only, >= 128-bit security,
   sizes) and the model loaded, both first in the isolated checker; every feature the model names must be in
   the catalogue and available; the preprocessing must name only those features; the bank's rate limit must
   allow another job. Anything wrong is a 4xx and nothing is stored.
2. **Admission** (job start): the policy engine decides, per subject, for operation ``score``, the purpose, and
   *exactly the dataset fields the model's features read* (:meth:`pps.data.features.FeatureStore.fields_for`);
   the decision is written to the ledger. Subjects that are allowed but have no registry record are not
   scored (``no_data``).
3. **Evaluation**: the features of the admitted subjects (at their catalogue resolution, then the bank's
   preprocessing) are encoded once per (dataset versions, subjects, design, preprocessing) and cached, and the
   encrypted model is evaluated over them, with calibrated noise and re-randomisation
   (:func:`protocols.he_scoring.score`), in chunks that report progress, on the executor chosen by the
   settings (:mod:`pps.infra.executor`: in this process, a local process pool, or Ray). Out-of-process workers get
   the public context and encrypted model once each (and check them again), then feature rows per chunk; the
   in-process executor scores the cached encoded columns. Workers only compute: the release below is the
   coordinating process's.
4. **Release** (in the transaction that stores the result): the policy engine decides again and spends one use
   of each consent relied on. A subject denied now — revoked, expired, or its last use taken by another job —
   is taken out and the remaining subjects are scored afresh, so its score is never released.

The result (:data:`pps_wire.frames.SCORE_RESULT_MEDIA_TYPE`) is ``"PPSS" | header_len u32 | header | RESULT`` where ``header`` is canonical
JSON: the subjects in slot order, the subjects not scored with the reason, the features, their resolutions,
the preprocessing applied and the model digest; ``RESULT`` is the :mod:`protocols.he_scoring` RESULT frame.
Only the bank's secret key opens it. ``docs/protocols.md`` gives the format byte by byte.

Who learns what is stated in :mod:`protocols.he_scoring`; the controls against a bank crafting a model to read
features back (feature resolution, consent use counts, rate limits, noise, the model digest in the ledger) are
in ``docs/security.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.features import FEATURE_RESOLUTION
from models.households import HOUSEHOLD_FEATURE_RESOLUTION
from pps.data.features import FeatureStore, FeatureTable, admit_on_features
from pps.errors import InvalidInput, RateLimited
from pps.governance.consent import check_purpose
from pps.governance.disclosure import DisclosureAccounting, granularity_of
from pps.governance.objections import open_disputes
from pps.governance.policy import PolicyEngine, Request
from pps.governance.release import Gate
from pps.governance.statements import statements_for
from pps.identity.uscc import validate_uscc
from pps.infra.executor import Executor, LocalExecutor, Shared
from pps.infra.jobs import JobContext, JobOutcome, JobService
from pps.infra.storage.db import Database
from pps.infra.storage.tables import Job, ObjectionState, RepairNotice, utcnow
from pps.ledger.entry import Actor, ObjectRef
from pps.services.approval import ModelApprovalService
from pps_wire.frames import SCORE_RESULT_MEDIA_TYPE, canonical_json, pack_score_result
from protocols.he_scoring import (
    DEFAULT_LIMITS,
    DEFAULT_SCORE_NOISE_STD,
    EncodedColumns,
    EncryptedModelMessage,
    LoadedModel,
    PublicScoringContext,
    ScoreResultMessage,
    ScoringLimits,
    SlotLayout,
    check_public_context,
    encode_features,
    load_model,
    score,
)

KIND = "score"
INPUT_MEDIA_TYPE = "application/vnd.pps.score-request"
INPUT_MAGIC = b"PPSQ"
_HEAD = struct.Struct("!4sI")
_U32 = struct.Struct("!I")
ALL_CONSENTED = "all_consented"
MAX_PREPROCESS_ABS = 1e12
MAX_PREPARED = 32
"""Checked contexts and models kept in memory between submission and the job's start (else re-checked)."""
BLOCKS_PER_CHUNK = 8
MAX_APPROVED_NOISE_STD = 1.0
"""Cap (log-odds) on the noise an approved model's logits get from its release error."""
"""Result ciphertexts per executor chunk: progress is reported (and cancellation checked) per chunk."""


_canonical = canonical_json


# --- messages ------------------------------------------------------------------------------------------------


def _pack_input(
    context: bytes, model: bytes, subjects: Sequence[str] | None, preprocess: Mapping[str, Preprocess]
) -> bytes:
    listing = _canonical(
        {
            "subjects": list(subjects) if subjects is not None else None,
            "preprocess": {k: v.as_dict() for k, v in preprocess.items()},
        }
    )
    return b"".join([INPUT_MAGIC, _U32.pack(len(listing)), listing, _U32.pack(len(context)), context, model])


def _unpack_input(data: bytes) -> tuple[bytes, bytes, list[str] | None, dict[str, Any]]:
    if data[:4] != INPUT_MAGIC:
        raise InvalidInput("the stored scoring request is damaged")
    pos = 4
    (n,) = _U32.unpack_from(data, pos)
    head = json.loads(data[pos + 4 : pos + 4 + n])
    pos += 4 + n
    (n,) = _U32.unpack_from(data, pos)
    context = data[pos + 4 : pos + 4 + n]
    return context, data[pos + 4 + n :], head["subjects"], head["preprocess"]


# --- preprocessing --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """The bank's plaintext preprocessing of one feature: ``(clip(x, low, high) - center) / scale``."""

    center: float = 0.0
    scale: float = 1.0
    clip: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"center": self.center, "scale": self.scale}
        if self.clip is not None:
            out["clip"] = list(self.clip)
        return out

    def as_text(self) -> str:
        """For the ledger (which holds no floats): ``"(clip(x, lo, hi) - c) / s"`` with exact reprs."""
        x = f"clip(x, {self.clip[0]!r}, {self.clip[1]!r})" if self.clip is not None else "x"
        return f"({x} - {self.center!r}) / {self.scale!r}"


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{what} must be a number")
    x = float(value)
    if not math.isfinite(x) or abs(x) > MAX_PREPROCESS_ABS:
        raise InvalidInput(f"{what} must be finite and at most {MAX_PREPROCESS_ABS:g} in magnitude")
    return x


def parse_preprocess(spec: object, features: Sequence[str]) -> dict[str, Preprocess]:
    """Check the bank's preprocessing against the model's features; identity for features not named."""
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise InvalidInput("preprocess must be an object: feature name -> {center, scale, clip}")
    unknown = sorted(set(spec) - set(features))
    if unknown:
        raise InvalidInput(f"preprocess names feature(s) the model does not read: {', '.join(unknown)}")
    out = {}
    for name in features:
        item = spec.get(name)
        if item is None:
            out[name] = Preprocess()
            continue
        if not isinstance(item, Mapping) or set(item) - {"center", "scale", "clip"}:
            raise InvalidInput(f"preprocess[{name!r}] may hold only center, scale and clip")
        center = _number(item.get("center", 0.0), f"preprocess[{name!r}].center")
        scale = _number(item.get("scale", 1.0), f"preprocess[{name!r}].scale")
        if scale <= 0:
            raise InvalidInput(f"preprocess[{name!r}].scale must be positive")
        clip = item.get("clip")
        bounds = None
        if clip is not None:
            if not isinstance(clip, list | tuple) or len(clip) != 2:
                raise InvalidInput(f"preprocess[{name!r}].clip must be [low, high]")
            low, high = (_number(v, f"preprocess[{name!r}].clip") for v in clip)
            if not low <= high:
                raise InvalidInput(f"preprocess[{name!r}].clip must have low <= high")
            bounds = (low, high)
        out[name] = Preprocess(center, scale, bounds)
    return out


def apply_preprocess(x: np.ndarray[Any, Any], names: Sequence[str], spec: Mapping[str, Preprocess]) -> Any:
    out = np.array(x, dtype=np.float64, copy=True)
    for j, name in enumerate(names):
        p = spec[name]
        if p.clip is not None:
            out[:, j] = np.clip(out[:, j], *p.clip)
        out[:, j] = (out[:, j] - p.center) / p.scale
    return out


# --- evaluation in chunks, on an executor -------------------------------------------------------------------


@dataclass(frozen=True)
class _ScoringPayload:
    """What each out-of-process worker receives once per job: public context, encrypted model, settings."""

    context: bytes
    model: EncryptedModelMessage
    noise_std: float
    limits: ScoringLimits


@dataclass(frozen=True)
class _ScoringState:
    context: PublicScoringContext
    model: LoadedModel
    noise_std: float
    limits: ScoringLimits


def _build_scoring_state(payload: _ScoringPayload) -> _ScoringState:
    """In a worker, once per job: check the context and load the model again (defence in depth)."""
    ctx = check_public_context(payload.context, payload.limits)
    return _ScoringState(
        ctx, load_model(ctx, payload.model, payload.limits), payload.noise_std, payload.limits
    )


def score_chunk(state: _ScoringState, chunk: EncodedColumns | np.ndarray[Any, Any]) -> ScoreResultMessage:
    """One chunk: encoded columns (in-process) or preprocessed feature rows (a worker encodes them)."""
    return score(state.context, state.model, chunk, noise_std=state.noise_std, limits=state.limits)


def _chunks(inputs: EncodedColumns | np.ndarray[Any, Any], per_ciphertext: int) -> Iterator[Any]:
    if isinstance(inputs, EncodedColumns):
        blocks = inputs.blocks
        for start in range(0, len(blocks), BLOCKS_PER_CHUNK):
            chunk = blocks[start : start + BLOCKS_PER_CHUNK]
            yield EncodedColumns(
                design_id=inputs.design_id,
                parms_id=inputs.parms_id,
                scale=inputs.scale,
                slots=inputs.slots,
                packing=inputs.packing,
                n_subjects=min(len(chunk) * per_ciphertext, inputs.n_subjects - start * per_ciphertext),
                blocks=chunk,
            )
    else:
        rows = BLOCKS_PER_CHUNK * per_ciphertext
        for start in range(0, inputs.shape[0], rows):
            yield inputs[start : start + rows]


def evaluate_in_chunks(
    executor: Executor,
    context: PublicScoringContext,
    model: LoadedModel,
    inputs: EncodedColumns | np.ndarray[Any, Any],
    *,
    noise_std: float,
    limits: ScoringLimits = DEFAULT_LIMITS,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScoreResultMessage:
    """Evaluate ``model`` over ``inputs`` (encoded columns, or the preprocessed feature matrix for executors
    out of this process) in chunks of :data:`BLOCKS_PER_CHUNK` result ciphertexts on ``executor``."""
    n = inputs.n_subjects if isinstance(inputs, EncodedColumns) else int(inputs.shape[0])
    per = SlotLayout(n, context.slots, model.packing).per_ciphertext
    total = -(-n // (BLOCKS_PER_CHUNK * per))
    key = hashlib.sha256(
        _canonical([context.context_id, model.digest, repr(noise_std), repr(limits)])
    ).hexdigest()
    shared = Shared(
        key,
        _ScoringPayload(context.context_bytes, model.message, noise_std, limits),
        _build_scoring_state,
        local=_ScoringState(context, model, noise_std, limits),
    )
    parts = list(
        executor.map_chunks(
            score_chunk, _chunks(inputs, per), shared=shared, total=total, on_progress=on_progress
        )
    )
    first = parts[0]
    return ScoreResultMessage(
        kind=first.kind,
        context_id=first.context_id,
        model_digest=first.model_digest,
        n_subjects=n,
        slots=first.slots,
        packing=first.packing,
        noise_std=first.noise_std,
        ciphertexts=tuple(c for p in parts for c in p.ciphertexts),
    )


# --- the service ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    context: PublicScoringContext
    model: LoadedModel


@dataclass(frozen=True)
class CheckedRequest:
    """A scoring request that passed every check at the door (see :meth:`ScoringService.check`)."""

    purpose: str
    subjects: tuple[str, ...] | None
    context: bytes
    model: bytes
    prepared: _Prepared
    fields: dict[str, tuple[str, ...]]
    preprocess: dict[str, Preprocess]


@dataclass
class ScoringService:
    db: Database
    policy: PolicyEngine
    jobs: JobService
    features: FeatureStore
    limits: ScoringLimits = DEFAULT_LIMITS
    max_subjects: int = 1_000_000
    jobs_per_hour: int = 60
    noise_std: float = DEFAULT_SCORE_NOISE_STD
    encoded_cache_size: int = 4
    executor: Executor = field(default_factory=LocalExecutor)
    approvals: ModelApprovalService | None = None
    """Run only models the enclave approved (:mod:`pps.services.approval`); ``None`` only with the setting
    ``unsafe_unapproved_models``."""
    disclosures: DisclosureAccounting = field(default_factory=DisclosureAccounting)

    def __post_init__(self) -> None:
        self.jobs.register(KIND, self._run)
        self._prepared: dict[str, _Prepared] = {}
        self._encoded: OrderedDict[tuple[Any, ...], EncodedColumns] = OrderedDict()
        self._lock = threading.Lock()

    # --- the door ----------------------------------------------------------------------------------------

    def check(
        self,
        *,
        purpose: str,
        subjects: Sequence[str] | None,
        context: bytes,
        model: bytes,
        preprocess: object = None,
    ) -> CheckedRequest:
        """Check everything that can be checked before any data is touched (no write transaction held:
        loading the context and model in the isolated checker takes a moment)."""
        check_purpose(purpose)
        if subjects is not None:
            if not subjects:
                raise InvalidInput(f"name at least one subject, or ask for {ALL_CONSENTED!r}")
            if len(subjects) > self.max_subjects:
                raise InvalidInput(f"a scoring job may name at most {self.max_subjects:,} subjects")
            for s in subjects:
                validate_uscc(s)
            if len(set(subjects)) != len(subjects):
                raise InvalidInput("a scoring job names each subject once")
        ctx = check_public_context(context, self.limits)
        loaded = load_model(ctx, model, self.limits)
        names = loaded.required_features
        with self.db.transaction(write=False) as session:
            fields = self.features.fields_for(session, names)
        spec = parse_preprocess(preprocess, names)
        return CheckedRequest(
            purpose,
            tuple(subjects) if subjects is not None else None,
            context,
            model,
            _Prepared(ctx, loaded),
            fields,
            spec,
        )

    def submit(
        self, session: Session, checked: CheckedRequest, *, actor: Actor, request_id: str | None = None
    ) -> Job:
        """Queue a checked request (enqueue the job after the commit); refused if over the rate limit."""
        if actor.org_id is None:
            raise InvalidInput("a scoring job belongs to a bank")
        self._check_rate(session, actor.org_id)
        ctx, loaded = checked.prepared.context, checked.prepared.model
        approval: dict[str, Any] = {}
        if self.approvals is not None:
            row = self.approvals.require(
                session,
                bank=actor.org_id,
                encrypted_model_sha256=hashlib.sha256(checked.model).hexdigest(),
                context_id=ctx.context_id,
            )
            if any(p != Preprocess() for p in checked.preprocess.values()):
                raise InvalidInput(
                    "an approved model carries its own preprocessing (the enclave folded it into the weights it "
                    "encrypted): send none"
                )
            clip = json.loads(row.approval_json).get("clip", {})
            checked = replace(
                checked,
                preprocess={
                    n: Preprocess(clip=(float(clip[n][0]), float(clip[n][1]))) if n in clip else Preprocess()
                    for n in loaded.required_features
                },
            )
            # an approved model's logits carry noise at its release error (the PD it may release, rounded to
            # its score resolution, in log-odds): encrypted logits say no more than the rounded PD would, which
            # is what the k-models rule assumes (enclave_sim.model_check.release_error)
            release_error = float(json.loads(row.approval_json).get("release_error", 0.0))
            approval = {
                "approval_id": row.id,
                "approved_model_digest": row.model_digest,
                "noise_std": repr(max(self.noise_std, min(release_error, MAX_APPROVED_NOISE_STD))),
            }
        job = self.jobs.submit(
            session,
            kind=KIND,
            actor=actor,
            purpose=checked.purpose,
            params={
                "model_kind": loaded.kind.value,
                "model_digest": loaded.digest,
                "context_id": ctx.context_id,
                "packing": loaded.packing.value,
                "features": list(loaded.required_features),
                "fields": {k: list(v) for k, v in checked.fields.items()},
                "preprocess": {k: v.as_text() for k, v in checked.preprocess.items() if v != Preprocess()},
                "subjects": ALL_CONSENTED if checked.subjects is None else len(checked.subjects),
                "poly_modulus_degree": ctx.poly_modulus_degree,
                **approval,
            },
            input_blob=_pack_input(checked.context, checked.model, checked.subjects, checked.preprocess),
            input_media_type=INPUT_MEDIA_TYPE,
            request_id=request_id,
        )
        with self._lock:
            self._prepared[job.id] = checked.prepared
            while len(self._prepared) > MAX_PREPARED:  # jobs cancelled while queued never pick theirs up
                self._prepared.pop(next(iter(self._prepared)))
        return job

    def check_rate(self, bank: str) -> None:
        """Refuse at once a bank over its rate limit, before its body is checked (:meth:`submit` re-checks)."""
        with self.db.transaction(write=False) as session:
            self._check_rate(session, bank)

    def _check_rate(self, session: Session, bank: str) -> None:
        since = utcnow() - timedelta(hours=1)
        recent = session.execute(
            select(func.count(), func.min(Job.created_at)).where(
                Job.owner_org_id == bank, Job.kind == KIND, Job.created_at > since
            )
        ).one()
        if recent[0] >= self.jobs_per_hour:
            oldest = recent[1]
            retry = max(1.0, (oldest + timedelta(hours=1) - utcnow()).total_seconds()) if oldest else 60.0
            raise RateLimited(
                f"at most {self.jobs_per_hour} scoring jobs per hour per bank; "
                f"try again in {math.ceil(retry)} s or score more subjects per job",
                details={"retry_after_s": retry, "limit_per_hour": self.jobs_per_hour},
            )

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._prepared.pop(job_id, None)

    # --- the job -----------------------------------------------------------------------------------------

    def _prepare(self, job_id: str, context: bytes, model: bytes) -> _Prepared:
        with self._lock:
            ready = self._prepared.pop(job_id, None)
        if ready is not None:
            return ready
        ctx = check_public_context(context, self.limits)  # after a restart: check the stored bytes again
        return _Prepared(ctx, load_model(ctx, model, self.limits))

    def _encode(
        self,
        prepared: _Prepared,
        table: FeatureTable,
        subjects: Sequence[str],
        rows: Sequence[int],
        spec: Mapping[str, Preprocess],
    ) -> EncodedColumns | np.ndarray[Any, Any]:
        model = prepared.model
        names = model.required_features
        if not self.executor.in_process:  # workers encode their own chunks
            return apply_preprocess(table.matrix(names, rows), names, spec)  # type: ignore[no-any-return]
        digest = hashlib.sha256("\n".join(subjects).encode()).hexdigest()
        key = (
            table.key,
            digest,
            model.design.design_id,
            _canonical({k: spec[k].as_dict() for k in names}),
            model.level.parms_id,
            model.scale,
            model.packing.value,
            prepared.context.poly_modulus_degree,
        )
        with self._lock:
            hit = self._encoded.get(key)
            if hit is not None:
                self._encoded.move_to_end(key)
                return hit
        x = apply_preprocess(table.matrix(names, rows), names, spec)
        with prepared.context.lock:
            encoded = encode_features(prepared.context, model, x, self.limits)
        with self._lock:
            self._encoded[key] = encoded
            while len(self._encoded) > self.encoded_cache_size:
                self._encoded.popitem(last=False)
        return encoded

    def _evaluate(
        self,
        prepared: _Prepared,
        encoded: EncodedColumns | np.ndarray[Any, Any],
        ctx: JobContext | None,
        noise_std: float | None = None,
    ) -> ScoreResultMessage:
        return evaluate_in_chunks(
            self.executor,
            prepared.context,
            prepared.model,
            encoded,
            noise_std=self.noise_std if noise_std is None else noise_std,
            limits=self.limits,
            on_progress=ctx.progress if ctx is not None else None,
        )

    def _run(self, ctx: JobContext) -> JobOutcome:
        if ctx.purpose is None or ctx.input is None:
            raise InvalidInput("a scoring job needs a purpose and a request")
        bank, purpose, params = ctx.owner_org_id, ctx.purpose, ctx.params
        context_bytes, model_bytes, listed, preprocess = _unpack_input(ctx.input)
        prepared = self._prepare(ctx.job_id, context_bytes, model_bytes)
        names = prepared.model.required_features
        spec = parse_preprocess(preprocess, names)
        job_ref = ObjectRef("job", ctx.job_id)
        service = Actor(None, "service", "job")
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = round(timings.get(stage, 0.0) + now - clock, 4)
            clock = now

        admission = admit_on_features(
            self.db,
            self.features,
            self.policy,
            bank=bank,
            purpose=purpose,
            operation="score",
            names=names,
            submitted_fields=params["fields"],
            subjects=listed,
            job=job_ref,
            actor=service,
            after_table=lambda: lap("features_s"),
        )
        lap("admission_s")
        table, fields, decisions = admission.table, admission.fields, admission.decisions
        allowed = [d.subject for d in decisions if d.allowed]
        by_subject = {d.subject: d for d in decisions if d.allowed}
        found, rows, no_data = table.rows(allowed)
        not_scored = {
            d.subject: {"reason": d.reason.value if d.reason else "denied", "detail": d.detail}
            for d in decisions
            if not d.allowed
        }
        for s_ in no_data:
            not_scored[s_] = {"reason": "no_data", "detail": "no registry record for this enterprise"}
        with self.db.transaction(write=False) as session:
            levels = granularity_of(session, {s_: by_subject[s_].consent_id for s_ in found})
        coarse = {s_ for s_ in found if levels[s_] != "score"}
        if coarse:  # an encrypted score is a score: only subjects who allowed scores get one
            for s_ in coarse:
                not_scored[s_] = {
                    "reason": "granularity",
                    "detail": f"the subject's consent allows only a {levels[s_]}: score it inside the enclave, "
                    "which releases that (POST /v1/scoring/graded)",
                }
            kept_rows = [(s_, r) for s_, r in zip(found, rows, strict=True) if s_ not in coarse]
            found, rows = [s_ for s_, _ in kept_rows], [r for _, r in kept_rows]
        disclosed_digest = str(params.get("approved_model_digest") or prepared.model.digest)
        ctx.progress(0, 1)
        encoded = self._encode(prepared, table, found, rows, spec) if found else None
        lap("encode_s")
        noise = float(params["noise_std"]) if "noise_std" in params else None
        result = self._evaluate(prepared, encoded, ctx, noise) if encoded is not None else None
        lap("evaluate_s")
        outcome = JobOutcome(
            result=b"", media_type=SCORE_RESULT_MEDIA_TYPE, finalize=lambda _s: {}, released_what="scores"
        )

        def finalize(session: Session) -> dict[str, Any]:
            lap("waiting_s")
            scored, final = list(found), result
            budget_lost: list[str] = []
            if scored:
                accounted = self.disclosures.spend(
                    session,
                    bank=bank,
                    subjects=scored,
                    model_digest=disclosed_digest,
                    granularity=dict.fromkeys(scored, "score"),
                )
                for s_, why in accounted.refused.items():
                    not_scored[s_] = {"reason": "disclosure_budget", "detail": why}
                budget_lost = list(accounted.refused)
                scored = accounted.kept
            if scored:
                released = Gate(
                    self.policy,
                    Request(bank, tuple(scored), fields, "score", purpose),
                    job=job_ref,
                    actor=service,
                    records=admission.records,
                ).release_some(
                    session,
                    what=f"score:{prepared.model.kind.value}",
                    admitted=[by_subject[s_] for s_ in scored],
                )
                if released.lost or budget_lost:
                    for d in released.lost:
                        not_scored[d.subject] = {
                            "reason": d.reason.value if d.reason else "denied",
                            "detail": f"at release: {d.detail}",
                        }
                    keep = set(released.kept)
                    kept = [(s_, r) for s_, r in zip(found, rows, strict=True) if s_ in keep]
                    scored = [s_ for s_, _ in kept]
                    final = (
                        self._evaluate(
                            prepared,
                            self._encode(prepared, table, scored, [r for _, r in kept], spec),
                            None,
                            noise,
                        )
                        if kept
                        else None
                    )
            elif budget_lost:
                final = None  # every subject was over its disclosure budget: nothing leaves
            # open objections on inputs the model reads (pps.governance.objections): who, where, which — no values
            disputed = [
                {"subject": s_, "dataset": d, "fields": f}
                for s_, by in open_disputes(session, scored, fields).items()
                for d, f in by.items()
            ]
            header = {
                "subjects": scored,
                "not_scored": [{"subject": k, **v} for k, v in sorted(not_scored.items())],
                "features": list(names),
                "resolution": {
                    n: FEATURE_RESOLUTION.get(n, HOUSEHOLD_FEATURE_RESOLUTION.get(n)) for n in names
                },
                "preprocess": {k: v.as_dict() for k, v in spec.items()},
                "model_digest": prepared.model.digest,
                "approved_model_digest": params.get("approved_model_digest"),
                "context_id": prepared.context.context_id,
                "feature_window": {"first_month": table.window[0], "months": table.window[1]},
                "disputed": disputed,
                # objections that could not be verified: the record is kept, and its annotation travels here
                "annotated": [
                    {"subject": s_, "dataset": d, "fields": f, "annotation": "unverifiable"}
                    for s_, by in open_disputes(
                        session, scored, fields, state=ObjectionState.unverifiable
                    ).items()
                    for d, f in by.items()
                ],
                # the subjects' own statements on negative records read (征信业管理条例 Art. 16)
                "statements": statements_for(session, scored, fields),
                # records repaired since this bank was released a result with them (it got a repair notice):
                # they no longer count in these scores
                "repaired": _repaired(session, bank, scored, fields),
            }
            outcome.result = pack_score_result(header, final.to_bytes() if final is not None else b"")
            lap("release_s")
            reasons: dict[str, int] = {}
            for v in not_scored.values():
                reasons[v["reason"]] = reasons.get(v["reason"], 0) + 1
            return {
                "scored": len(scored),
                "not_scored": len(not_scored),
                "not_scored_by_reason": reasons,
                "model_digest": prepared.model.digest,
                "ciphertexts": len(final.ciphertexts) if final is not None else 0,
                "result_bytes": len(outcome.result),
                "timings": timings,
                "disputed": len({d["subject"] for d in disputed}),
            }

        outcome.finalize = finalize
        return outcome


def _repaired(
    session: Session, bank: str, subjects: Sequence[str], fields: Mapping[str, Sequence[str]]
) -> list[dict[str, str]]:
    if not subjects or not fields:
        return []
    wanted = set(subjects)
    rows = session.execute(
        select(RepairNotice.subject_uscc, RepairNotice.record_id, RepairNotice.dataset_id)
        .where(RepairNotice.bank_org_id == bank, RepairNotice.dataset_id.in_(sorted(fields)))
        .distinct()
    ).all()
    return sorted(
        ({"subject": u, "record": r, "dataset": d} for u, r, d in rows if u in wanted),
        key=lambda x: (x["subject"], x["record"]),
    )
