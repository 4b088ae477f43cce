"""Organisations, API tokens, enrolment, subject keys and break-glass."""

from __future__ import annotations

import builtins

from pps_client._client import dumps
from pps_client._resources._base import Resource
from pps_wire.schemas import (
    BreakGlassIn,
    BreakGlassPublic,
    EnrolIn,
    Enrolled,
    OrgCreate,
    OrgCreated,
    OrgDisable,
    OrgPublic,
    Role,
    SubjectKeyEnrol,
    SubjectKeyPublic,
    TokenIssue,
    TokenIssued,
    TokenPublic,
)
from pps_wire.subject_sign import SubjectKey, action_text, b64, enrolment_document


class Orgs(Resource):
    """Organisations: platform admins onboard and offboard them; everyone reads its own."""

    def create(self, name: str, role: Role | str, *, uscc: str | None = None) -> OrgCreated:
        """Onboard an organisation. The answer's ``enrolment_code`` is for the organisation alone: deliver it
        out of band; it redeems it with :meth:`enrol` for its first token."""
        body = OrgCreate(name=name, role=Role(role), uscc=uscc)
        return self._client._call("POST", "/v1/orgs", OrgCreated, json_body=dumps(body))

    def enrol(self, code: str, *, label: str = "enrolment", ttl_days: int | None = None) -> Enrolled:
        """Redeem a one-time enrolment code for the organisation's first API token (no token needed)."""
        body = EnrolIn(code=code, label=label, ttl_days=ttl_days)
        return self._client._call("POST", "/v1/enrol", Enrolled, json_body=dumps(body))

    def list(self, *, role: Role | str | None = None, limit: int | None = None) -> builtins.list[OrgPublic]:
        """Every organisation (following the pages; ``limit`` is the page size)."""
        params = {"role": Role(role).value if role is not None else None, "limit": limit}
        return self._client._pages("/v1/orgs", OrgPublic, params)

    def get(self, org_id: str) -> OrgPublic:
        return self._client._call("GET", f"/v1/orgs/{org_id}", OrgPublic)

    def disable(self, org_id: str, reason: str) -> OrgPublic:
        """Offboard an organisation: its tokens stop working, its consents end."""
        body = OrgDisable(reason=reason)
        return self._client._call("POST", f"/v1/orgs/{org_id}/disable", OrgPublic, json_body=dumps(body))


class Tokens(Resource):
    """API tokens: an organisation issues, lists and revokes its own."""

    def issue(self, org_id: str, *, label: str = "default", ttl_days: int | None = None) -> TokenIssued:
        """A new token (its secret, ``.token``, is shown only now)."""
        body = TokenIssue(label=label, ttl_days=ttl_days)
        return self._client._call("POST", f"/v1/orgs/{org_id}/tokens", TokenIssued, json_body=dumps(body))

    def list(self, org_id: str) -> builtins.list[TokenPublic]:
        return self._client._call_list("GET", f"/v1/orgs/{org_id}/tokens", TokenPublic)

    def revoke(self, token_id: str) -> TokenPublic:
        return self._client._call("DELETE", f"/v1/tokens/{token_id}", TokenPublic)


class SubjectKeys(Resource):
    """A subject's own consent-signing keys: generated and kept here, enrolled after the real-name step."""

    def enrol(
        self,
        key: SubjectKey,
        *,
        representative_name: str,
        representative_id: str,
        label: str = "default",
        endorse_with: SubjectKey | None = None,
    ) -> SubjectKeyPublic:
        """Enrol ``key`` (only its public half leaves). ``endorse_with``: for a rotation, an active key."""
        me = self._client.me().org  # not a subject: the service refuses by role
        text = action_text(
            enrolment_document(
                org_id=me.id, subject=me.uscc or "", algorithm=key.algorithm, public_key=key.public_key
            )
        )
        body = SubjectKeyEnrol.model_validate(
            {
                "algorithm": key.algorithm,
                "public_key": b64(key.public_key),
                "proof": b64(key.sign(text)),
                "label": label,
                "representative_name": representative_name,
                "representative_id": representative_id,
                "endorsement_key_id": endorse_with.key_id if endorse_with else None,
                "endorsement": b64(endorse_with.sign(text)) if endorse_with else None,
            }
        )
        return self._client._call("POST", "/v1/subject-keys", SubjectKeyPublic, json_body=dumps(body))

    def list(self) -> builtins.list[SubjectKeyPublic]:
        return self._client._call_list("GET", "/v1/subject-keys", SubjectKeyPublic)

    def revoke(self, key_id: str) -> SubjectKeyPublic:
        return self._client._call("DELETE", f"/v1/subject-keys/{key_id}", SubjectKeyPublic)


class BreakGlassActions(Resource):
    """Two-operator emergency actions on another organisation (they only take credentials away)."""

    def propose(self, org_id: str, action: str, reason: str) -> BreakGlassPublic:
        body = BreakGlassIn.model_validate({"org_id": org_id, "action": action, "reason": reason})
        return self._client._call("POST", "/v1/break-glass", BreakGlassPublic, json_body=dumps(body))

    def approve(self, bg_id: str) -> BreakGlassPublic:
        return self._client._call("POST", f"/v1/break-glass/{bg_id}/approve", BreakGlassPublic)

    def list(self) -> builtins.list[BreakGlassPublic]:
        return self._client._call_list("GET", "/v1/break-glass", BreakGlassPublic)
