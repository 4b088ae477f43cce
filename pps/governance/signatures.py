"""The subject's signature on its consent: checked when an action is made, and again at every decision.

A consent is only consent if its subject signed it (:mod:`pps_wire.subject_sign`). This module

* checks a new grant, approval or revocation against the terms it acts on (:meth:`ConsentSignatures.check_new`):
  the key is enrolled by this subject and not revoked, the signature verifies, the signed text is exactly the
  canonical document of these terms, signed within :data:`MAX_SKEW` of now, with a nonce never seen before;
* answers, for a stored consent, whether it carries such a signature *and* whether the row still says what
  was signed (:meth:`ConsentSignatures.problem`) — so a row written or edited by whoever runs the database,
  without the subject's key, is not consent. The policy engine asks this at every decision (cached per
  signature and row, so a portfolio's decision costs one verification per consent once), and
  ``pps audit verify`` names every consent in force that fails it.

Who learns what: nothing beyond the signed terms, which the platform holds anyway.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pps.data.datasets.schema import DatasetSchema, Sensitivity
from pps.errors import InvalidSubjectSignature
from pps.infra.storage.tables import Consent, ConsentSignature, ConsentState, Dataset, SubjectKey, new_id
from pps.ledger.replay import Quarantine
from pps_wire.errors import ProofVerificationError
from pps_wire.subject_sign import canonical_scope, format_utc, parse_action_text, unb64, verify_signature

SUBJECT_KEYS_TABLE = "subject_keys"
SIGNATURES_TABLE = "consent_signatures"
"""The tables of keys and signatures (:mod:`pps.governance.state` reconciles them with the ledger)."""

MAX_SKEW = timedelta(minutes=15)
"""How far a signed action's ``signed_at`` may be from the server's clock when it arrives."""
GRANTING = ("grant", "approve")
_CACHE_MAX = 200_000


@dataclass(frozen=True)
class SignedAction:
    text: str
    key_id: str
    signature: str
    """base64 of the raw signature"""


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _parse_signed_time(text: Any) -> datetime:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        raise ProofVerificationError("signed_at is not an RFC 3339 UTC time with microseconds") from None


class ConsentSignatures:
    def __init__(self, quarantine: Quarantine | None = None) -> None:
        self._verdicts: dict[tuple[Any, ...], str | None] = {}
        self.quarantine = quarantine or Quarantine()
        """keys and signature rows the last reconciliation with the ledger found divergent
        (:mod:`pps.governance.state`): ignored, so what they would sign is no consent"""

    # --- a new action ----------------------------------------------------------------------------------

    def check_new(
        self,
        session: Session,
        *,
        subject_uscc: str,
        signed: SignedAction | None,
        expected: dict[str, Any],
        now: datetime,
    ) -> tuple[SubjectKey, dict[str, Any]]:
        """Check a signed action against the ``expected`` document (its nonce and signed_at are taken from the
        signed text); raise :class:`InvalidSubjectSignature` naming what fails, or return the key and document."""
        action = expected["action"]
        if signed is None:
            raise InvalidSubjectSignature(
                f"a consent {action} must be signed by the subject's own key: sign the canonical terms "
                "(pps_wire.subject_sign.action_document) and send them as 'signature' {text, key_id, signature}"
            )
        key = session.get(SubjectKey, signed.key_id)
        if key is None or key.subject_uscc != subject_uscc:
            raise InvalidSubjectSignature(
                f"key {signed.key_id} is not a key enrolled by subject {subject_uscc}; enrol your key first "
                "(POST /v1/subject-keys, or pps-client keys enrol)"
            )
        if key.revoked_at is not None:
            raise InvalidSubjectSignature(f"key {key.key_id} was revoked at {key.revoked_at.isoformat()}")
        if key.key_id in self.quarantine.rows(SUBJECT_KEYS_TABLE):
            raise InvalidSubjectSignature(
                f"key {key.key_id} differs from its enrolment in the ledger; it signs nothing until reconciled"
            )
        try:
            verify_signature(key.algorithm, key.public_key, signed.text, unb64(signed.signature, "signature"))
            doc = parse_action_text(signed.text)
            signed_at = _parse_signed_time(doc.get("signed_at"))
        except ProofVerificationError as exc:
            raise InvalidSubjectSignature(str(exc)) from None
        want = {**expected, "nonce": doc.get("nonce"), "signed_at": doc.get("signed_at")}
        differ = sorted(k for k in set(want) | set(doc) if want.get(k) != doc.get(k))
        if differ:
            raise InvalidSubjectSignature(
                f"the signed text does not match this {action}: {', '.join(differ)} differ; sign exactly the "
                "terms you send",
                details={"differ": differ},
            )
        if abs(signed_at - now) > MAX_SKEW:
            raise InvalidSubjectSignature(
                f"the signature was made at {doc['signed_at']}, more than {MAX_SKEW} from now; sign again"
            )
        nonce = doc.get("nonce")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
            raise InvalidSubjectSignature("the signed nonce must be 16-64 characters")
        if session.execute(select(ConsentSignature.id).where(ConsentSignature.nonce == nonce)).first():
            raise InvalidSubjectSignature("this signature was used before (its nonce is spent); sign again")
        if key.enrolled_at > signed_at + MAX_SKEW:
            raise InvalidSubjectSignature("the signature predates the key's enrolment")
        return key, doc

    def record(
        self,
        session: Session,
        *,
        consent: Consent,
        key: SubjectKey,
        signed: SignedAction,
        doc: dict[str, Any],
        now: datetime,
    ) -> ConsentSignature:
        row = ConsentSignature(
            id=new_id("csg"),
            consent_id=consent.id,
            action=doc["action"],
            key_id=key.key_id,
            text=signed.text,
            signature=signed.signature,
            nonce=doc["nonce"],
            signed_at=_parse_signed_time(doc["signed_at"]),
            recorded_at=now,
        )
        session.add(row)
        session.flush()
        return row

    # --- a stored consent --------------------------------------------------------------------------------

    def _verdict(
        self,
        session: Session,
        sig: tuple[Any, ...],
        key: tuple[Any, ...],
        row: tuple[Any, ...],
        schemas: dict[str, DatasetSchema | None],
    ) -> str | None:
        cache_key = (sig, key, row)
        if cache_key in self._verdicts:
            return self._verdicts[cache_key]
        verdict = self._judge(session, sig, key, row, schemas)
        if len(self._verdicts) >= _CACHE_MAX:
            self._verdicts.clear()
        self._verdicts[cache_key] = verdict
        return verdict

    def _judge(
        self,
        session: Session,
        sig: tuple[Any, ...],
        key: tuple[Any, ...],
        row: tuple[Any, ...],
        schemas: dict[str, DatasetSchema | None],
    ) -> str | None:
        _sig_id, action, text, signature = sig
        key_id, key_uscc, algorithm, public_key, enrolled_at, revoked_at = key
        consent_id, subject, bank, purpose, ops_json, scope_json, valid_from, valid_until, max_uses, grain = (
            row
        )
        if key_uscc != subject:
            return f"signed by key {key_id}, which subject {subject} did not enrol"
        try:
            verify_signature(algorithm, bytes(public_key), text, unb64(signature, "signature"))
            doc = parse_action_text(text)
            signed_at = _parse_signed_time(doc.get("signed_at"))
        except ProofVerificationError as exc:
            return f"the subject's signature does not hold: {exc}"
        if doc["action"] != action or action not in GRANTING:
            return f"the signature is over a {doc['action']}, not a grant or approval"
        if revoked_at is not None and _time(revoked_at) <= signed_at:
            return f"signed by key {key_id} after it was revoked"
        if _time(enrolled_at) > signed_at + MAX_SKEW:
            return f"signed before key {key_id} was enrolled"
        differ = []
        for name, stored in (
            ("subject", subject),
            ("bank", bank),
            ("purpose", purpose),
            ("operations", sorted(set(json.loads(ops_json)))),
            ("valid_until", format_utc(_time(valid_until))),
            ("max_uses", max_uses),
        ):
            if doc.get(name) != stored:
                differ.append(name)
        signed_grain = doc.get("granularity")
        if signed_grain is None and action == "grant":
            from pps.governance.consent import granularity_for

            signed_grain = granularity_for(purpose, None)  # "the purpose's default", as signed
        if signed_grain != grain:
            differ.append("granularity")
        if doc.get("valid_from") is not None:
            if doc["valid_from"] != format_utc(_time(valid_from)):
                differ.append("valid_from")
        elif _time(valid_from) < signed_at - MAX_SKEW:
            differ.append("valid_from")
        scope = canonical_scope(json.loads(scope_json))
        if action == "approve":
            if doc.get("consent_id") != consent_id:
                differ.append("consent_id")
            if doc.get("scope") != scope:
                differ.append("scope")
        elif not self._within(session, scope, doc.get("scope") or [], schemas):
            differ.append("scope")
        if differ:
            return f"the consent row differs from what the subject signed: {', '.join(differ)}"
        return None

    def _within(
        self,
        session: Session,
        stored: list[dict[str, Any]],
        signed: list[dict[str, Any]],
        schemas: dict[str, DatasetSchema | None],
    ) -> bool:
        """Every stored field was named in the signed scope, or the subject wrote "*" and it is a C1 field."""
        granted = {i["dataset_id"]: set(i["fields"]) for i in signed}
        for item in stored:
            fields = granted.get(item["dataset_id"])
            if fields is None:
                return False
            loose = set(item["fields"]) - fields
            if not loose:
                continue
            if "*" not in fields:
                return False
            if item["dataset_id"] not in schemas:
                ds = session.get(Dataset, item["dataset_id"])
                schemas[item["dataset_id"]] = (
                    DatasetSchema.model_validate_json(ds.schema_json) if ds is not None else None
                )
            schema = schemas[item["dataset_id"]]
            if schema is None:
                continue  # the dataset is gone: nothing of it can be used anyway
            c1 = {c.name for c in schema.columns if c.sensitivity is Sensitivity.C1}
            if loose - c1:
                return False
        return True

    def problems(self, session: Session, consents: Iterable[Consent]) -> dict[str, str]:
        """For each consent, why it is not consent its subject signed (absent when it is)."""
        consents = list(consents)
        sigs = self._signatures(session, [c.id for c in consents])
        schemas: dict[str, DatasetSchema | None] = {}
        out: dict[str, str] = {}
        for c in consents:
            found = sigs.get(c.id)
            if found is None:
                out[c.id] = "no signature by the subject"
                continue
            row = (
                c.id,
                c.subject_uscc,
                c.bank_org_id,
                c.purpose,
                c.operations_json,
                c.scope_json,
                c.valid_from,
                c.valid_until,
                c.max_uses,
                c.granularity,
            )
            verdict = self._verdict(session, found[0], found[1], row, schemas)
            if verdict is not None:
                out[c.id] = verdict
        return out

    def problem(self, session: Session, consent: Consent) -> str | None:
        return self.problems(session, [consent]).get(consent.id)

    def _signatures(
        self,
        session: Session,
        consent_ids: list[str] | None,
        *,
        bank_org_id: str | None = None,
        purpose: str = "",
    ) -> dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]]:
        """The latest granting signature of each consent, with its key, as plain tuples."""
        query = (
            select(
                ConsentSignature.consent_id,
                ConsentSignature.id,
                ConsentSignature.action,
                ConsentSignature.text,
                ConsentSignature.signature,
                ConsentSignature.recorded_at,
                SubjectKey.key_id,
                SubjectKey.subject_uscc,
                SubjectKey.algorithm,
                SubjectKey.public_key,
                SubjectKey.enrolled_at,
                SubjectKey.revoked_at,
            )
            .join(SubjectKey, SubjectKey.key_id == ConsentSignature.key_id)
            .where(ConsentSignature.action.in_(GRANTING))
        )
        if bank_org_id is not None:
            query = query.join(Consent, Consent.id == ConsentSignature.consent_id).where(
                Consent.bank_org_id == bank_org_id, Consent.purpose == purpose
            )
        elif consent_ids is not None:
            if not consent_ids:
                return {}
            query = query.where(ConsentSignature.consent_id.in_(consent_ids))
        out: dict[str, tuple[tuple[Any, ...], tuple[Any, ...], Any]] = {}
        bad_sigs = self.quarantine.rows(SIGNATURES_TABLE)
        bad_keys = self.quarantine.rows(SUBJECT_KEYS_TABLE)
        for r in session.execute(query).all():
            if r[1] in bad_sigs or r[6] in bad_keys:
                continue  # a row the ledger does not give: not the subject's signature
            prior = out.get(r[0])
            if prior is not None and _time(prior[2]) >= _time(r[5]):
                continue
            out[r[0]] = ((r[1], r[2], r[3], r[4]), (r[6], r[7], r[8], bytes(r[9]), r[10], r[11]), r[5])
        return {k: (v[0], v[1]) for k, v in out.items()}

    def unsigned_among(
        self, session: Session, bank_org_id: str, purpose: str, rows: Iterable[tuple[Any, ...]]
    ) -> dict[str, str]:
        """For the policy engine: of these active consent rows (``id, subject, bank, purpose, operations_json,
        scope_json, valid_from, valid_until, max_uses, granularity``) of one bank and purpose, those not validly signed."""
        rows = list(rows)
        if not rows:
            return {}
        sigs = self._signatures(session, None, bank_org_id=bank_org_id, purpose=purpose)
        schemas: dict[str, DatasetSchema | None] = {}
        out: dict[str, str] = {}
        for row in rows:
            found = sigs.get(row[0])
            if found is None:
                out[row[0]] = "no signature by the subject"
                continue
            verdict = self._verdict(session, found[0], found[1], tuple(row), schemas)
            if verdict is not None:
                out[row[0]] = verdict
        return out

    def unsigned_of(self, session: Session, rows: Iterable[tuple[Any, ...]]) -> dict[str, str]:
        """:meth:`unsigned_among` for the consents a running computation relies on, read by id (any bank and
        purpose): what :meth:`pps.governance.policy.PolicyEngine.in_force` asks before each batch of a training."""
        out: dict[str, str] = {}
        schemas: dict[str, DatasetSchema | None] = {}
        for part in _chunks(list(rows)):
            sigs = self._signatures(session, [r[0] for r in part])
            for row in part:
                found = sigs.get(row[0])
                if found is None:
                    out[row[0]] = "no signature by the subject"
                    continue
                verdict = self._verdict(session, found[0], found[1], tuple(row), schemas)
                if verdict is not None:
                    out[row[0]] = verdict
        return out


def _chunks(rows: list[tuple[Any, ...]], size: int = 10_000) -> Iterable[list[tuple[Any, ...]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def consents_in_force_unsigned(
    session: Session, signatures: ConsentSignatures, now: datetime
) -> list[tuple[Consent, str]]:
    """Every active, unexpired consent that does not carry a valid signature by a key its subject enrolled,
    with the reason (``pps audit verify`` names them)."""
    found: list[tuple[Consent, str]] = []
    query = (
        select(Consent)
        .where(Consent.state == ConsentState.active, Consent.valid_until > now)
        .order_by(Consent.id)
        .execution_options(yield_per=2000)
    )
    batch: list[Consent] = []
    for consent in session.execute(query).scalars():
        batch.append(consent)
        if len(batch) == 2000:
            problems = signatures.problems(session, batch)
            found.extend((c, problems[c.id]) for c in batch if c.id in problems)
            batch = []
    if batch:
        problems = signatures.problems(session, batch)
        found.extend((c, problems[c.id]) for c in batch if c.id in problems)
    return found
