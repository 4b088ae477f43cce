"""Sealed datasets, the bank's half of what it exchanges with the enclave: the context quote's report nonce, the
score request it provisions, and the check and decryption of the score release.

The enclave's half (key pairs, aggregates, scores) is ``enclave_sim.sealed``, whose docstring says who learns
what; both halves are defined against the constants here. A bank:

1. fetches the enclave's public contexts with a quote whose nonce is :func:`report_nonce` of the context ids and
   a nonce of its own, and verifies the quote (:mod:`pps_wire.quote`) against that;
2. provisions to that quote (:func:`encrypt_score_request`, job :data:`SCORES_JOB`, slot :data:`SCORES_SLOT`)
   its output policy — release :data:`SCORES_OUTPUT` to its X25519 recipient key, under a result key — and the
   body :func:`score_request` (context id, dataset id, SHA-256 of the subjects it asks for);
3. checks that the release came unaltered from that enclave, for that query, and decrypts it (:func:`open_scores`).

Loaded by the enclave as measured code and used by the client SDK; tenseal only inside :func:`plain_modulus_of`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from pps_wire.enclave_errors import ProvisioningError
from pps_wire.provision import OutputPolicy, canonical, encrypt_for_enclave, open_release
from pps_wire.quote import NONCE_BYTES, QuotePolicy

REPORT_CONTEXT = b"PPS-SEALED-CONTEXT-v1\x00"
REPORT_CONTEXTS = b"PPS-SEALED-CONTEXT-v2\x00"
"""The label of a quote that binds both key pairs: the CKKS context id, then the BFV one."""
SCORES_JOB = "sealed.scores"
"""The provisioning job name of a score request (:func:`pps_wire.provision.encrypt_for_enclave`, slot ``bank``)."""
SCORES_SLOT = "bank"
SCORES_OUTPUT = "scores"


def report_nonce(context_id: str, nonce: bytes, bfv_context_id: str | None = None) -> bytes:
    """The nonce a context quote carries: binds the verifier's ``nonce`` and the context id (hex SHA-256 of the
    public CKKS context) — and, when the enclave holds a BFV key pair next to it, the BFV context id too:
    ``SHA-256("PPS-SEALED-CONTEXT-v2" || 0x00 || CKKS id || BFV id || nonce)``. A quote for one pair does not
    verify for the other, nor for the CKKS context alone."""
    cid = bytes.fromhex(context_id)
    if len(cid) != 32 or len(nonce) != NONCE_BYTES:
        raise ValueError("a context id is 32 bytes and a nonce 32 bytes")
    if bfv_context_id is None:
        return hashlib.sha256(REPORT_CONTEXT + cid + nonce).digest()
    bid = bytes.fromhex(bfv_context_id)
    if len(bid) != 32:
        raise ValueError("a BFV context id is 32 bytes")
    return hashlib.sha256(REPORT_CONTEXTS + cid + bid + nonce).digest()


def subjects_digest(subjects: Sequence[str]) -> str:
    """Hex SHA-256 of the canonical JSON list of the subjects a bank asked to score, in its order."""
    return hashlib.sha256(canonical(list(subjects))).hexdigest()


def score_request(*, context_id: str, dataset_id: str, subjects: Sequence[str]) -> bytes:
    """The body a bank provisions with its output policy: what its score release must answer."""
    return canonical(
        {
            "v": 1,
            "context_id": context_id,
            "dataset_id": dataset_id,
            "subjects_sha256": subjects_digest(subjects),
        }
    )


def encrypt_score_request(
    quote: bytes,
    policy: QuotePolicy,
    *,
    vendor_key: Ed25519PublicKey,
    output: OutputPolicy,
    context_id: str,
    dataset_id: str,
    subjects: Sequence[str],
) -> bytes:
    """The bank's side: verify the context ``quote`` (``policy``: trusted builds and the report nonce, see
    :func:`report_nonce`), then encrypt the score request — ``output`` (release ``scores``, the bank's recipient
    key, its result key) and :func:`score_request` — to that enclave instance and quote."""
    if output.release != (SCORES_OUTPUT,) or output.recipient_key is None:
        raise ValueError(f"a score request releases exactly {SCORES_OUTPUT!r} to a recipient key")
    return encrypt_for_enclave(
        quote,
        policy,
        vendor_key=vendor_key,
        job=SCORES_JOB,
        slot=SCORES_SLOT,
        body=score_request(context_id=context_id, dataset_id=dataset_id, subjects=subjects),
        output=output,
    )


def open_scores(
    release: bytes,
    key: X25519PrivateKey,
    *,
    result_key: bytes,
    quote_hash: bytes,
    query_id: str,
    dataset_id: str,
    subjects: Sequence[str],
) -> dict[str, float]:
    """The bank's side: check that a score release came unaltered from the enclave it provisioned (the tag under
    its ``result_key``, the quote it verified), answers its query (``query_id``, ``dataset_id``, the list of
    ``subjects`` it asked for), then decrypt it with its X25519 key. Returns ``{subject: noisy score}``."""
    opened = open_release(release, result_key=result_key, recipient=key)
    out = opened["outputs"]
    if opened["job"] != SCORES_JOB or opened["quote_hash"] != quote_hash.hex():
        raise ProvisioningError("the release answers another job or another quote")
    if (
        out.get("query_id") != query_id
        or out.get("dataset_id") != dataset_id
        or out.get("subjects_sha256") != subjects_digest(subjects)
    ):
        raise ProvisioningError("the score release is not for this query")
    who, scores = out.get("subjects"), out.get(SCORES_OUTPUT)
    if not isinstance(who, list) or not isinstance(scores, list) or len(who) != len(scores):
        raise ProvisioningError("the score release does not pair subjects with scores")
    if not set(who) <= set(subjects) or len(set(who)) != len(who):
        raise ProvisioningError("the score release names subjects this query did not ask for")
    return {str(u): float(v) for u, v in zip(who, scores, strict=True)}


def plain_modulus_of(context: Any) -> int:
    """The plain modulus ``t`` of a BFV context (TenSEAL does not expose SEAL's ``Modulus``): a batch encoding
    of -1 in every slot is the constant polynomial ``t - 1``."""
    import tenseal.sealapi as sealapi  # the he extra (imported here: the enclave loads this module first)

    sc = context.seal_context().data
    encoder = sealapi.BatchEncoder(sc)
    plain = sealapi.Plaintext()
    encoder.encode([-1] * encoder.slot_count(), plain)
    return int(plain[0]) + 1
