"""The enterprise portal's passkeys: register one (after the real-name step), and sign consent with it.

A grant or an approval made in the portal is signed by the subject's passkey (WebAuthn): the page shows the
terms and the exact text to be signed, the browser asks the authenticator for an assertion whose challenge is
the text's SHA-256 (:mod:`pps_wire.passkey`), and the service checks it against the subject's enrolled
passkey before the consent exists. Registration is checked with py_webauthn against a one-time challenge the
page was given. The relying party is the host the portal is served on (a passkey made on one host does not
sign on another).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from webauthn import verify_registration_response
from webauthn.helpers import decode_credential_public_key
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import InvalidRegistrationResponse

from api.deps import RuntimeDep
from api.routers import consent, persons
from api.schemas import ConsentGrant, ConsentSigned
from pps.errors import InvalidInput, InvalidSubjectSignature, NotFound
from pps.governance.persons import SeparateGrant
from pps.identity.realname import Representative
from pps.infra.storage.tables import Organization, Role, SubjectKey
from pps_wire.errors import ProofVerificationError
from pps_wire.passkey import ALGORITHM, b64url, unb64url, verify_assertion
from pps_wire.schemas.persons import PersonConsentGrant
from pps_wire.subject_sign import action_document, action_text, parse_action_text

from .core import PREFIX, FormDep, PageRoute, WebDep, call, one, redirect, render, require

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=PageRoute)

_CHALLENGE_TTL_S = 300
_challenges: dict[str, tuple[bytes, float]] = {}
"""Registration challenges by page session (its CSRF token), in this process; one use, five minutes."""


def relying_party(request: Request) -> tuple[str, str]:
    """The relying party id (the host name) and the origin the portal is served on."""
    url = request.url
    origin = f"{url.scheme}://{url.netloc}"
    return url.hostname or "localhost", origin


def _passkeys(rt: Any, uscc: str) -> list[SubjectKey]:
    with rt.db.transaction(write=False) as session:
        return [k for k in rt.keys.active_keys(session, uscc) if k.algorithm == ALGORITHM]


@router.get("/subject/keys")
def subject_keys(page: WebDep, rt: RuntimeDep) -> Response:
    require(page, Role.subject)
    with rt.db.transaction(write=False) as session:
        keys = rt.keys.keys(session, page.caller.uscc or "")
    flash = page.request.query_params.get("done")
    return render(
        page,
        page.request,
        "subject_keys.html",
        keys=keys,
        flash=("ok", page.t(flash)) if flash in ("passkey_enrolled",) else None,
    )


@router.get("/subject/passkey/options")
def passkey_options(page: WebDep) -> JSONResponse:
    """The options of ``navigator.credentials.create`` (ES256, no attestation), with a one-time challenge."""
    require(page, Role.subject)
    rp_id, _ = relying_party(page.request)
    challenge = secrets.token_bytes(32)
    now = time.monotonic()
    for stale in [k for k, (_, t) in _challenges.items() if t < now]:
        _challenges.pop(stale, None)
    _challenges[page.csrf] = (challenge, now + _CHALLENGE_TTL_S)
    return JSONResponse(
        {
            "challenge": b64url(challenge),
            "rp": {"id": rp_id, "name": "PPS data safe-room"},
            "user": {
                "id": b64url(page.caller.org_id.encode()),
                "name": page.caller.uscc or page.caller.org_id,
                "displayName": page.caller.name,
            },
            "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
            "attestation": "none",
            "authenticatorSelection": {"residentKey": "preferred", "userVerification": "preferred"},
            "timeout": 120_000,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.post("/subject/passkey")
def passkey_register(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    require(page, Role.subject)
    stored = _challenges.pop(page.csrf, None)
    if stored is None or stored[1] < time.monotonic():
        raise InvalidInput("the passkey registration expired or was not started here; try again")
    rp_id, origin = relying_party(page.request)
    try:
        verified = verify_registration_response(
            credential=one(form, "credential"),
            expected_challenge=stored[0],
            expected_rp_id=rp_id,
            expected_origin=origin,
            supported_pub_key_algs=[COSEAlgorithmIdentifier.ECDSA_SHA_256],
        )
    except (InvalidRegistrationResponse, ValueError) as exc:
        raise InvalidInput(f"the passkey registration does not verify: {exc}") from None
    cose = decode_credential_public_key(verified.credential_public_key)
    x, y = getattr(cose, "x", None), getattr(cose, "y", None)
    if not isinstance(x, bytes) or not isinstance(y, bytes):
        raise InvalidInput("only P-256 (ES256) passkeys are accepted")
    with rt.db.transaction() as session:
        org = session.get(Organization, page.caller.org_id)
        if org is None:
            raise NotFound("your organisation does not exist")
        rt.keys.enrol_passkey(
            session,
            org=org,
            public_key=b"\x04" + x + y,
            credential_id=b64url(verified.credential_id),
            representative=Representative(one(form, "representative_name"), one(form, "representative_id")),
            actor=page.caller.actor,
            label=one(form, "label") or "passkey",
        )
    return redirect(f"{PREFIX}/subject/keys", done="passkey_enrolled")


def sign_page(page: Any, rt: Any, document: dict[str, Any], summary: dict[str, Any]) -> Response:
    """The page that shows the terms and has the subject's passkey sign their exact text."""
    keys = _passkeys(rt, page.caller.uscc or "")
    if not keys:
        raise InvalidSubjectSignature(
            "consent is signed by your own key: register a passkey first (My keys), or sign with "
            "`pps-client consent grant|approve --key ...`"
        )
    text = action_text(document)
    return render(
        page,
        page.request,
        "subject_sign.html",
        summary=summary,
        text=text,
        text_b64=base64.b64encode(text.encode()).decode(),
        credentials=json.dumps([k.credential_id for k in keys]),
    )


def grant_to_sign(page: Any, rt: Any, body: ConsentGrant) -> Response:
    document = action_document(
        action="grant",
        subject=page.caller.uscc or "",
        bank=body.bank_org_id,
        purpose=body.purpose,
        scope=[i.model_dump() for i in body.scope],
        operations=body.operations,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        max_uses=body.max_uses,
        granularity=body.granularity,
    )
    return sign_page(page, rt, document, {"action": "grant", "bank": body.bank_org_id, **body.model_dump()})


def person_grant_to_sign(page: Any, rt: Any, body: PersonConsentGrant) -> Response:
    """A person's grant: the terms and its separate grants, checked first (a missing grant is named before
    anything is signed), then signed together by the person's passkey."""
    separate = SeparateGrant(
        body.separate.provide_to_bank, body.separate.sensitive_fields, body.separate.warning_sha256
    )
    with rt.db.transaction(write=False) as session:
        rt.consents._bank(session, body.bank_org_id)
        rt.person_rules.check_separate(
            session, body.bank_org_id, body.purpose, [i.model_dump() for i in body.scope], separate
        )
    document = action_document(
        action="grant",
        subject=page.caller.uscc or "",
        bank=body.bank_org_id,
        purpose=body.purpose,
        scope=[i.model_dump() for i in body.scope],
        operations=body.operations,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        max_uses=body.max_uses,
        granularity=body.granularity,
        separate=separate.signed_form(),
    )
    return sign_page(page, rt, document, {"action": "grant", "bank": body.bank_org_id, **body.model_dump()})


def approval_to_sign(page: Any, rt: Any, consent_id: str) -> Response:
    with rt.db.transaction(write=False) as session:
        row = consent._own(rt, session, page.caller, consent_id)
        document = rt.consents.signing_document(row, "approve")
        summary = {"action": "approve", "bank": row.bank_org_id, "purpose": row.purpose, "consent": row.id}
    return sign_page(page, rt, document, summary)


@router.post("/subject/consents/signed")
def subject_signed(page: WebDep, rt: RuntimeDep, form: FormDep) -> Response:
    """The passkey's assertion over a grant or an approval: checked, then the consent action is made."""
    require(page, Role.subject)
    try:
        text = base64.b64decode(one(form, "text_b64"), validate=True).decode()
        doc = parse_action_text(text)
        assertion = json.loads(one(form, "assertion") or "null")
        if not isinstance(assertion, dict):
            raise ValueError
        raw = json.dumps(assertion, sort_keys=True).encode()
    except (ValueError, ProofVerificationError):
        raise InvalidInput("the signed consent form is incomplete; sign again") from None
    credential = one(form, "credential_id")
    with rt.db.transaction(write=False) as session:
        key = session.execute(
            select(SubjectKey).where(SubjectKey.credential_id == b64url(unb64url(credential, "credential")))
        ).scalar_one_or_none()
    if key is None or key.subject_uscc != page.caller.uscc:
        raise InvalidSubjectSignature("this passkey is not one you enrolled")
    rp_id, origin = relying_party(page.request)
    try:
        verify_assertion(key.public_key, text, raw, rp_id=rp_id, origin=origin)
    except ProofVerificationError as exc:
        raise InvalidSubjectSignature(str(exc)) from None
    signature = {"text": text, "key_id": key.key_id, "signature": base64.b64encode(raw).decode()}
    if doc["action"] == "grant":
        terms = {
            "bank_org_id": doc["bank"],
            "purpose": doc["purpose"],
            "scope": doc["scope"],
            "operations": doc["operations"],
            "valid_from": doc["valid_from"],
            "valid_until": doc["valid_until"],
            "max_uses": doc["max_uses"],
            "granularity": doc.get("granularity"),
            "signature": signature,
        }
        if "separate" in doc:  # a person's grant, with the separate grants it signed
            person_body = PersonConsentGrant.model_validate({**terms, "separate": doc["separate"]})
            call(page, persons.grant, person_body, page.caller, rt)
            return redirect(f"{PREFIX}/person", done="person_done_granted")
        call(page, consent.grant, ConsentGrant.model_validate(terms), page.caller, rt)
        return redirect(f"{PREFIX}/subject", done="consent_granted")
    if doc["action"] == "approve":
        call(
            page, consent.approve, str(doc["consent_id"]), page.caller, rt, ConsentSigned(signature=signature)
        )
        return redirect(f"{PREFIX}/subject", done="consent_approved")
    raise InvalidInput("only a grant or an approval is signed here")
