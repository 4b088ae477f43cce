"""Why a subject was not scored, matched or counted: each reason code the service gives, what it means, and
what to do about it. Shared by the server (its policy engine's reasons must all be here), the SDK and the
``pps-client`` command line (which prints the advice), and the docs (``docs/reasons.md`` is checked against
this table by the tests)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["REASONS", "Reason", "advice"]


class Reason(NamedTuple):
    meaning: str
    what_to_do: str


REASONS: dict[str, Reason] = {
    "no_grant": Reason(
        "the enterprise has given your organisation no consent for this purpose",
        "ask it for consent (`pps-client consent request`); it approves in its portal",
    ),
    "pending": Reason(
        "your consent request is waiting for the enterprise's approval",
        "wait for the enterprise to approve it in its portal, then run the job again",
    ),
    "denied": Reason(
        "the enterprise refused your consent request",
        "do not ask again for the same terms; talk to the enterprise",
    ),
    "revoked": Reason(
        "the enterprise revoked its consent",
        "its data can no longer be used; ask for a new consent only with a new reason",
    ),
    "expired": Reason(
        "the consent's validity period has ended",
        "ask the enterprise for a new consent",
    ),
    "not_yet_valid": Reason(
        "the consent starts later than now",
        "run the job after the consent's start date",
    ),
    "operation_not_covered": Reason(
        "the consent does not cover this operation (score, psi, aggregate, train, ...)",
        "ask for a consent that names the operation",
    ),
    "field_not_covered": Reason(
        "the consent does not cover every dataset field the request reads (the detail names them)",
        "ask for a consent covering those fields' datasets, or drop the features that read them",
    ),
    "uses_exhausted": Reason(
        "the consent's maximum number of uses is spent",
        "ask the enterprise for a new consent with more uses",
    ),
    "class_c3": Reason(
        "the request reads a class C3 field, which is never released",
        "remove the features that read it; no consent can allow it",
    ),
    "no_data": Reason(
        "the platform holds no record for this enterprise",
        "check the code; the enterprise may not be on the platform yet",
    ),
}
"""Reason code → what it means and what to do (in the words a bank's analyst reads)."""


def advice(code: str) -> str:
    """One line for a reason code: its meaning and what to do; unknown codes are named as such."""
    reason = REASONS.get(code)
    if reason is None:
        return f"{code}: see the detail the service gave"
    return f"{code}: {reason.meaning} — {reason.what_to_do}"
