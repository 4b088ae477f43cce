"""Organisations and API tokens."""

from __future__ import annotations

import builtins

from pps_client._client import dumps
from pps_client._resources._base import Resource
from pps_wire.schemas import OrgCreate, OrgDisable, OrgPublic, Role, TokenIssue, TokenIssued, TokenPublic


class Orgs(Resource):
    """Organisations: platform admins onboard and offboard them; everyone reads its own."""

    def create(self, name: str, role: Role | str, *, uscc: str | None = None) -> OrgPublic:
        body = OrgCreate(name=name, role=Role(role), uscc=uscc)
        return self._client._call("POST", "/v1/orgs", OrgPublic, json_body=dumps(body))

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
