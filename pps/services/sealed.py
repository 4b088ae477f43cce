"""Sealed datasets: provider columns under homomorphic encryption whose secret key lives only in the enclave.

Protocol (the enclave's half is :mod:`enclave_sim.sealed`)::

    provider                         safe-room host (this service)                 enclave
    --------                         -----------------------------                 -------
                                     ensure_context() ---------- he_keygen ------> CKKS + BFV key pairs; sealed
    GET /v1/sealed/context?nonce --> context_quote() ----------- he_quote -------> quote, nonce' = H(ctx id, nonce)
    verify quote (measurement, freshness, nonce' binds SHA-256 of the public CKKS and BFV contexts)
    clip each column to [lower, upper], encrypt column-major: one ciphertext per column and block of N/2
    subjects (slot r of block b = subject b*N/2 + r); a column declared integer: values checked to be integers
    in [lower, upper] (refused otherwise), the sum bound checked against the plain modulus, BFV vectors
    POST /v1/sealed/datasets ------> upload(): refuses a stale/foreign context id, a ciphertext of the wrong
                                     shape, level, scale, ring or scheme (SEAL checks it in an isolated
                                     worker), all before anything is stored
    bank: POST /v1/sealed/aggregates -> aggregate(): consent (admit) + C1 filters -> plaintext 0/1 mask;
                                     differencing control (the aggregates' released cohorts);
                                     sum_b mask_b * X_b, rotate-and-sum ----- he_aggregate -> checks the
                                     ciphertext is a sum (all slots equal), min cohort, OpenDP noise
                                     budget row locked, differencing again, consent again (release),
                                     budget spent, cohort remembered, ledger
    bank: fresh context quote, verified; weights W_j encrypted under the public context; its score request
          (recipient key, result key; context, dataset, subjects digest) provisioned to that quote
    bank: POST /v1/sealed/scoring --> score(): per block: sum_j W_j * X_j,b (ciphertext x ciphertext)
                                     ------------------------------------ he_scores -> opens the bank's
                                     request once, checks what it binds, decrypts only the listed slots,
                                     adds noise, releases to the provisioned key (tagged)
                                     consent again (release), ledger; the bank checks and opens it

Who learns what, under which assumptions
----------------------------------------
* **Assumptions.** The enclave build is the published one (its quote verifies against the expected
  measurement) and the simulated hardware keeps its memory (see ``enclave_sim.host``: here, process
  isolation only). The host (operator) is semi-honest: it runs this code as written — in particular it
  builds the cohort masks and the subject lists from consent — and may look at everything it stores.
  CKKS at >= 128-bit security (SEAL's tc128 check in the enclave and in :func:`check_public_context`).
* **The operator / host learns** the subject keys (USCCs: consent is by subject), the C1 attributes the
  provider left in the clear, the column names and clipping bounds, the number of subjects, and the sizes of
  everything; the noisy aggregates it releases to a bank; never a feature value, a weight or a score (it
  holds only ciphertexts under a key it does not have, and score releases are HPKE-encrypted to the bank).
* **The bank learns** what an ordinary dataset would give it: noisy aggregates over cohorts of at least the
  minimum size (budget spent), and noisy scores of its consented subjects (only those whose consent allows
  ``score``), computed inside the enclave from the columns on their published grid (:data:`GRID_LEVELS`) by
  a model that passed the published model policy on this dataset's distribution, counted against each
  subject's disclosure budget. Its weights are encrypted under the enclave's public context, so it cannot
  read them back either (nor can anyone else outside the enclave).
* **The enclave learns** the decrypted aggregates, the listed subjects' scores, the bank's weights and the
  scored columns (to check the model and score at the grid); none of them leaves except as a result:
  ``he_aggregate`` refuses a ciphertext whose slots differ, ``he_scores`` one at the top level.
* **The recipient key** of a score release reaches the enclave only inside the bank's provisioned request;
  the host cannot substitute it (the enclave refuses), nor reuse the request for another dataset or subjects.
* **Residual risks.** The enclave cannot tell how the host built a mask or a score ciphertext, nor who a
  provisioning party is: a malicious operator could get a single subject's noised value released as an
  "aggregate" of a claimed large cohort (the DP noise, calibrated to the clipping bounds, still bounds what
  one release says about one subject), or pose as a bank with a request and key of its own.
  ``docs/security.md`` discusses them.

Integer columns: BFV, exact. A column the provider declares integer is sealed under the enclave's BFV pair and
its aggregates are exact before the enclave's (discrete) noise; scoring refuses it (weights are reals, CKKS only).
A context made before BFV (``bfv_context_id`` null) takes no integer columns: rotate.

Rotation (:meth:`SealedService.rotate`) is explicit: new key pairs (CKKS and BFV) get new context ids, the old one is
retired (uploads under it refused), every dataset under it is marked ``needs_reupload``, and the ledger
records it — nothing is re-encrypted silently (the host cannot: it has no key).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tenseal as ts
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from enclave_sim import errors as ee
from enclave_sim.host import EnclaveHost
from enclave_sim.model_check import ModelPolicy
from enclave_sim.sealed import DEFAULT_PLAIN_MODULUS_BITS, MAX_PROVISION
from pps.data.datasets.schema import DatasetSchema
from pps.data.datasets.service import DatasetService
from pps.errors import (
    BudgetExhausted,
    Conflict,
    InvalidInput,
    ModelRefused,
    NotFound,
    OutputPolicyViolation,
    PayloadTooLarge,
    Refused,
    translate,
)
from pps.governance.consent import check_purpose
from pps.governance.disclosure import DisclosureAccounting, granularity_of
from pps.governance.policy import PolicyEngine, Request
from pps.governance.release import Gate
from pps.identity.uscc import validate_uscc
from pps.infra.storage.db import Database
from pps.infra.storage.tables import Dataset, SealedBlock, SealedContext, SealedDataset, new_id, utcnow
from pps.infra.text import check_name
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release
from pps.ledger.store import Ledger
from pps.services.aggregates import AggregateService
from pps.services.enclave import EnclaveService
from pps_wire.quote import NONCE_BYTES, Quote
from pps_wire.sealed import plain_modulus_of
from protocols import he_scoring as hs
from protocols.he_isolation import IsolatedWorker

DEFAULT_PARAMS: dict[str, Any] = {
    "poly_modulus_degree": 8192,
    "coeff_mod_bit_sizes": [60, 40, 40, 60],
    "scale_bits": 40,
    "plain_modulus_bits": DEFAULT_PLAIN_MODULUS_BITS,
}
"""CKKS: one multiplication deep (weight x feature, or mask x feature) with 100 bits left after it: sums up to
2^59. BFV (exact integer columns): the same N, SEAL's 128-bit default coefficient modulus, and a 40-bit batching
prime as plain modulus (t = 1099511480321): exact sums up to (t - 1) / 2 ~ 5.5e11 in magnitude, which upload
enforces (subjects x the larger bound)."""
MAX_SUBJECTS = 200_000
MAX_COLUMNS = 64
MAX_ATTRIBUTE_VALUE = 64
DEFAULT_MIN_COHORT = 10
DEFAULT_SCORE_NOISE_STD = 2.0**-16
MICRO = 1_000_000
GRID_LEVELS = 100
"""A sealed real column's published resolution is its clipping range over this many steps (1 % of the range):
sealed scores are computed from the values on that grid, inside the enclave, as ordinary features are rounded
to theirs (:data:`models.features.FEATURE_RESOLUTION`) — a sealed column yields no more than an ordinary one."""


def grid_step(lower: float, upper: float) -> float:
    """The published resolution of a sealed real column clipped to ``[lower, upper]``."""
    return (upper - lower) / GRID_LEVELS


def column_resolution(meta: Mapping[str, Any]) -> float:
    """The published resolution of a stored column (``columns_json`` entry); integer columns: 1."""
    if meta.get("type") == "integer":
        return 1.0
    return float(meta.get("resolution") or grid_step(float(meta["lower"]), float(meta["upper"])))


_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
SERVICE = Actor(None, "service", "sealed")
ENCLAVE = Actor(None, "service", "enclave")


class StaleContext(Conflict):
    """The ciphertexts were made under a context that is not the enclave's active one (rotated away, or foreign)."""

    code = "stale_context"


class InvalidSealedData(InvalidInput):
    """A sealed upload or an encrypted weight does not have the shape, level, scale or ring it must have."""

    code = "invalid_sealed_data"


class NeedsReupload(Conflict):
    """The dataset was encrypted under a retired context: the provider must encrypt it again."""

    code = "needs_reupload"


@dataclass(frozen=True)
class SealedColumn:
    lower: float
    upper: float
    blocks: tuple[bytes, ...]
    integer: bool = False
    """declared integer: BFV vectors (exact), integer bounds; otherwise CKKS vectors (reals)"""


BFV_MAX_CIPHERTEXT_BYTES = 16384 * 2 * 8 * 8 + 4096
"""A BFV vector of the sealed context at most: two polynomials of N <= 16384 coefficients over at most 8 primes."""
_checker_lock = threading.Lock()
_checker: IsolatedWorker | None = None
_checked_contexts: dict[str, Any] = {}


def _bfv_checker() -> IsolatedWorker:
    global _checker
    with _checker_lock:
        if _checker is None:
            _checker = IsolatedWorker(__name__)
        return _checker


def _isolated_check_bfv(args: dict[str, Any], blobs: list[bytes]) -> list[dict[str, Any]]:
    """In the isolated checker: load the public BFV context ``blobs[0]``, then each BFV vector ``blobs[1:]``
    under it (SEAL checks the ciphertext is valid for these parameters: ring, primes, plain modulus), and
    describe it."""
    key = hashlib.sha256(blobs[0]).hexdigest()
    ctx = _checked_contexts.get(key)
    if ctx is None:
        _checked_contexts.clear()
        ctx = _checked_contexts[key] = ts.context_from(blobs[0])
    sc = ctx.seal_context().data
    top = int(sc.first_context_data().chain_index())
    reports = []
    for i, blob in enumerate(blobs[1:]):
        try:
            vec = ts.bfv_vector_from(ctx, blob)
            cts = vec.ciphertext()
        except Exception as exc:
            raise ValueError(f"ciphertext {i}: {exc}") from None
        if len(cts) != 1:
            raise ValueError(f"ciphertext {i}: a block is one ciphertext")
        ct = cts[0]
        data = sc.get_context_data(ct.parms_id())
        reports.append(
            {
                "slots": int(vec.size()),
                "size": int(ct.size()),
                "ntt_form": bool(ct.is_ntt_form()),
                "transparent": bool(ct.is_transparent()),
                "chain_index": int(data.chain_index()) if data is not None else -1,
                "top": top,
            }
        )
    return reports


ISOLATED_OPERATIONS = {"check_bfv_ciphertexts": _isolated_check_bfv}
"""What :class:`protocols.he_isolation.IsolatedWorker` runs in the checker process for this module."""


@dataclass
class SealedService:
    db: Database
    ledger: Ledger
    policy: PolicyEngine
    enclave: EnclaveService
    datasets: DatasetService
    aggregates: AggregateService
    params: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PARAMS))
    min_cohort: int = DEFAULT_MIN_COHORT
    score_noise_std: float = DEFAULT_SCORE_NOISE_STD
    max_epsilon: float = 1.0
    model_policy: ModelPolicy | None = None
    """The published model policy the enclave checks every sealed-scoring model against (on the dataset's own
    distribution at the published grid) before any score; ``None`` only with ``unsafe_unapproved_models``."""
    disclosures: DisclosureAccounting = field(default_factory=DisclosureAccounting)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._loaded: dict[str, int] = {}
        """context id -> the enclave instance (``host.starts``) that holds its secret key"""
        self._public: dict[str, hs.PublicScoringContext] = {}
        self._eval: dict[str, Any] = {}

    # --- keys -----------------------------------------------------------------------------------------

    def _call(self, host: EnclaveHost, op: str, **fields: Any) -> dict[str, Any]:
        """An enclave operation whose refusals this service handles as PPS errors (an output-policy refusal is
        a :class:`Refused`, recorded as one)."""
        try:
            return host.call(op, **fields)
        except ee.EnclaveError as exc:
            raise translate(exc) or exc from None

    def active(self, session: Session) -> SealedContext | None:
        return session.execute(select(SealedContext).where(SealedContext.state == "active")).scalars().first()

    def _keygen(self) -> SealedContext:
        host = self.enclave.host()
        got = self._call(host, "he_keygen", params=self.params)
        row = SealedContext(
            id=str(got["context_id"]),
            state="active",
            params_json=json.dumps(self.params, sort_keys=True),
            public_context=base64.b64decode(got["public_context"]),
            eval_context=base64.b64decode(got["eval_context"]),
            sealed_secret=base64.b64decode(got["sealed"]),
            measurement=str(host.hello["measurement"]),
            created_at=utcnow(),
            retired_at=None,
            bfv_context_id=str(got["bfv_context_id"]),
            bfv_public_context=base64.b64decode(got["bfv_public_context"]),
            bfv_eval_context=base64.b64decode(got["bfv_eval_context"]),
            bfv_sealed_secret=base64.b64decode(got["bfv_sealed"]),
        )
        if hs.context_id_of(row.public_context) != row.id:
            raise InvalidInput("the enclave's context id is not the hash of its public context")
        assert row.bfv_public_context is not None
        if hashlib.sha256(row.bfv_public_context).hexdigest() != row.bfv_context_id:
            raise InvalidInput("the enclave's BFV context id is not the hash of its public BFV context")
        self._loaded[row.id] = host.starts
        return row

    def _record_key(self, session: Session, row: SealedContext, action: str, **extra: Any) -> None:
        self.ledger.append(
            session,
            EntryDraft(
                action=action,
                actor=ENCLAVE,
                objects=(ObjectRef("sealed_context", row.id),),
                detail={
                    "context_id": row.id,
                    "measurement": row.measurement,
                    "poly_modulus_degree": int(self.params["poly_modulus_degree"]),
                    "coeff_mod_bit_sizes": [int(b) for b in self.params["coeff_mod_bit_sizes"]],
                    "scale_bits": int(self.params["scale_bits"]),
                    "public_context_sha256": row.id,
                    "eval_context_sha256": hashlib.sha256(row.eval_context).hexdigest(),
                    "bfv_context_id": row.bfv_context_id,
                    "plain_modulus_bits": int(
                        self.params.get("plain_modulus_bits", DEFAULT_PLAIN_MODULUS_BITS)
                    ),
                    **extra,
                },
            ),
        )

    def ensure_context(self, *, request_id: str | None = None) -> SealedContext:
        """The active context, generated in the enclave on first use (a ``sealed.keygen`` entry)."""
        with self._lock:
            with self.db.transaction(write=False) as s:
                row = self.active(s)
                if row is not None:
                    s.expunge(row)
                    return row
            row = self._keygen()
            with self.db.transaction() as s:
                s.add(row)
                self._record_key(s, row, "sealed.keygen")
                s.flush()
                s.expunge(row)
            return row

    def rotate(self, *, actor: Actor, request_id: str | None = None) -> dict[str, Any]:
        """Rotate the enclave's HE key: a new context (new id); the old one retired, its datasets marked
        ``needs_reupload`` (providers encrypt again under the new one), all on the record. Nothing is
        re-encrypted: the host has no key to do it with."""
        with self._lock:
            new = self._keygen()
            with self.db.transaction() as s:
                old = self.active(s)
                marked: list[str] = []
                if old is not None:
                    old.state, old.retired_at = "retired", utcnow()
                    marked = list(
                        s.execute(
                            select(SealedDataset.dataset_id).where(
                                SealedDataset.context_id == old.id, SealedDataset.state == "ready"
                            )
                        ).scalars()
                    )
                    s.execute(
                        update(SealedDataset)
                        .where(SealedDataset.context_id == old.id)
                        .values(state="needs_reupload")
                        .execution_options(synchronize_session=False)
                    )
                s.flush()
                s.add(new)
                s.flush()
                self.ledger.append(
                    s,
                    EntryDraft(
                        action="sealed.rotate",
                        actor=actor,
                        objects=(
                            ObjectRef("sealed_context", new.id),
                            *((ObjectRef("sealed_context", old.id),) if old is not None else ()),
                        ),
                        request_id=request_id,
                        detail={
                            "new_context_id": new.id,
                            "old_context_id": old.id if old is not None else None,
                            "datasets_needing_reupload": sorted(marked),
                        },
                    ),
                )
                self._record_key(s, new, "sealed.keygen", rotated_from=old.id if old is not None else None)
            return {
                "context_id": new.id,
                "retired": old.id if old is not None else None,
                "needs_reupload": sorted(marked),
            }

    def _host_for(self, row: SealedContext) -> EnclaveHost:
        """The enclave, holding ``row``'s secret key (unsealed again after a restart)."""
        with self._lock:
            host = self.enclave.host()
            if self._loaded.get(row.id) != host.starts:
                bfv: dict[str, Any] = {}
                if row.bfv_context_id is not None and row.bfv_sealed_secret is not None:
                    bfv = {
                        "bfv_context_id": row.bfv_context_id,
                        "bfv_sealed": base64.b64encode(row.bfv_sealed_secret).decode(),
                    }
                self._call(
                    host,
                    "he_load",
                    context_id=row.id,
                    sealed=base64.b64encode(row.sealed_secret).decode(),
                    **bfv,
                )
                self._loaded[row.id] = host.starts
            return host

    def public_context(self, row: SealedContext) -> hs.PublicScoringContext:
        with self._lock:
            ctx = self._public.get(row.id)
            if ctx is None:
                ctx = self._public[row.id] = hs.check_public_context(row.public_context)
            return ctx

    def _eval_context(self, row: SealedContext) -> Any:
        with self._lock:
            ctx = self._eval.get(row.id)
            if ctx is None:
                ctx = self._eval[row.id] = ts.context_from(row.eval_context)
            return ctx

    def _bfv_eval_context(self, row: SealedContext) -> Any:
        """The BFV pair's public key and Galois keys (what the host sums with); refused for a pre-BFV context."""
        if row.bfv_context_id is None or row.bfv_eval_context is None:
            raise StaleContext(
                f"context {row.id[:16]}... has no BFV key pair for exact integer columns (it predates them): "
                "rotate the enclave's key, then encrypt under the new context"
            )
        with self._lock:
            ctx = self._eval.get(row.bfv_context_id)
            if ctx is None:
                ctx = self._eval[row.bfv_context_id] = ts.context_from(row.bfv_eval_context)
            return ctx

    def plain_modulus(self, row: SealedContext) -> int:
        """The BFV plain modulus ``t`` of ``row``'s BFV pair: integer sums must stay within ``(t - 1) / 2``."""
        return plain_modulus_of(self._bfv_eval_context(row))

    def context_quote(self, nonce: bytes, *, actor: Actor, request_id: str | None = None) -> dict[str, Any]:
        """The active public context and a quote whose report data binds its hash and ``nonce`` (32 bytes)."""
        if len(nonce) != NONCE_BYTES:
            raise InvalidInput(f"nonce must be {NONCE_BYTES} bytes ({2 * NONCE_BYTES} hex characters)")
        row = self.ensure_context(request_id=request_id)
        host = self._host_for(row)
        quote = base64.b64decode(
            self._call(host, "he_quote", context_id=row.id, nonce=base64.b64encode(nonce).decode())["quote"]
        )
        q = Quote.parse(quote)
        with self.db.transaction() as s:
            self.ledger.append(
                s,
                EntryDraft(
                    action="sealed.quote",
                    actor=actor,
                    objects=(ObjectRef("sealed_context", row.id), ObjectRef("quote", q.quote_hash.hex())),
                    request_id=request_id,
                    detail={
                        "context_id": row.id,
                        "bfv_context_id": row.bfv_context_id,
                        "measurement": q.measurement.hex(),
                        "nonce": nonce.hex(),
                    },
                ),
            )
        return {
            "context_id": row.id,
            "public_context": row.public_context,
            "bfv_context_id": row.bfv_context_id,
            "bfv_public_context": row.bfv_public_context,
            "quote": quote,
            "params": json.loads(row.params_json),
        }

    # --- ciphertext checks ----------------------------------------------------------------------------

    def _check_fresh(
        self, ctx: hs.PublicScoringContext, blobs: Sequence[bytes], sizes: Sequence[int], what: str
    ) -> None:
        """Each blob is one fresh CKKS vector under ``ctx``: the ring and primes (SEAL loads it), the top level,
        the context's scale, ``sizes[i]`` meaningful slots. Checked in the isolated worker."""
        limit = ctx.max_ciphertext_bytes()
        seal_blobs = []
        for i, blob in enumerate(blobs):
            try:  # a linear walk over bytes already bounded by the request's size limit
                vec = hs.decode_ckks_vector(blob)
            except hs.InvalidCiphertext as exc:
                raise InvalidSealedData(f"{what} {i} is not a TenSEAL CKKS vector: {exc}") from None
            if vec.scale == 0.0:
                raise InvalidSealedData(
                    f"{what} {i} is not a CKKS vector (it has no scale: a BFV vector?); a column of reals is "
                    "CKKS, declare exact integer columns integer"
                )
            if len(blob) > limit:
                raise PayloadTooLarge(
                    f"{what} {i}: {len(blob)} bytes is more than a ciphertext of this context"
                )
            if vec.size != sizes[i]:
                raise InvalidSealedData(f"{what} {i} holds {vec.size} values; expected {sizes[i]}")
            if vec.scale != ctx.global_scale:
                raise InvalidSealedData(
                    f"{what} {i} has scale 2^{np.log2(max(vec.scale, 1)):.1f}, not the context's"
                )
            seal_blobs.append(vec.seal_bytes)
        reports = hs.run_isolated(
            None,
            "check_ciphertexts",
            {"poly_modulus_degree": ctx.poly_modulus_degree, "primes": list(ctx.primes)},
            seal_blobs,
            timeout_s=hs.DEFAULT_LIMITS.check_timeout_s,
            error=InvalidSealedData,
            what=f"the {what}s",
        )
        top = len(ctx.primes) - 2
        for i, r in enumerate(reports):
            if r["size"] != 2 or not r["ntt_form"] or r["transparent"]:
                raise InvalidSealedData(f"{what} {i} is not a fresh two-component CKKS ciphertext")
            if r["chain_index"] != top:
                raise InvalidSealedData(f"{what} {i} is at level {r['chain_index']}, not the top level {top}")
            if r["scale"] != ctx.global_scale:
                raise InvalidSealedData(f"{what} {i} has the wrong scale")

    def _check_bfv(self, row: SealedContext, blobs: Sequence[bytes], size: int, what: str) -> None:
        """Each blob is one fresh BFV vector of ``size`` slots under ``row``'s BFV pair: a TenSEAL BFV vector
        (no scale: a CKKS one is refused), loaded by SEAL in the isolated worker under the BFV parameters (ring,
        primes, plain modulus: another degree or another pair's parameters are refused), two components, the
        top level."""
        self._bfv_eval_context(row)  # refuses a context without a BFV pair
        assert row.bfv_public_context is not None
        for i, blob in enumerate(blobs):
            if len(blob) > BFV_MAX_CIPHERTEXT_BYTES:
                raise PayloadTooLarge(f"{what} {i}: {len(blob)} bytes is more than a BFV ciphertext")
            try:
                vec = hs.decode_ckks_vector(blob)  # the same protobuf shape, less the scale
            except hs.InvalidCiphertext as exc:
                raise InvalidSealedData(f"{what} {i} is not a TenSEAL BFV vector: {exc}") from None
            if vec.scale != 0.0:
                raise InvalidSealedData(
                    f"{what} {i} is a CKKS vector; a column declared integer is encrypted under the BFV context"
                )
            if vec.size != size:
                raise InvalidSealedData(f"{what} {i} holds {vec.size} values; expected {size}")
        reports = hs.run_isolated(
            _bfv_checker(),
            "check_bfv_ciphertexts",
            {},
            [row.bfv_public_context, *blobs],
            timeout_s=hs.DEFAULT_LIMITS.check_timeout_s,
            error=InvalidSealedData,
            what=f"the {what}s",
        )
        for i, r in enumerate(reports):
            if r["size"] != 2 or r["ntt_form"] or r["transparent"] or r["slots"] != size:
                raise InvalidSealedData(f"{what} {i} is not a fresh two-component BFV ciphertext")
            if r["chain_index"] != r["top"]:
                raise InvalidSealedData(f"{what} {i} is at level {r['chain_index']}, not the top level")

    def _context_for_upload(self, session: Session, context_id: str) -> SealedContext:
        row = session.get(SealedContext, context_id) if re.fullmatch(r"[0-9a-f]{64}", context_id) else None
        if row is None:
            raise StaleContext(
                f"context {context_id[:16]}... is not one of this safe-room's enclave: fetch the context and "
                "its quote again (GET /v1/sealed/context) and encrypt under it"
            )
        if row.state != "active":
            raise StaleContext(
                f"context {context_id[:16]}... was retired (the enclave's key was rotated): encrypt under the "
                "active context again"
            )
        return row

    # --- upload ---------------------------------------------------------------------------------------

    def upload(
        self,
        session: Session,
        *,
        provider_org_id: str,
        name: str,
        context_id: str,
        subjects: Sequence[str],
        attributes: Mapping[str, Sequence[str]],
        columns: Mapping[str, SealedColumn],
        actor: Actor,
        request_id: str | None = None,
    ) -> SealedDataset:
        """Check everything, then store a sealed dataset (a ``datasets`` row for consent and lineage, the
        plaintext keys and C1 attributes, the ciphertexts) with ``dataset.create`` and ``sealed.upload``
        entries. Any refusal happens before the first write."""
        check_name(name, "the dataset name")
        row = self._context_for_upload(session, context_id)
        ctx = self.public_context(row)
        n = len(subjects)
        if not 0 < n <= MAX_SUBJECTS:
            raise InvalidSealedData(f"a sealed dataset holds 1 to {MAX_SUBJECTS:,} subjects")
        for s_ in subjects:
            validate_uscc(s_)
        if len(set(subjects)) != n:
            raise InvalidSealedData("each subject appears once")
        if not 0 < len(columns) <= MAX_COLUMNS:
            raise InvalidSealedData(f"name 1 to {MAX_COLUMNS} encrypted columns")
        names = list(attributes) + list(columns)
        if len(set(names)) != len(names) or "uscc" in names or not all(_NAME.match(c) for c in names):
            raise InvalidSealedData(
                "column and attribute names are distinct snake_case names other than uscc"
            )
        for a, values in attributes.items():
            if len(values) != n or not all(
                isinstance(v, str) and len(v) <= MAX_ATTRIBUTE_VALUE for v in values
            ):
                raise InvalidSealedData(
                    f"attribute {a!r} needs one string (at most {MAX_ATTRIBUTE_VALUE} characters) per subject"
                )
        per = ctx.slots
        n_blocks = -(-n // per)
        sizes = [per] * n_blocks  # every block spans all slots (the last one padded with zeros)
        for c, col in columns.items():
            if not (np.isfinite(col.lower) and np.isfinite(col.upper) and col.lower < col.upper):
                raise InvalidSealedData(f"column {c!r}: lower < upper, both finite")
            if len(col.blocks) != n_blocks:
                raise InvalidSealedData(
                    f"column {c!r} has {len(col.blocks)} ciphertexts; {n} subjects in blocks of {per} need {n_blocks}"
                )
            if col.integer:
                if col.lower != int(col.lower) or col.upper != int(col.upper):
                    raise InvalidSealedData(f"integer column {c!r}: lower and upper are integers")
                t = self.plain_modulus(row)
                if n * max(abs(int(col.lower)), abs(int(col.upper))) > (t - 1) // 2:
                    raise InvalidSealedData(
                        f"integer column {c!r}: {n} values in [{int(col.lower)}, {int(col.upper)}] could sum past "
                        f"the plain modulus ({t}) and wrap; narrow the bounds"
                    )
                self._check_bfv(row, col.blocks, per, f"column {c!r} ciphertext")
            else:
                self._check_fresh(ctx, col.blocks, sizes, f"column {c!r} ciphertext")
        schema = DatasetSchema.model_validate(
            {
                "subject_key": "uscc",
                "columns": [
                    {"name": "uscc", "type": "uscc", "sensitivity": "C1"},
                    *({"name": a, "type": "string", "sensitivity": "C1"} for a in attributes),
                    *(
                        {
                            "name": c,
                            "type": "int" if col.integer else "float",
                            "sensitivity": "C2",
                            "description": "sealed (BFV, exact)" if col.integer else "sealed (CKKS)",
                        }
                        for c, col in columns.items()
                    ),
                ],
            }
        )
        ds = self.datasets.create(
            session,
            provider_org_id=provider_org_id,
            name=name,
            description="sealed: homomorphically encrypted under the enclave's key",
            schema=schema,
            actor=actor,
            request_id=request_id,
        )
        sealed = SealedDataset(
            dataset_id=ds.id,
            context_id=row.id,
            state="ready",
            n_subjects=n,
            block_size=per,
            subjects_json=json.dumps(list(subjects)),
            attributes_json=json.dumps({a: list(v) for a, v in attributes.items()}),
            columns_json=json.dumps(
                {
                    c: {
                        "lower": col.lower,
                        "upper": col.upper,
                        "type": "integer" if col.integer else "real",
                        "resolution": 1.0 if col.integer else grid_step(col.lower, col.upper),
                    }
                    for c, col in columns.items()
                }
            ),
            uploaded_at=utcnow(),
        )
        session.add(sealed)
        session.flush()
        digest = hashlib.sha256()
        for c, col in columns.items():
            for b, blob in enumerate(col.blocks):
                digest.update(blob)
                session.add(SealedBlock(dataset_id=ds.id, column=c, block=b, ciphertext=blob))
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="sealed.upload",
                actor=actor,
                objects=(ObjectRef("dataset", ds.id), ObjectRef("sealed_context", row.id)),
                request_id=request_id,
                detail={
                    "context_id": row.id,
                    "subjects": n,
                    "columns": sorted(columns),
                    "integer_columns": sorted(c for c, col in columns.items() if col.integer),
                    "attributes": sorted(attributes),
                    "blocks": n_blocks,
                    "ciphertexts_sha256": digest.hexdigest(),
                },
            ),
        )
        return sealed

    def get(self, session: Session, dataset_id: str, *, ready: bool = True) -> SealedDataset:
        sealed = session.get(SealedDataset, dataset_id)
        ds = session.get(Dataset, dataset_id)
        if sealed is None or ds is None or ds.deleted_at is not None:
            raise NotFound(f"no sealed dataset {dataset_id}")
        if ready and sealed.state != "ready":
            raise NeedsReupload(
                f"sealed dataset {dataset_id} was encrypted under a retired context; its provider must upload "
                "it again under the active one"
            )
        return sealed

    def _blocks(self, session: Session, dataset_id: str, column: str) -> list[bytes]:
        return list(
            session.execute(
                select(SealedBlock.ciphertext)
                .where(SealedBlock.dataset_id == dataset_id, SealedBlock.column == column)
                .order_by(SealedBlock.block)
            ).scalars()
        )

    # --- aggregates -----------------------------------------------------------------------------------

    def aggregate(
        self,
        *,
        bank: str,
        purpose: str,
        dataset_id: str,
        column: str,
        where: Mapping[str, str],
        epsilon: float,
        actor: Actor,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """A noisy sum, count and mean of ``column`` over the consented subjects matching ``where`` (C1)."""
        check_purpose(purpose)
        if not 0 < epsilon <= self.max_epsilon:
            raise InvalidInput(f"epsilon must be in (0, {self.max_epsilon}]")
        qid = new_id("sq")
        ref = ObjectRef("sealed_query", qid)
        with self.db.transaction() as s:
            sealed = self.get(s, dataset_id)
            cols = json.loads(sealed.columns_json)
            attrs: dict[str, list[str]] = json.loads(sealed.attributes_json)
            if column not in cols:
                raise InvalidInput(f"sealed dataset {dataset_id} has no encrypted column {column!r}")
            unknown = sorted(set(where) - set(attrs))
            if unknown:
                raise InvalidInput(
                    f"filters must name C1 attributes of the dataset ({sorted(attrs)}): {unknown}"
                )
            subjects: list[str] = json.loads(sealed.subjects_json)
            members = [i for i in range(len(subjects)) if all(attrs[a][i] == v for a, v in where.items())]
            req = Request(
                bank, tuple(subjects[i] for i in members), {dataset_id: (column,)}, "aggregate", purpose
            )
            decisions = self.policy.admit(s, req, job=ref, actor=actor, request_id=request_id)
            row = s.get(SealedContext, sealed.context_id)
            assert row is not None
            blocks = self._blocks(s, dataset_id, column)
            per = sealed.block_size
            s.expunge(row)
        allowed = {d.subject: d for d in decisions if d.allowed}
        index = {u: i for i, u in enumerate(subjects)}
        chosen = sorted(index[u] for u in allowed)
        if len(chosen) < self.min_cohort:
            raise OutputPolicyViolation(
                f"only {len(chosen)} consented subjects match; the minimum cohort is {self.min_cohort}: "
                "nothing was computed or released"
            )
        cohort = tuple(subjects[i] for i in chosen)
        codes = self.aggregates.member_codes(cohort)

        def refused(exc: Refused) -> None:
            self._refused(exc, bank=bank, ref=ref, purpose=purpose, actor=actor, request_id=request_id)

        try:  # refuse before anything is decrypted; decided again under the budget lock at release
            with self.db.transaction(write=False) as s:
                self.aggregates.check_differencing(s, bank, [codes])
        except Refused as exc:
            refused(exc)
            raise
        exact = cols[column].get("type") == "integer"
        ctx = self._bfv_eval_context(row) if exact else self._eval_context(row)
        load = ts.bfv_vector_from if exact else ts.ckks_vector_from
        total = None
        for b, blob in enumerate(blocks):
            mask = np.zeros(per, dtype=np.int64 if exact else np.float64)
            for i in chosen:
                if i // per == b:
                    mask[i % per] = 1
            if not mask.any():
                continue
            term = load(ctx, blob) * mask.tolist()
            total = term if total is None else total + term
        assert total is not None
        reduced = total.sum()
        lower, upper = float(cols[column]["lower"]), float(cols[column]["upper"])
        host = self._host_for(row)
        got = self._call(
            host,
            "he_aggregate",
            context_id=row.id,
            epsilon=float(epsilon),
            min_cohort=self.min_cohort,
            items=[
                {
                    "name": column,
                    "ciphertext": base64.b64encode(reduced.serialize()).decode(),
                    "count": len(chosen),
                    "lower": lower,
                    "upper": upper,
                    "scheme": "bfv" if exact else "ckks",
                }
            ],
        )["results"][column]
        what = f"sealed.aggregate:{dataset_id}:{column}"
        try:
            with self.db.transaction() as s:
                # the bank's budget row first (as ordinary aggregates lock it): serialises its releases, so the
                # differencing control sees every cohort released before this one
                self.aggregates.lock_budget(s, bank)
                self.aggregates.check_differencing(s, bank, [codes])
                Gate(
                    self.policy,
                    Request(bank, cohort, {dataset_id: (column,)}, "aggregate", purpose),
                    job=ref,
                    actor=actor,
                    request_id=request_id,
                ).release_all(
                    s,
                    what=what,
                    admitted=[allowed[u] for u in cohort],
                    refusal="changed while the query ran; nothing was released — ask again",
                )
                micro = round(epsilon * MICRO)
                if self.aggregates.spend_budget(s, bank, micro) is None:
                    raise BudgetExhausted("this query's epsilon exceeds your remaining privacy budget")
                self.aggregates.remember_cohorts(s, bank, [codes], qid)
                self.ledger.append(
                    s,
                    EntryDraft(
                        action="sealed.aggregate",
                        actor=actor,
                        objects=(ref, ObjectRef("dataset", dataset_id), ObjectRef("sealed_context", row.id)),
                        purpose=purpose,
                        request_id=request_id,
                        released=(Release(to=bank, what=what),),
                        detail={
                            "bank": bank,
                            "column": column,
                            "where": dict(sorted(where.items())),
                            "cohort": len(cohort),
                            "scheme": "bfv" if exact else "ckks",
                            "epsilon_micro": micro,
                            "measurement": str(host.hello["measurement"]),
                        },
                    ),
                )
        except Refused as exc:
            refused(exc)
            raise
        return {
            "query_id": qid,
            "dataset_id": dataset_id,
            "column": column,
            "sum": got["sum"],
            "count": got["count"],
            "mean": got["mean"],
            "noise": {"sum": got["sum_scale"], "count": got["count_scale"]},
            "epsilon": epsilon,
            "exact": exact,
        }

    def _refused(
        self, exc: Refused, *, bank: str, ref: ObjectRef, purpose: str, actor: Actor, request_id: str | None
    ) -> None:
        """Record a refusal by an output control (``sealed.refused``) after its transaction rolled back."""
        with self.db.transaction() as s:
            self.ledger.append(
                s,
                EntryDraft(
                    action="sealed.refused",
                    actor=actor,
                    objects=(ref,),
                    purpose=purpose,
                    request_id=request_id,
                    detail={
                        "bank": bank,
                        "control": str(exc.details.get("control", "unknown")),
                        "reason": exc.message,
                    },
                ),
            )
        exc.details.setdefault("query_id", ref.id)

    # --- scoring --------------------------------------------------------------------------------------

    def score(
        self,
        *,
        bank: str,
        purpose: str,
        dataset_id: str,
        subjects: Sequence[str],
        weights: Mapping[str, bytes],
        quote_hash: str,
        provision: bytes,
        actor: Actor,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Encrypted scores ``sum_j w_j x_j`` of the consented ``subjects`` (with noise), released by the enclave
        to the recipient key the bank provisioned: ``provision`` is the bank's score request (output policy and
        :func:`enclave_sim.sealed.score_request`) encrypted to the context quote ``quote_hash`` it verified.
        ``weights`` are CKKS vectors under the enclave's public context, each value replicated across all
        slots. The host never names a recipient key."""
        check_purpose(purpose)
        if not subjects or len(subjects) > MAX_SUBJECTS or len(set(subjects)) != len(subjects):
            raise InvalidInput(f"name 1 to {MAX_SUBJECTS:,} distinct subjects")
        for s_ in subjects:
            validate_uscc(s_)
        if not re.fullmatch(r"[0-9a-f]{64}", quote_hash):
            raise InvalidInput("quote_hash must be the hex SHA-256 of the context quote (64 hex characters)")
        if not 0 < len(provision) <= MAX_PROVISION:
            raise PayloadTooLarge(f"provision must be 1 to {MAX_PROVISION} bytes (enc || ciphertext)")
        if not weights or len(weights) > MAX_COLUMNS:
            raise InvalidInput(f"give 1 to {MAX_COLUMNS} encrypted weights")
        qid = new_id("sq")
        ref = ObjectRef("sealed_query", qid)
        names = tuple(sorted(weights))
        with self.db.transaction(write=False) as s:
            sealed = self.get(s, dataset_id)
            cols = json.loads(sealed.columns_json)
            missing = [w for w in names if w not in cols]
            if missing:
                raise InvalidInput(f"sealed dataset {dataset_id} has no encrypted column(s) {missing}")
            exact = [w for w in names if cols[w].get("type") == "integer"]
            if exact:
                raise InvalidInput(
                    f"column(s) {exact} of sealed dataset {dataset_id} are exact integer (BFV) columns; scoring "
                    "multiplies by real weights and takes real (CKKS) columns only"
                )
            row = s.get(SealedContext, sealed.context_id)
            assert row is not None
            s.expunge(row)
            all_subjects: list[str] = json.loads(sealed.subjects_json)
            per = sealed.block_size
        ctx = self.public_context(row)
        self._check_fresh(ctx, [weights[w] for w in names], [ctx.slots] * len(names), "weight")
        with self.db.transaction() as s:
            req = Request(bank, tuple(subjects), {dataset_id: names}, "score", purpose)
            decisions = self.policy.admit(s, req, job=ref, actor=actor, request_id=request_id)
        index = {u: i for i, u in enumerate(all_subjects)}
        allowed = {d.subject: d for d in decisions if d.allowed and d.subject in index}
        with self.db.transaction(write=False) as s:
            levels = granularity_of(s, {u: d.consent_id for u, d in allowed.items()})
        coarse = sum(1 for u in allowed if levels[u] != "score")
        allowed = {u: d for u, d in allowed.items() if levels[u] == "score"}  # a sealed score is a score
        order = [u for u in subjects if u in allowed]
        denied: dict[str, int] = {}
        for d in decisions:
            if not d.allowed and d.reason is not None:
                denied[d.reason.value] = denied.get(d.reason.value, 0) + 1
        no_data = sum(1 for d in decisions if d.allowed and d.subject not in index)
        if no_data:
            denied["no_data"] = no_data
        if coarse:
            denied["granularity"] = coarse
        if not order:
            raise OutputPolicyViolation(f"no listed subject may be scored ({denied}); nothing was computed")
        evalctx = self._eval_context(row)
        w = [ts.ckks_vector_from(evalctx, weights[n]) for n in names]
        by_block: dict[int, list[int]] = {}
        for u in order:
            by_block.setdefault(index[u] // per, []).append(index[u] % per)
        with self.db.transaction(write=False) as s:
            columns = {n: self._blocks(s, dataset_id, n) for n in names}
        payload: list[dict[str, Any]] = []
        released_order: list[str] = []  # the enclave's release lists scores block by block, as in ``payload``
        for b, slots in sorted(by_block.items()):
            acc = None
            for j, n in enumerate(names):
                term = w[j] * ts.ckks_vector_from(evalctx, columns[n][b])
                acc = term if acc is None else acc + term
            assert acc is not None
            who = [all_subjects[b * per + slot] for slot in slots]
            released_order.extend(who)
            payload.append(
                {
                    "ciphertext": base64.b64encode(acc.serialize()).decode(),
                    "slots": slots,
                    "subjects": who,
                    "block": b,
                }
            )
        # the enclave decrypts the weights and the columns they read, checks the model against the published
        # policy on this dataset's distribution, checks the product above is that model, and releases scores
        # computed from the columns on their published grid
        model = {
            "weights": {n: base64.b64encode(weights[n]).decode() for n in names},
            "columns": {
                n: {
                    "blocks": [base64.b64encode(b).decode() for b in columns[n]],
                    "resolution": column_resolution(cols[n]),
                    "lower": float(cols[n]["lower"]),
                    "upper": float(cols[n]["upper"]),
                }
                for n in names
            },
            "n": len(all_subjects),
            "policy": self.model_policy.as_dict() if self.model_policy is not None else None,
        }
        host = self._host_for(row)
        try:
            got = self._call(
                host,
                "he_scores",
                context_id=row.id,
                query_id=qid,
                dataset_id=dataset_id,
                subjects=list(subjects),
                noise_std=self.score_noise_std,
                quote_hash=quote_hash,
                provision=base64.b64encode(provision).decode(),
                blocks=payload,
                model=model,
            )
        except ModelRefused as exc:
            with self.db.transaction() as s:
                self.ledger.append(
                    s,
                    EntryDraft(
                        action="model.refuse",
                        actor=actor,
                        objects=(ref, ObjectRef("dataset", dataset_id), ObjectRef("org", bank)),
                        purpose=purpose,
                        request_id=request_id,
                        detail={
                            "path": "sealed.score",
                            "policy_digest": self.model_policy.digest() if self.model_policy else "",
                            "reason": exc.message,
                            "weights": list(names),
                        },
                    ),
                )
            raise
        # the enclave's digest of the checked model (64 hex: the disclosures table's key); the same model on
        # another path is the same model to the subject's budget
        model_digest = str(got["model_digest"])
        release = base64.b64decode(got["release"])
        recipient = got["output"]["recipient_key"]
        what = f"sealed.score:{dataset_id}:{','.join(names)}"
        with self.db.transaction() as s:
            accounted = self.disclosures.spend(
                s,
                bank=bank,
                subjects=released_order,
                model_digest=model_digest,
                granularity=dict.fromkeys(released_order, "score"),
            )
            if accounted.refused:
                raise Conflict(
                    f"{len(accounted.refused)} subject(s) reached their disclosure budget for this bank "
                    "(distinct models per window): the encrypted scores were discarded — nothing was released; "
                    "score them with a model already counted, or name other subjects"
                )
            Gate(
                self.policy,
                Request(bank, tuple(released_order), {dataset_id: names}, "score", purpose),
                job=ref,
                actor=actor,
                request_id=request_id,
            ).release_all(
                s,
                what=what,
                admitted=[allowed[u] for u in released_order],
                refusal=(
                    "no longer holds; the encrypted scores were discarded — nothing was released, ask again"
                ),
            )
            self.ledger.append(
                s,
                EntryDraft(
                    action="sealed.score",
                    actor=actor,
                    objects=(ref, ObjectRef("dataset", dataset_id), ObjectRef("sealed_context", row.id)),
                    purpose=purpose,
                    request_id=request_id,
                    released=(Release(to=bank, what=what),),
                    detail={
                        "weights": list(names),
                        "model_digest": model_digest,
                        "resolution": {n: repr(column_resolution(cols[n])) for n in names},
                        "subjects_scored": len(released_order),
                        "not_used": dict(sorted(denied.items())),
                        "recipient_key": str(recipient),
                        "quote_hash": quote_hash,
                        "release_sha256": hashlib.sha256(release).hexdigest(),
                        "measurement": str(host.hello["measurement"]),
                    },
                ),
            )
        return {
            "query_id": qid,
            "subjects": released_order,
            "release": release,
            "not_used": denied,
        }
