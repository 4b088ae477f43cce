"""The model registry: every trained model, who owns it, what it reads, how it was trained, how well it does.

A registered model carries: its owners (banks; only they list it, fetch their parts and use it), its kind
(``vertical_lr``, ``horizontal_lr``, ``horizontal_mlp``, ...), its feature schema, a training description
(counts, rounds, the consent ids the training relied on — never records), a held-out evaluation
(:class:`models.metrics.Evaluation`: AUC, KS, a confusion matrix and the two curves, never labels or scores), and
the ledger entries that trained and registered it. Auditors and platform admins read every model's description.

Parameters are :class:`~pps.infra.storage.tables.ModelArtifact` rows, each sealed at rest (AES-256-GCM under its own data
key, wrapped by the KMS) and held by one party: an owner, who may fetch it, or ``platform`` — a part that never
leaves the safe-room, such as a vertical model's host half, used only inside it (e.g. to release an applicant's
contribution encrypted under the bank's key, :mod:`pps.services.vertical`).

Evaluations are computed where the labels are: a bank evaluates on its own held-out set (for a vertical model it
needs the host half's encrypted contributions for the held-out subjects) and posts the result, which the
registry checks for consistency and marks ``evaluated_by`` that bank. The report (:mod:`models.report`) draws it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.metrics import Evaluation, InvalidMetricInput
from pps.data.datasets import codec
from pps.errors import Conflict, InvalidInput, NotFound
from pps.infra.kms import KeyEncryptionKeys, WrappedKey, new_data_key
from pps.infra.storage.tables import (
    ModelArtifact,
    ModelState,
    Organization,
    RegisteredModel,
    Role,
    new_id,
    utcnow,
)
from pps.infra.text import check_name
from pps.ledger.entry import Actor, EntryDraft, ObjectRef
from pps.ledger.store import Ledger

KINDS = frozenset({"vertical_lr", "horizontal_lr", "horizontal_mlp"})
PLATFORM = "platform"
"""The holder of parts that never leave the safe-room."""
MAX_ARTIFACT_BYTES = 16 << 20


def _dek_aad(model_id: str, holder: str) -> bytes:
    return f"pps/model-dek/v1|{model_id}|{holder}".encode()


def _artifact_aad(model_id: str, holder: str) -> bytes:
    return f"pps/model-artifact/v1|{model_id}|{holder}".encode()


def _bp(x: float) -> int:
    """A metric in basis points (ledger entries hold no floats)."""
    return round(x * 10_000)


@dataclass(frozen=True)
class ModelRecord:
    id: str
    name: str
    kind: str
    created_by: str
    owners: tuple[str, ...]
    purpose: str | None
    features: tuple[str, ...]
    training: dict[str, Any]
    evaluation: Evaluation | None
    evaluated_by: str | None
    ledger: tuple[int, ...]
    holders: tuple[str, ...]
    state: str
    created_at: datetime

    @classmethod
    def of(cls, row: RegisteredModel, holders: Sequence[str]) -> ModelRecord:
        ev = Evaluation.from_dict(json.loads(row.evaluation_json)) if row.evaluation_json else None
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            created_by=row.created_by,
            owners=tuple(json.loads(row.owners_json)),
            purpose=row.purpose,
            features=tuple(json.loads(row.features_json)),
            training=json.loads(row.training_json),
            evaluation=ev,
            evaluated_by=row.evaluated_by,
            ledger=tuple(json.loads(row.ledger_json)),
            holders=tuple(sorted(holders)),
            state=row.state.value,
            created_at=row.created_at,
        )

    def public(self) -> dict[str, Any]:
        """The description anyone allowed to see the model reads (no parameters)."""
        ev = self.evaluation
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "created_by": self.created_by,
            "owners": list(self.owners),
            "purpose": self.purpose,
            "features": list(self.features),
            "training": self.training,
            "metrics": None
            if ev is None
            else {
                "auc": ev.auc,
                "ks": ev.ks,
                "n": ev.n,
                "positives": ev.positives,
                "cutoff": ev.confusion.cutoff,
                "brier": None if ev.calibration is None else ev.calibration.brier,
                "ece": None if ev.calibration is None else ev.calibration.ece,
                "mean_predicted": None if ev.calibration is None else ev.calibration.mean_predicted,
                "observed_rate": None if ev.calibration is None else ev.calibration.observed_rate,
                "bank_alone_auc": None if ev.baseline is None else ev.baseline.auc,
                "bank_alone_ece": None
                if ev.baseline is None or ev.baseline.calibration is None
                else ev.baseline.calibration.ece,
            },
            "evaluated_by": self.evaluated_by,
            "ledger": list(self.ledger),
            "parts": ["platform" if h == PLATFORM else "owner" for h in self.holders],
            "state": self.state,
            "created_at": self.created_at.isoformat(),
        }


@dataclass
class ModelRegistry:
    ledger: Ledger
    kms: KeyEncryptionKeys

    # --- registration ----------------------------------------------------------------------------------

    def register(
        self,
        session: Session,
        *,
        kind: str,
        name: str,
        owners: Sequence[str],
        feature_schema: Sequence[str],
        training: Mapping[str, Any],
        evaluation: Evaluation | None = None,
        artifacts: Mapping[str, Mapping[str, Any]],
        ledger_indices: Sequence[int],
        actor: Actor,
        purpose: str | None = None,
        request_id: str | None = None,
    ) -> ModelRecord:
        """Register a trained model and seal its parts; one ``model.register`` ledger entry."""
        if kind not in KINDS:
            raise InvalidInput(f"kind must be one of {sorted(KINDS)}")
        if not 1 <= len(name.strip()) <= 128:
            raise InvalidInput("a model needs a name of 1 to 128 characters")
        check_name(name.strip(), "the model name")
        owner_list = sorted(set(owners))
        if not owner_list or len(owner_list) != len(owners):
            raise InvalidInput("a model needs at least one owner, each named once")
        banks = session.execute(
            select(Organization.id).where(
                Organization.id.in_(owner_list),
                Organization.role == Role.bank,
                Organization.disabled_at.is_(None),
            )
        ).scalars()
        if sorted(banks) != owner_list:
            raise InvalidInput("every owner of a model must be an active bank")
        features = list(feature_schema)
        if (
            not features
            or len(set(features)) != len(features)
            or not all(isinstance(f, str) for f in features)
        ):
            raise InvalidInput("a model needs a feature schema: distinct feature names")
        if not artifacts or set(artifacts) - {*owner_list, PLATFORM}:
            raise InvalidInput("every part of a model is held by an owner or by the platform")
        try:
            training_json = json.dumps(dict(training), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"the training description must be finite JSON ({exc})") from None
        model_id = new_id("mdl")
        now = utcnow()
        sealed_parts = {h: self._seal(model_id, h, doc) for h, doc in artifacts.items()}
        entry = self.ledger.append(
            session,
            EntryDraft(
                action="model.register",
                actor=actor,
                objects=(ObjectRef("model", model_id),),
                purpose=purpose,
                request_id=request_id,
                detail={
                    "kind": kind,
                    "name": name,
                    "owners": owner_list,
                    "features": len(features),
                    "trained_in": [int(i) for i in ledger_indices],
                    "parts": {h: a.sha256.hex() for h, a in sorted(sealed_parts.items())},
                    **({} if evaluation is None else self._metrics_detail(evaluation)),
                },
            ),
        )
        row = RegisteredModel(
            id=model_id,
            name=name,
            kind=kind,
            created_by=actor.org_id or owner_list[0],
            owners_json=json.dumps(owner_list),
            purpose=purpose,
            features_json=json.dumps(features),
            training_json=training_json,
            evaluation_json=None if evaluation is None else json.dumps(evaluation.to_dict()),
            evaluated_by=None if evaluation is None else actor.org_id,
            ledger_json=json.dumps([*map(int, ledger_indices), entry.index]),
            state=ModelState.active,
            created_at=now,
        )
        session.add(row)
        session.flush()
        for part in sealed_parts.values():
            session.add(part)
        session.flush()
        return ModelRecord.of(row, list(sealed_parts))

    @staticmethod
    def _metrics_detail(ev: Evaluation) -> dict[str, Any]:
        detail: dict[str, Any] = {"auc_bp": _bp(ev.auc), "ks_bp": _bp(ev.ks), "evaluated_rows": ev.n}
        if ev.calibration is not None:
            detail.update(brier_bp=_bp(ev.calibration.brier), ece_bp=_bp(ev.calibration.ece))
        if ev.baseline is not None:
            detail["baseline_auc_bp"] = _bp(ev.baseline.auc)
        return detail

    def _seal(self, model_id: str, holder: str, doc: Mapping[str, Any]) -> ModelArtifact:
        try:
            data = json.dumps(dict(doc), sort_keys=True, allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"model parameters must be finite JSON ({exc})") from None
        if len(data) > MAX_ARTIFACT_BYTES:
            raise InvalidInput(f"a model part may be at most {MAX_ARTIFACT_BYTES >> 20} MiB")
        dek = new_data_key()
        wrapped = self.kms.wrap(dek, _dek_aad(model_id, holder))
        return ModelArtifact(
            model_id=model_id,
            holder=holder,
            kek_version=wrapped.kek_version,
            wrapped_dek=wrapped.blob,
            sealed=codec.seal(dek, _artifact_aad(model_id, holder), data),
            sha256=hashlib.sha256(data).digest(),
        )

    # --- keys -----------------------------------------------------------------------------------------

    def keys_by_kek_version(self, session: Session) -> dict[int, int]:
        rows = session.execute(
            select(ModelArtifact.kek_version, func.count()).group_by(ModelArtifact.kek_version)
        ).all()
        return {int(v): int(n) for v, n in rows}

    def rewrap_all(self, session: Session) -> dict[int, int]:
        """Re-wrap every model part's data key under the current KEK (the parts are not decrypted)."""
        target = self.kms.current_version
        moved: dict[int, int] = {}
        for art in session.execute(
            select(ModelArtifact).where(ModelArtifact.kek_version != target)
        ).scalars():
            aad = _dek_aad(art.model_id, art.holder)
            new = self.kms.wrap(self.kms.unwrap(WrappedKey(art.kek_version, art.wrapped_dek), aad), aad)
            moved[art.kek_version] = moved.get(art.kek_version, 0) + 1
            art.kek_version, art.wrapped_dek = new.kek_version, new.blob
        session.flush()
        return moved

    # --- reading --------------------------------------------------------------------------------------

    def _row(self, session: Session, model_id: str) -> RegisteredModel:
        row = session.get(RegisteredModel, model_id)
        if row is None:
            raise NotFound(f"no model {model_id}")
        return row

    def _holders(self, session: Session, model_id: str) -> list[str]:
        return list(
            session.execute(select(ModelArtifact.holder).where(ModelArtifact.model_id == model_id)).scalars()
        )

    def get(
        self, session: Session, model_id: str, *, org_id: str | None, sees_everything: bool
    ) -> ModelRecord:
        """A model its owners (or an auditor / platform admin) may see; anyone else gets ``NotFound``."""
        row = self._row(session, model_id)
        if not sees_everything and org_id not in json.loads(row.owners_json):
            raise NotFound(f"no model {model_id}")
        return ModelRecord.of(row, self._holders(session, model_id))

    def list_for(
        self, session: Session, org_id: str | None, *, sees_everything: bool = False
    ) -> list[ModelRecord]:
        """The models ``org_id`` owns (every model for auditors and platform admins), newest first."""
        rows = session.execute(select(RegisteredModel).order_by(RegisteredModel.created_at.desc())).scalars()
        out = []
        for row in rows:
            if sees_everything or org_id in json.loads(row.owners_json):
                out.append(ModelRecord.of(row, self._holders(session, row.id)))
        return out

    def part(self, session: Session, model_id: str, holder: str) -> dict[str, Any]:
        """Unseal one part (inside the safe-room; :meth:`fetch` is what an owner calls)."""
        art = session.get(ModelArtifact, (model_id, holder))
        if art is None:
            raise NotFound(f"model {model_id} has no part held by {holder}")
        dek = self.kms.unwrap(WrappedKey(art.kek_version, art.wrapped_dek), _dek_aad(model_id, holder))
        doc: dict[str, Any] = json.loads(codec.open_sealed(dek, _artifact_aad(model_id, holder), art.sealed))
        return doc

    def fetch(
        self, session: Session, model_id: str, *, actor: Actor, request_id: str | None = None
    ) -> dict[str, Any]:
        """An owner's own part of a model; a ``model.fetch`` entry. The platform's part never leaves."""
        record = self.get(session, model_id, org_id=actor.org_id, sees_everything=False)
        assert actor.org_id is not None
        if actor.org_id not in record.holders:
            raise NotFound(
                f"model {model_id} holds no part for you: a vertical model's bank half stays with the bank that "
                "trained it, and its host half never leaves the safe-room"
            )
        doc = self.part(session, model_id, actor.org_id)
        self.ledger.append(
            session,
            EntryDraft(
                action="model.fetch",
                actor=actor,
                objects=(ObjectRef("model", model_id),),
                request_id=request_id,
                detail={"part": "owner"},
            ),
        )
        return doc

    # --- evaluation -----------------------------------------------------------------------------------

    def post_evaluation(
        self, session: Session, model_id: str, evaluation: Any, *, actor: Actor, request_id: str | None = None
    ) -> ModelRecord:
        """An owner posts the held-out evaluation it computed; checked, stored, a ``model.evaluate`` entry."""
        row = self._row(session, model_id)
        if actor.org_id not in json.loads(row.owners_json):
            raise NotFound(f"no model {model_id}")
        if row.evaluated_by is not None and row.evaluated_by != actor.org_id:
            raise Conflict(
                f"model {model_id} was evaluated by {row.evaluated_by}; a co-owner does not overwrite another "
                "owner's evaluation (keep yours, or agree on who evaluates)"
            )
        try:
            ev = evaluation if isinstance(evaluation, Evaluation) else Evaluation.from_dict(evaluation)
        except InvalidMetricInput as exc:
            raise InvalidInput(f"evaluation: {exc}") from None
        row.evaluation_json = json.dumps(ev.to_dict())
        row.evaluated_by = actor.org_id
        entry = self.ledger.append(
            session,
            EntryDraft(
                action="model.evaluate",
                actor=actor,
                objects=(ObjectRef("model", model_id),),
                request_id=request_id,
                detail=self._metrics_detail(ev),
            ),
        )
        row.ledger_json = json.dumps([*json.loads(row.ledger_json), entry.index])
        session.flush()
        return ModelRecord.of(row, self._holders(session, model_id))
