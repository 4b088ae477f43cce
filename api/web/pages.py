"""The role pages: enterprise portal, bank console, auditor console, operator page (server-rendered HTML).

Every action goes through :func:`api.web.core.call`: the API route's own function behind the role guard that
route declares, so a page refuses exactly what the API refuses (another tenant's objects answer "not found").
"""

from __future__ import annotations

import base64
import csv
import hmac
import io
import json
import secrets
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select

from api.deps import MAX_INDEX, RuntimeDep
from api.routers import aggregates, audit, consent, datasets, identity, jobs, system
from api.routers import models as model_routes
from api.routers import objections as objection_routes
from api.routers import repairs as repair_routes
from api.routers import reports as report_routes
from api.schemas import (
    CheckpointOut,
    ConsentDecision,
    ConsentGrant,
    ConsentRequestIn,
    EntryOut,
    OrgCreate,
    TokenIssue,
    b64,
)
from pps.errors import InvalidInput, NotFound, PPSError
from pps.governance.consent import OPERATIONS, PURPOSES
from pps.identity.persons import is_personal
from pps.identity.service import SELF_CREDENTIALED
from pps.infra.storage.tables import (
    TERMINAL_JOB_STATES,
    Consent,
    ConsentState,
    Job,
    Organization,
    Role,
    utcnow,
)
from pps.ledger.store import EntryFilter
from pps_wire import merkle
from pps_wire.checkpoint import verify_checkpoint
from pps_wire.schemas import (
    RepairApprove,
    RepairCreate,
    RepairDeny,
    RepairObject,
    ReportRequest,
    StatementCreate,
)

from . import passkeys
from .core import (
    COOKIE,
    HOME,
    LOGIN_COOKIE,
    PREFIX,
    FormDep,
    PageRoute,
    Web,
    WebDep,
    call,
    check_token_shape,
    close_session,
    guard,
    one,
    open_session,
    read_form,
    reauthenticate,
    redirect,
    render,
    require,
    safe_next,
    web,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=PageRoute)

DONE_MESSAGES = frozenset(
    {
        "consent_granted",
        "consent_revoked",
        "consent_approved",
        "consent_denied",
        "requested",
        "token_revoked",
        "repair_applied",
        "repair_decided",
        "statement_added",
        "objected",
    }
)
EXPORT_MAX = 5000
NEAR_LIMIT = 0.8
EXPIRY_SOON = timedelta(days=7)


def _flash(request: Request) -> str | None:
    done = request.query_params.get("done")
    return done if done in DONE_MESSAGES else None


def _org_names(rt: RuntimeDep, role: Role | None = None) -> dict[str, str]:
    with rt.db.transaction(write=False) as session:
        query = select(Organization.id, Organization.name)
        if role is not None:
            query = query.where(Organization.role == role)
        return {r.id: r.name for r in session.execute(query)}


def _day_end(text: str, name: str) -> datetime:
    """A date (``YYYY-MM-DD``) or local date-time from a form, read as UTC; a date means the end of that day."""
    try:
        if len(text) == 10:
            return datetime.combine(datetime.fromisoformat(text).date(), time(23, 59, 59), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be a date like 2027-01-31 or 2027-01-31T12:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _when(text: str | None, name: str) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be a time like 2027-01-31T12:00 (UTC)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- log-in, log-out, home ------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def index(request: Request, rt: RuntimeDep) -> Response:
    page = web(request, rt)
    return redirect(HOME[page.caller.role])


def _login_form(request: Request, status_code: int = 200, error: str | None = None) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(
        None,
        request,
        "login.html",
        status_code=status_code,
        login_csrf=nonce,
        error=error,
        next=safe_next(request.query_params.get("next")) or "",
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=3600,
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return _login_form(request)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, rt: RuntimeDep) -> Response:
    form = await read_form(request)
    sent, kept = one(form, "csrf"), request.cookies.get(LOGIN_COOKIE, "")
    if not sent or not kept or not hmac.compare_digest(sent.encode(), kept.encode()):
        return _login_form(request, 403, "the log-in form expired; please try again")
    try:
        token_text = check_token_shape(one(form, "token"))
        with rt.db.transaction(write=False) as session:
            org, token = rt.identity.authenticate(session, token_text)
            session.expunge_all()
        session_id, expires = open_session(rt, org, token)
    except PPSError as exc:
        return _login_form(request, 401, exc.message)
    target = safe_next(one(form, "next")) or HOME[org.role]
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        session_id,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        expires=expires,
    )
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


@router.post("/logout")
def logout(request: Request, rt: RuntimeDep, form: FormDep) -> Response:
    session_id = request.cookies.get(COOKIE)
    if session_id:
        close_session(rt, session_id)
    response = redirect(f"{PREFIX}/login")
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


# --- subject portal -------------------------------------------------------------------------------------


@router.get("/subject", response_class=HTMLResponse)
def subject_home(
    page: WebDep, rt: RuntimeDep, dataset: Annotated[str, Query(max_length=40)] = ""
) -> Response:
    require(page, Role.subject)
    with rt.db.transaction(write=False) as s:
        personal = bool(page.caller.uscc) and is_personal(s, str(page.caller.uscc))
    if personal:  # a household or an onboarded individual business: its own portal
        return redirect(f"{PREFIX}/person")
    found = call(
        page,
        consent.list_consents,
        page.caller,
        rt,
        limit=rt.settings.page_size_max,
        state=None,
        after=None,
    )
    pending = [c for c in found.items if c.state == ConsentState.requested.value]
    others = [c for c in found.items if c.state != ConsentState.requested.value]
    known_datasets = sorted({s.dataset_id for c in found.items for s in c.scope} | ({dataset} - {""}))
    return render(
        page,
        page.request,
        "subject.html",
        flash=_flash(page.request),
        pending=pending,
        consents=others,
        banks=_org_names(rt, Role.bank),
        purposes=PURPOSES,
        operations=sorted(OPERATIONS),
        known_datasets=known_datasets,
        preset_dataset=dataset,
        default_until=(utcnow() + timedelta(days=365)).date().isoformat(),
    )


def _modes(text: str) -> dict[str, str] | None:
    """``field=mode, ...`` from the grant form: the consent's narrowing of disclosure modes (issue 23)."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, mode = part.partition("=")
        if not sep or not name.strip() or not mode.strip():
            raise InvalidInput(f"disclosure modes are field=mode, separated by commas; got {part!r}")
        out[name.strip()] = mode.strip()
    return out or None


@router.post("/subject/consents")
def subject_grant(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    fields = [f.strip() for f in one(form, "fields", "*").split(",") if f.strip()]
    max_uses = one(form, "max_uses")
    until = one(form, "valid_until")
    if not until:
        raise InvalidInput("choose until when the consent is valid")
    body = ConsentGrant.model_validate(
        {
            "bank_org_id": one(form, "bank_org_id"),
            "purpose": one(form, "purpose"),
            "scope": [
                {"dataset_id": one(form, "dataset_id"), "fields": fields, "modes": _modes(one(form, "modes"))}
            ],
            "operations": form.get("operations", []),
            "valid_until": _day_end(until, "valid until"),
            "max_uses": int(max_uses) if max_uses.isdigit() else (None if not max_uses else -1),
            "granularity": one(form, "granularity") or None,  # signed with the rest of the terms
        }
    )
    guard(page, consent.grant)  # a bank posting this form is refused by the API route's own guard
    return passkeys.grant_to_sign(page, rt, body)  # the subject's passkey signs the terms, then it is granted


@router.post("/subject/consents/{consent_id}/{decision}")
def subject_decide(
    consent_id: Annotated[str, Path(max_length=40)],
    decision: str,
    page: WebDep,
    rt: RuntimeDep,
    form: FormDep,
) -> Response:
    if decision == "revoke":
        call(page, consent.revoke, consent_id, page.caller, rt)
    elif decision == "approve":
        guard(page, consent.approve)
        return passkeys.approval_to_sign(page, rt, consent_id)
    elif decision == "deny":
        reason = one(form, "reason") or "declined by the enterprise"
        call(page, consent.deny, consent_id, ConsentDecision(reason=reason), page.caller, rt)
    else:
        raise NotFound(f"no such action: {decision}")
    done = {"revoke": "consent_revoked", "approve": "consent_approved", "deny": "consent_denied"}[decision]
    return redirect(f"{PREFIX}/subject", done=done)


@router.get("/subject/data", response_class=HTMLResponse)
def subject_data(page: WebDep, rt: RuntimeDep) -> Response:
    require(page, Role.subject)
    records = call(page, datasets.my_records, page.caller, rt)
    return render(page, page.request, "subject_data.html", records=records)


@router.get("/subject/records", response_class=HTMLResponse)
def subject_records(page: WebDep, rt: RuntimeDep) -> Response:
    """My records: dishonesty records with their periods and status, repair and dispute actions, the
    applications with their checks, states and deadlines, and the open objections."""
    require(page, Role.subject)
    records = call(page, repair_routes.list_my_records, page.caller, rt)
    apps = call(page, repair_routes.list_repairs, page.caller, rt, limit=rt.settings.page_size_max)
    objections = call(
        page, objection_routes.list_objections, page.caller, rt, limit=rt.settings.page_size_max
    )
    return render(
        page,
        page.request,
        "subject_records.html",
        flash=_flash(page.request),
        records=records,
        applications=apps.items,
        objections=objections.items,
        authorities=_org_names(rt, Role.data_provider),
    )


@router.post("/subject/repairs")
def subject_apply(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    """Apply from the portal: the record and the signed commitment (proof files go with the API or the SDK,
    ``POST /v1/repairs``, which the platform corroborates the same way)."""
    if one(form, "sign") != "yes":
        raise InvalidInput("sign the credit commitment to apply")
    body = RepairCreate(record_id=one(form, "record_id"), commitment=one(form, "commitment"), proofs=[])
    call(page, repair_routes.apply, body, page.caller, rt)
    return redirect(f"{PREFIX}/subject/records", done="repair_applied")


@router.post("/subject/repairs/{app_id}/object")
def subject_object(
    app_id: Annotated[str, Path(max_length=40)], page: WebDep, rt: RuntimeDep, form: FormDep
) -> Response:
    call(page, repair_routes.object_to_denial, app_id, RepairObject(text=one(form, "text")), page.caller, rt)
    return redirect(f"{PREFIX}/subject/records", done="objected")


@router.post("/subject/statements")
def subject_statement(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    body = StatementCreate(
        dataset_id=one(form, "dataset_id"), record_key=one(form, "record_key"), text=one(form, "text")
    )
    call(page, repair_routes.add_statement, body, page.caller, rt)
    return redirect(f"{PREFIX}/subject/records", done="statement_added")


@router.get("/repairs", response_class=HTMLResponse)
def repair_queue(page: WebDep, rt: RuntimeDep, overdue: bool = False) -> Response:
    """The authority's queue (a provider: applications on its records, with their checks and deadlines); for
    admins and auditors, the overdue list of repairs and objections."""
    require(page, Role.data_provider, Role.platform_admin, Role.auditor)
    watch = page.caller.role is not Role.data_provider
    apps = call(
        page,
        repair_routes.list_repairs,
        page.caller,
        rt,
        limit=rt.settings.page_size_max,
        overdue=True if (watch or overdue) else None,
    )
    objections = call(
        page,
        objection_routes.list_objections,
        page.caller,
        rt,
        limit=rt.settings.page_size_max,
        overdue=True if watch else None,
    )
    return render(
        page,
        page.request,
        "repairs.html",
        flash=_flash(page.request),
        applications=apps.items,
        objections=objections.items,
        watch=watch,
        names=_org_names(rt),
    )


@router.post("/repairs/{app_id}/{decision}")
def repair_decide(
    app_id: Annotated[str, Path(max_length=40)], decision: str, page: WebDep, rt: RuntimeDep, form: FormDep
) -> Response:
    if decision == "approve":
        call(
            page,
            repair_routes.approve,
            app_id,
            RepairApprove(note=one(form, "note") or None),
            page.caller,
            rt,
        )
    elif decision == "deny":
        reasons = [r.strip() for r in one(form, "reasons").splitlines() if r.strip()]
        call(page, repair_routes.deny, app_id, RepairDeny(reasons=reasons or [""]), page.caller, rt)
    else:
        raise NotFound(f"no such action: {decision}")
    return redirect(f"{PREFIX}/repairs", done="repair_decided")


@router.get("/subject/access", response_class=HTMLResponse)
def subject_access(
    page: WebDep,
    rt: RuntimeDep,
    after: Annotated[int | None, Query(ge=-1, le=MAX_INDEX)] = None,
) -> Response:
    require(page, Role.subject)
    mine = call(page, audit.mine, page.caller, rt, limit=rt.settings.page_size_max, after=after)
    return render(
        page,
        page.request,
        "subject_access.html",
        mine=mine,
        names=_org_names(rt),
        verifier_key=rt.ledger.signer.verifier_key,
    )


# --- proofs for the in-browser check --------------------------------------------------------------------


@router.get("/proof/{index}")
def proof(index: Annotated[int, Path(ge=0, le=MAX_INDEX)], page: WebDep, rt: RuntimeDep) -> JSONResponse:
    """An entry with its inclusion proof and the signed checkpoint, as the API's entry route serves it."""
    proven = call(page, audit.entry, index, page.caller, rt, tree_size=None)
    out = proven.model_dump(mode="json")
    out["verifier_key"] = rt.ledger.signer.verifier_key
    return JSONResponse(out, headers={"Cache-Control": "no-store"})


# --- auditor console ------------------------------------------------------------------------------------


def _filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    return {
        "actor": q.get("actor") or None,
        "action": q.get("action") or None,
        "subject": q.get("subject") or None,
        "purpose": q.get("purpose") or None,
        "since": _when(q.get("since"), "since"),
        "until": _when(q.get("until"), "until"),
    }


@router.get("/auditor", response_class=HTMLResponse)
def auditor_home(
    page: WebDep,
    rt: RuntimeDep,
    after: Annotated[int | None, Query(ge=-1, le=MAX_INDEX)] = None,
) -> Response:
    flt = _filters(page.request)
    found = call(
        page, audit.entries, page.caller, rt, limit=rt.settings.page_size_default, after=after, **flt
    )
    query = {
        k: v
        for k, v in page.request.query_params.items()
        if k in ("actor", "action", "subject", "purpose", "since", "until") and v
    }
    return render(
        page,
        page.request,
        "auditor.html",
        entries=found.items,
        next_after=found.next_after,
        query=query,
        names=_org_names(rt),
        purposes=sorted(PURPOSES),
    )


@router.get("/auditor/checkpoints", response_class=HTMLResponse)
def auditor_checkpoints(page: WebDep, rt: RuntimeDep) -> Response:
    cps: list[CheckpointOut] = []
    after: int | None = None
    while len(cps) < 10_000:
        got = call(page, audit.checkpoints, page.caller, rt, limit=rt.settings.page_size_max, after=after)
        cps.extend(got.items)
        if got.next_after is None:
            break
        after = int(got.next_after)
    rows = []
    previous: CheckpointOut | None = None
    with rt.db.transaction(write=False) as session:
        for cp in cps:
            try:
                verify_checkpoint(cp.note, rt.ledger.verifier, origin=rt.ledger.origin)
                signed = "ok"
            except PPSError as exc:
                signed = exc.message
            consistent = "—"
            if previous is not None:
                try:
                    proof = rt.ledger.consistency_proof(session, previous.tree_size, cp.tree_size)
                    merkle.verify_consistency(
                        previous.tree_size,
                        cp.tree_size,
                        _unb64(previous.root_hash),
                        _unb64(cp.root_hash),
                        proof,
                    )
                    consistent = "ok"
                except PPSError as exc:
                    consistent = exc.message
            rows.append({"cp": cp, "signed": signed, "consistent": consistent})
            previous = cp
    rows.reverse()  # newest first
    return render(page, page.request, "auditor_checkpoints.html", rows=rows)


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


@router.get("/auditor/anomalies", response_class=HTMLResponse)
def auditor_anomalies(page: WebDep, rt: RuntimeDep) -> Response:
    # the same readers as the ledger route: auditors and platform admins
    call(page, audit.entries, page.caller, rt, limit=1)
    now = utcnow()
    near: list[dict[str, Any]] = []
    denials: dict[str, dict[str, int]] = {}
    with rt.db.transaction(write=False) as session:
        for c in session.execute(select(Consent).where(Consent.state == ConsentState.active)).scalars():
            why = []
            if c.max_uses is not None and c.uses >= NEAR_LIMIT * c.max_uses:
                why.append(f"{c.uses}/{c.max_uses} uses")
            if now < c.valid_until <= now + EXPIRY_SOON:
                why.append(f"expires {c.valid_until:%Y-%m-%d %H:%M} UTC")
            if why:
                near.append({"consent": c, "why": ", ".join(why)})
        after: int | None = None
        scanned = 0
        while scanned < 50_000:
            batch = rt.ledger.entries(session, EntryFilter(action="policy.*"), after=after, limit=1000)
            if not batch:
                break
            for e in batch:
                doc = json.loads(e.entry)
                bank = str(doc.get("detail", {}).get("bank") or doc.get("actor", {}).get("org"))
                for reason, n in (doc.get("detail", {}).get("denied") or {}).items():
                    per = denials.setdefault(bank, {})
                    per[reason] = per.get(reason, 0) + int(n)
            after = batch[-1].index
            scanned += len(batch)
        for e in rt.ledger.entries(session, EntryFilter(action="aggregate.refused"), limit=10_000):
            doc = json.loads(e.entry)
            bank = str(doc.get("actor", {}).get("org"))
            per = denials.setdefault(bank, {})
            key = "aggregate:" + str(doc.get("detail", {}).get("reason", "refused"))
            per[key] = per.get(key, 0) + 1
    ranked = sorted(denials.items(), key=lambda kv: -sum(kv[1].values()))
    return render(
        page, page.request, "auditor_anomalies.html", near=near, denials=ranked, names=_org_names(rt)
    )


@router.get("/auditor/export")
def auditor_export(
    page: WebDep,
    rt: RuntimeDep,
    fmt: Annotated[str, Query(pattern="^(csv|json)$")] = "json",
) -> Response:
    flt = _filters(page.request)
    found: list[EntryOut] = []
    after: int | None = None
    while len(found) < EXPORT_MAX:
        got = call(page, audit.entries, page.caller, rt, limit=rt.settings.page_size_max, after=after, **flt)
        found.extend(got.items)
        if got.next_after is None:
            break
        after = int(got.next_after)
    found = found[:EXPORT_MAX]
    cp = audit._current_checkpoint(rt)
    items = []
    with rt.db.transaction(write=False) as session:
        for e in found:
            if e.index >= cp.tree_size:
                continue
            proof = rt.ledger.inclusion_proof(session, e.index, cp.tree_size)
            items.append({**e.model_dump(mode="json"), "inclusion_proof": [b64(p) for p in proof]})
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    checkpoint = CheckpointOut.of(cp).model_dump(mode="json")
    if fmt == "json":
        doc = {
            "filters": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in flt.items()},
            "checkpoint": checkpoint,
            "verifier_key": rt.ledger.signer.verifier_key,
            "truncated": len(found) >= EXPORT_MAX,
            "items": items,
        }
        body = json.dumps(doc, indent=1, ensure_ascii=False).encode()
        media = "application/json"
    else:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(
            [
                "index",
                "time",
                "actor_org",
                "actor_role",
                "action",
                "purpose",
                "subjects",
                "released",
                "leaf_hash",
                "entry_b64",
                "tree_size",
                "root_hash",
                "inclusion_proof",
            ]
        )
        for it in items:
            doc = it["entry"]
            writer.writerow(
                [
                    it["index"],
                    doc.get("time"),
                    doc.get("actor", {}).get("org"),
                    doc.get("actor", {}).get("role"),
                    doc.get("action"),
                    doc.get("purpose") or "",
                    " ".join(doc.get("subjects", [])),
                    json.dumps(doc.get("released", []), ensure_ascii=False),
                    it["leaf_hash"],
                    it["entry_b64"],
                    cp.tree_size,
                    checkpoint["root_hash"],
                    " ".join(it["inclusion_proof"]),
                ]
            )
        body = buf.getvalue().encode()
        media = "text/csv; charset=utf-8"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="pps-ledger-{stamp}.{fmt}"'},
    )


# --- bank console ---------------------------------------------------------------------------------------


def _models(page: Web, rt: RuntimeDep) -> list[dict[str, Any]]:
    """The bank's models, as the model registry's API route lists them (newest first)."""
    return call(page, model_routes.list_models, page.caller, rt)


@router.get("/bank", response_class=HTMLResponse)
def bank_home(page: WebDep, rt: RuntimeDep) -> Response:
    require(page, Role.bank)
    found = call(
        page, consent.list_consents, page.caller, rt, limit=rt.settings.page_size_max, state=None, after=None
    )
    budget = call(page, aggregates.budget, page.caller, rt)
    return render(
        page,
        page.request,
        "bank.html",
        flash=_flash(page.request),
        consents=found.items,
        budget=budget,
        models=_models(page, rt),
        purposes=PURPOSES,
        operations=sorted(OPERATIONS),
        default_until=(utcnow() + timedelta(days=365)).date().isoformat(),
    )


@router.post("/bank/consent-requests")
def bank_request(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    fields = [f.strip() for f in one(form, "fields", "*").split(",") if f.strip()]
    until = one(form, "valid_until")
    if not until:
        raise InvalidInput("choose until when the consent would be valid")
    body = ConsentRequestIn.model_validate(
        {
            "subject_uscc": one(form, "subject_uscc"),
            "purpose": one(form, "purpose"),
            "scope": [{"dataset_id": one(form, "dataset_id"), "fields": fields}],
            "operations": form.get("operations", []),
            "valid_until": _day_end(until, "valid until"),
        }
    )
    call(page, consent.request_consent, body, page.caller, rt)
    return redirect(f"{PREFIX}/bank", done="requested")


@router.post("/bank/reports")
def bank_report(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    body = ReportRequest(subject_uscc=one(form, "subject_uscc"), purpose=one(form, "purpose"))
    made = call(page, report_routes.create_report, body, page.caller, rt)
    return redirect(f"{PREFIX}/bank/reports/{made.id}")


@router.get("/bank/reports/{doc_id}", response_class=HTMLResponse)
def bank_report_view(doc_id: Annotated[str, Path(max_length=40)], page: WebDep, rt: RuntimeDep) -> Response:
    return call(page, report_routes.get_document_html, doc_id, page.caller, rt)


@router.get("/subject/report", response_class=HTMLResponse)
def subject_report(page: WebDep, rt: RuntimeDep) -> Response:
    return call(page, report_routes.own_report_html, page.caller, rt)


@router.get("/bank/jobs", response_class=HTMLResponse)
def bank_jobs(page: WebDep, rt: RuntimeDep) -> Response:
    require(page, Role.bank)
    found = call(page, jobs.list_jobs, page.caller, rt, limit=rt.settings.page_size_max, after=None)
    items = sorted(found.items, key=lambda j: j.created_at, reverse=True)
    active = any(j.state not in {s.value for s in TERMINAL_JOB_STATES} for j in items)
    return render(page, page.request, "bank_jobs.html", jobs=items, active=active)


@router.get("/bank/jobs/{job_id}/result")
def bank_job_result(job_id: Annotated[str, Path(max_length=40)], page: WebDep, rt: RuntimeDep) -> Response:
    result = call(page, jobs.job_result, job_id, page.caller, rt)
    ext = "json" if "json" in (result.media_type or "") else "bin"
    result.headers["Content-Disposition"] = f'attachment; filename="{job_id}-result.{ext}"'
    return result


@router.get("/bank/models/{model_id}", response_class=HTMLResponse)
def bank_model(model_id: Annotated[str, Path(max_length=64)], page: WebDep, rt: RuntimeDep) -> Response:
    model = call(page, model_routes.get_model, model_id, page.caller, rt)
    return render(page, page.request, "bank_model.html", model=model)


@router.get("/bank/models/{model_id}/report", response_class=HTMLResponse)
async def bank_model_report(
    model_id: Annotated[str, Path(max_length=64)], page: WebDep, rt: RuntimeDep
) -> Response:
    """The registry's evaluation page (ROC and KS drawn), as the API serves it."""
    return await call(page, model_routes.get_report_html, model_id, page.caller, rt)


# --- organisations, tokens, datasets, health --------------------------------------------------------------


@router.get("/operator", response_class=HTMLResponse)
def operator_home(page: WebDep, rt: RuntimeDep) -> Response:
    orgs = call(
        page, identity.list_orgs, page.caller, rt, limit=rt.settings.page_size_max, role=None, after=None
    )
    ready = system.readyz(rt)
    checks = json.loads(bytes(ready.body))["checks"]
    with rt.db.transaction(write=False) as session:
        size = rt.ledger.size(session)
        latest = rt.ledger.latest_checkpoint(session)
        counted = session.execute(select(Job.state, func.count()).group_by(Job.state))
        job_counts: dict[Any, int] = {state: n for state, n in counted}  # noqa: C416 -- rows, not pairs
    return render(
        page,
        page.request,
        "operator.html",
        orgs=orgs.items,
        checks=checks,
        ledger_size=size,
        latest=latest,
        job_counts={str(k.value if hasattr(k, "value") else k): v for k, v in job_counts.items()},
        roles=[r.value for r in Role],
    )


@router.post("/operator/orgs")
def operator_create_org(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    body = OrgCreate.model_validate(
        {"name": one(form, "name"), "role": one(form, "role"), "uscc": one(form, "uscc") or None}
    )
    created = call(page, identity.create_org, body, page.caller, rt)
    # shown once, here: the operator delivers it out of band and the organisation mints its own first token
    return _org_page(page, rt, created.id, enrolment_code=created.enrolment_code, status_code=201)


def _org_page(
    page: Web,
    rt: RuntimeDep,
    org_id: str,
    issued: Any = None,
    status_code: int = 200,
    enrolment_code: str | None = None,
) -> Response:
    org = call(page, identity.get_org, org_id, page.caller, rt)
    tokens = call(page, identity.list_tokens, org_id, page.caller, rt)
    # a bank's or a subject's credentials are its own (issue 24): the operator neither issues nor revokes them
    may_manage = org.id == page.caller.org_id or org.role not in SELF_CREDENTIALED
    return render(
        page,
        page.request,
        "org.html",
        status_code=status_code,
        flash=_flash(page.request),
        org=org,
        tokens=sorted(tokens, key=lambda t: t.created_at, reverse=True),
        issued=issued,
        enrolment_code=enrolment_code,
        may_manage=may_manage,
        default_ttl=rt.settings.token_ttl_days,
        expires_by=page.token_expires_at,
    )


@router.get("/orgs/{org_id}", response_class=HTMLResponse)
def org_page(org_id: Annotated[str, Path(max_length=40)], page: WebDep, rt: RuntimeDep) -> Response:
    return _org_page(page, rt, org_id)


@router.post("/orgs/{org_id}/tokens", response_class=HTMLResponse)
def org_issue_token(
    org_id: Annotated[str, Path(max_length=40)], page: WebDep, rt: RuntimeDep, form: FormDep
) -> Response:
    """Issue a token, only after re-authentication: a session cookie alone must not yield a credential.

    The person types a valid API token of the session's organisation again, and the new token expires no
    later than the token the session was opened with, so a page never extends a credential's lifetime.
    """
    guard(page, identity.issue_token)
    reauthenticate(page, rt, one(form, "current_token"))
    ttl = one(form, "ttl_days")
    body = TokenIssue.model_validate(
        {"label": one(form, "label"), "ttl_days": int(ttl) if ttl.isdigit() else (ttl or None)}
    )
    issued = identity.issue_token_until(org_id, body, page.caller, rt, expires_by=page.token_expires_at)
    return _org_page(page, rt, org_id, issued=issued, status_code=201)


@router.post("/tokens/{token_id}/revoke")
def token_revoke(
    token_id: Annotated[str, Path(max_length=40)], page: WebDep, rt: RuntimeDep, form: FormDep
) -> Response:
    revoked = call(page, identity.revoke_token, token_id, page.caller, rt)
    return redirect(f"{PREFIX}/orgs/{revoked.org_id}", done="token_revoked")


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(page: WebDep, rt: RuntimeDep) -> Response:
    found = call(page, datasets.list_datasets, page.caller, rt, limit=rt.settings.page_size_max, after=None)
    return render(page, page.request, "datasets.html", datasets=found.items, names=_org_names(rt))


@router.get("/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(dataset_id: Annotated[str, Path(max_length=40)], page: WebDep, rt: RuntimeDep) -> Response:
    ds = call(page, datasets.get_dataset, dataset_id, page.caller, rt)
    lineage = call(
        page, datasets.lineage, dataset_id, page.caller, rt, limit=rt.settings.page_size_max, after=None
    )
    return render(page, page.request, "dataset.html", ds=ds, lineage=lineage.items, names=_org_names(rt))
