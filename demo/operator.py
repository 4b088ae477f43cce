"""The demo's step 3b: the operator's powers are bounded and seen (issue 24).

The operator runs the service: it onboards organisations, but it cannot act as one. Shown here with only the
documented API, as a dishonest operator would try it: it cannot mint or revoke a bank's token, cannot give
consent in an enterprise's name (a consent is signed by the enterprise's own key), every refused attempt is a
ledger entry in the affected organisation's own history, and an emergency action needs a second operator.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rich.console import Console

from pps.infra.storage.tables import utcnow
from pps_client import AuthenticationError, Client, PermissionDenied
from pps_wire.schemas import OrgPublic
from pps_wire.subject_sign import SubjectKey

REP_IDS = (
    "11010519491231002X",
    "440524188001010014",
    "630102198503150011",
    "630104199002280018",
    "632123197812120018",
)
"""The demo enterprises' legal representatives' resident ID numbers (well formed, GB 11643; fictitious)."""


def operator_bounds(
    console: Console,
    checks: Any,
    admin: Client,
    anonymous: Client,
    orgs: dict[str, OrgPublic],
    enterprises: list[str],
    keys: dict[str, SubjectKey],
    tokens: dict[str, str],
    url: str,
) -> None:
    console.rule("[bold]3b. The operator onboards organisations but cannot act as one")
    bank_a = Client(url, tokens["Bank A"])
    checks.refused(
        "the operator cannot mint a token for Bank A",
        PermissionDenied,
        "operator_bounded",
        lambda: admin.tokens.issue(orgs["Bank A"].id, label="shadow"),
    )
    checks.refused(
        "the operator cannot revoke Bank A's token alone",
        PermissionDenied,
        "operator_bounded",
        lambda: admin.tokens.revoke(bank_a.me().token_id),
    )
    checks.refused(
        "the operator cannot mint a token for Enterprise 5",
        PermissionDenied,
        "operator_bounded",
        lambda: admin.tokens.issue(orgs["Enterprise 5"].id, label="shadow"),
    )
    # the shadow bank: a bank the operator onboards and enrols itself, then asks an enterprise for consent
    shadow_org = admin.orgs.create("Shadow bank", "bank")
    shadow = Client(url, anonymous.orgs.enrol(shadow_org.enrolment_code).token.token)
    terms: dict[str, Any] = {
        "purpose": "loan_underwriting",
        "scope": [],
        "operations": ["psi"],
        "valid_until": utcnow() + timedelta(days=30),
    }
    catalogue = shadow.datasets.catalog()
    terms["scope"] = {catalogue[0].id: [catalogue[0].columns[-1].name]}
    asked = shadow.consents.request(enterprises[4], **terms)
    forged_key = SubjectKey.generate()
    checks.refused(
        "the operator cannot grant consent to its shadow bank in Enterprise 5's name",
        PermissionDenied,
        "role_not_allowed",
        lambda: admin.consents.approve(asked.id, key=forged_key),
    )
    decided = shadow.consents.check([enterprises[4]], fields={}, operation="psi", purpose="loan_underwriting")
    checks.check(
        "so the shadow bank may use nothing of Enterprise 5",
        decided.allowed == 0,
        f"{decided.decisions[0].reason}: {decided.decisions[0].detail}",
    )
    seen = [i.entry for i in bank_a.ledger.mine().items if i.entry["action"] == "operator.refused"]
    checks.check(
        "every refused attempt on Bank A is a ledger entry in Bank A's own history",
        len(seen) == 2,
        f"{len(seen)} entries",
    )
    second = admin.orgs.create("Second operator", "platform_admin")
    operator_2 = Client(url, anonymous.orgs.enrol(second.enrolment_code).token.token)
    proposal = admin.break_glass.propose(
        shadow_org.id, "disable_org", "an unexplained bank onboarded by one operator"
    )
    checks.refused(
        "break-glass: the proposing operator cannot approve its own proposal",
        PermissionDenied,
        "operator_bounded",
        lambda: admin.break_glass.approve(proposal.id),
    )
    operator_2.break_glass.approve(proposal.id)
    checks.refused(
        "a second operator approves it: the shadow bank is offboarded, its token stops",
        AuthenticationError,
        "invalid_token",
        shadow.me,
    )
    del keys  # the enterprises' keys never reached the platform: nothing the operator holds can sign for them
