"""Explanations of automated decisions (PIPL Art. 24): a subject asks why a bank's approved model scored it.

A subject — an enterprise or a person (household, individual-business owner) — sees every automated decision
that used its data: each approved model whose output reached a bank about it (the disclosure accounting,
:mod:`pps.governance.disclosure`), at which granularity, when and how often, and for which purposes (the
ledger's releases to that bank about the subject). For one of them it may ask for an explanation; the
enclave (:class:`enclave_sim.jobs.ExplainDecisionJob`) opens the approved model it sealed at approval, compares
the subject's own features with the model's population and returns the few features that moved the subject's
score most, each with its direction and a share rounded to 10 %, and the result at the granularity the bank
got — never a weight, and nothing of another subject.

Who learns what: the subject (and the operator, who relays it) learn the explanation; the bank learns nothing
new (the request is a ledger entry ``subject.explanation`` naming the bank and model digest, no figure). The
platform provisions the request to the enclave on the subject's behalf, after verifying the enclave's quote
against the build it runs; the plaintext model never leaves the enclave.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from enclave_sim.jobs import ExplainDecisionJob
from pps.errors import InvalidInput, NotFound
from pps.infra.storage.tables import Disclosure, ModelApproval, Organization, new_id, utcnow
from pps.ledger.entry import Actor, EntryDraft, ObjectRef
from pps.ledger.store import EntryFilter
from pps.services.approval import POPULATIONS, ModelApprovalService, verify_approval
from pps_wire import provision
from pps_wire.provision import table_bytes
from pps_wire.quote import Quote, standard_policy

TOP_FEATURES = 3
RELEASE = ("explanation",)


@dataclass(frozen=True)
class DecisionSummary:
    """One approved model's output about the subject released to one bank (an automated decision)."""

    bank_org_id: str
    bank: str
    model_digest: str
    approval_id: str | None
    granularity: str
    first_at: datetime
    last_at: datetime
    releases: int
    purposes: tuple[str, ...]
    explainable: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "bank_org_id": self.bank_org_id,
            "bank": self.bank,
            "model_digest": self.model_digest,
            "approval_id": self.approval_id,
            "granularity": self.granularity,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "releases": self.releases,
            "purposes": list(self.purposes),
            "explainable": self.explainable,
        }


@dataclass
class ExplanationService:
    approvals: ModelApprovalService

    def _purposes(self, session: Session, subject: str) -> dict[str, set[str]]:
        """bank -> the purposes under which scores about ``subject`` were released to it (from the ledger)."""
        out: dict[str, set[str]] = {}
        rows = self.approvals.ledger.entries(session, EntryFilter(subject=subject), limit=10_000)
        for r in rows:
            doc = json.loads(r.entry)
            if doc.get("action") not in {"policy.release", "enclave.release"} or not doc.get("purpose"):
                continue
            for rel in doc.get("released") or []:
                if str(rel.get("what", "")).startswith("score"):
                    out.setdefault(str(rel.get("to")), set()).add(str(doc["purpose"]))
        return out

    def decisions(self, session: Session, subject: str) -> list[DecisionSummary]:
        """Every approved model whose output reached a bank about ``subject``, newest first."""
        rows = session.scalars(
            select(Disclosure)
            .where(Disclosure.subject_uscc == subject)
            .order_by(Disclosure.last_at.desc(), Disclosure.bank_org_id)
        ).all()
        purposes = self._purposes(session, subject) if rows else {}
        out = []
        for d in rows:
            approval = self._approval(session, d.bank_org_id, d.model_digest)
            bank = session.get(Organization, d.bank_org_id)
            out.append(
                DecisionSummary(
                    bank_org_id=d.bank_org_id,
                    bank=bank.name if bank else d.bank_org_id,
                    model_digest=d.model_digest,
                    approval_id=approval.id if approval else None,
                    granularity=d.granularity,
                    first_at=d.first_at,
                    last_at=d.last_at,
                    releases=d.releases,
                    purposes=tuple(sorted(purposes.get(d.bank_org_id, ()))),
                    explainable=approval is not None,
                )
            )
        return out

    @staticmethod
    def _approval(session: Session, bank: str, digest: str) -> ModelApproval | None:
        return session.scalar(
            select(ModelApproval)
            .where(ModelApproval.bank_org_id == bank, ModelApproval.model_digest == digest)
            .order_by(ModelApproval.created_at.desc())
            .limit(1)
        )

    def explain(
        self,
        *,
        subject: str,
        bank_org_id: str,
        model_digest: str,
        actor: Actor,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Explain the decision of ``bank_org_id``'s approved model ``model_digest`` about ``subject``."""
        a = self.approvals
        with a.db.transaction(write=False) as session:
            disclosure = session.get(Disclosure, (bank_org_id, subject, model_digest))
            if disclosure is None:
                raise NotFound(
                    "no result of this model about you reached this bank: GET /v1/me/decisions lists the ones "
                    "that did"
                )
            approval = self._approval(session, bank_org_id, model_digest)
            if approval is None:
                raise InvalidInput(
                    "this model was not approved in the enclave (it ran under an unsafe test setting), so the "
                    "enclave holds no plaintext of it to explain"
                )
            verify_approval(json.loads(approval.approval_json), approval.signing_key)
            names = list(json.loads(approval.approval_json)["features"])
            table = a.features.table(session)
            found, rows, _ = table.rows([subject])
            if not found:
                raise NotFound("the platform holds no features about you today, so nothing can be explained")
            granularity, sealed = disclosure.granularity, approval.sealed_model
            purposes = sorted(self._purposes(session, subject).get(bank_org_id, ()))
            bank = session.get(Organization, bank_org_id)
        mine = table.matrix(names, rows)
        subject_table = table_bytes(["subject"], {n: [float(mine[0, j])] for j, n in enumerate(names)})
        host = a.enclave.host()
        handle = new_id("xpl")
        kind = ExplainDecisionJob.kind
        nonce = os.urandom(32)
        raw = host.quote(nonce)
        output = provision.OutputPolicy(RELEASE, os.urandom(32), None)
        body = json.dumps({"model_digest": model_digest, "granularity": granularity, "top": TOP_FEATURES})
        sealed_request = provision.encrypt_for_enclave(
            raw,
            standard_policy(measurements=[host.measurement], nonce=nonce),
            vendor_key=a.enclave.vendor_public_key,
            job=kind,
            slot="request",
            body=body.encode(),
            output=output,
        )
        try:
            host.provision(
                handle,
                job=kind,
                slot="request",
                quote_hash=Quote.parse(raw).quote_hash,
                ciphertext=sealed_request,
            )
            host.supply(handle, job=kind, slot="model", data=json.dumps([sealed]).encode())
            host.supply(handle, job=kind, slot="population", data=a._sample())
            host.supply(handle, job=kind, slot="subject", data=subject_table)
            host.supply(
                handle,
                job=kind,
                slot="policy",
                data=json.dumps({"populations": {k: list(v) for k, v in POPULATIONS.items()}}).encode(),
            )
            _release, plain = host.run(handle, params={}, output=output.public())
        except BaseException:
            a.enclave.drop(handle)
            raise
        explanation = dict(plain["explanation"])
        with a.db.transaction() as session:
            a.ledger.append(
                session,
                EntryDraft(
                    action="subject.explanation",
                    actor=actor,
                    objects=(ObjectRef("model_approval", approval.id), ObjectRef("org", bank_org_id)),
                    subjects=(subject,),
                    request_id=request_id,
                    detail={
                        "model_digest": model_digest,
                        "features_explained": len(explanation.get("drivers", [])),
                        "measurement": host.hello["measurement"],
                    },
                ),
            )
        return {
            **explanation,
            "bank_org_id": bank_org_id,
            "bank": bank.name if bank else bank_org_id,
            "approval_id": approval.id,
            "purposes": purposes,
            "signing_key": str(host.hello["signing_key"]),
            "explained_at": utcnow(),
        }
