"""Sealed datasets, the enclave's half: CKKS and BFV key pairs born here, and decryption of result-shaped
ciphertexts only.

The enclave generates a CKKS key pair (TenSEAL/SEAL) and, next to it, a BFV key pair for exact integer columns
(same N, SEAL's 128-bit default coefficient modulus, a batching prime plain modulus: :data:`DEFAULT_PLAIN_MODULUS_BITS`),
and keeps the secret keys in its memory; they leave only *sealed* (:func:`enclave_sim.crypto.seal`, bound to this
build's measurement; the BFV one under a label naming both context ids). What it publishes:

* the **public context** — encryption parameters and the public key, nothing else (TenSEAL's serialisation;
  its SHA-256 hex is the **context id**). Providers encrypt their columns and banks their weights under it;
  it cannot decrypt;
* the **evaluation context** — the same plus relinearisation and Galois keys (public material), which the host
  needs to multiply ciphertexts and to sum slots;
* the **public BFV context** and its id (SHA-256 hex), and the BFV evaluation context (Galois keys);
* quotes whose *report data* binds both contexts: the quoted nonce is
  ``SHA-256("PPS-SEALED-CONTEXT-v2" || 0x00 || context id || BFV context id || verifier nonce)``
  (:func:`pps_wire.sealed.report_nonce`; ``v1`` without the BFV id for a key loaded without a BFV pair), so a verifier that checks
  the quote against its own nonce and the context ids it received knows that this attested build holds the
  secret keys of exactly those public contexts.

Operations (registered in :class:`enclave_sim.core.EnclaveCore`)::

    he_keygen    params {poly_modulus_degree, coeff_mod_bit_sizes, scale_bits[, plain_modulus_bits]}
                 -> context_id, public_context, eval_context, sealed,
                    bfv_context_id, bfv_public_context, bfv_eval_context, bfv_sealed, plain_modulus
    he_load      context_id, sealed[, bfv_context_id, bfv_sealed] -> context_id, bfv_context_id (after a restart)
    he_quote     context_id, nonce                   -> quote           (report data binds both contexts)
    he_aggregate context_id, epsilon, min_cohort, items [{name, ciphertext, count, lower, upper[, scheme]}]
                 -> results {name: {sum, count, mean, sum_scale, count_scale, scheme}}
    he_scores    context_id, query_id, dataset_id, subjects [asked], noise_std, quote_hash, provision,
                 blocks [{ciphertext, slots [int], subjects [str][, block]}][, model]
                 -> release (the format of :func:`pps_wire.provision.pack_release`), released, output
                    [, model_digest]

**Only result shapes are decrypted, and only results leave.** ``he_aggregate`` decrypts a ciphertext and
refuses it unless every slot holds the same value (what a rotate-and-sum over all slots produces); a feature
column, masked or not, has differing slots and is refused — its values never leave the enclave. An item of
``scheme`` ``"bfv"`` (an exact integer column) is decrypted under the BFV key and must hold one value in every
slot of each of the two batching rows; its integer bounds times the count must stay below half the plain modulus
(else the sum could have wrapped); its exact sum gets discrete Laplace noise. It then
applies the output controls inside: a cohort below ``min_cohort`` is refused, the sum and the count get
Laplace noise (OpenDP) calibrated to the provider's clipping bounds and ``epsilon``. ``he_scores`` accepts
only ciphertexts that went through a multiplication (one level below a fresh encryption: a column as
uploaded is refused), releases only the slots the request lists, adds Gaussian noise of at least
:data:`MIN_SCORE_NOISE_STD` to each and encrypts them to the bank — the host carries the result but cannot
read it.

**Scores at the published grid, under the model policy** (issue 24 item 3). With ``model`` — ``{weights:
{column: weight ciphertext}, columns: {column: {blocks, resolution, lower, upper}}, n, policy}``, which the
service always sends — the enclave decrypts the bank's weights (each one value in every slot) and the named
columns (inside only: their values never leave), checks the weights against the published model policy on
the dataset's own distribution at the grid (``policy`` null: only with ``unsafe_unapproved_models``), checks
that each score block the host computed is those weights times those columns, and releases
``sum_j w_j grid_j(x_j)`` (each value rounded to its column's published resolution) plus noise, never the
host's product as is; each block names its ``block`` number. The reply adds ``model_digest`` (HMAC under the
seal key of the weights: stable per model, untestable outside) for disclosure accounting. A sealed column so
yields no more than an ordinary feature at its grid would.

**The recipient key never comes from the host.** A bank that wants scores verifies a fresh context quote
(:func:`pps_wire.sealed.report_nonce`) and provisions to that quote (:func:`pps_wire.provision.encrypt_for_enclave`, job
:data:`pps_wire.sealed.SCORES_JOB`, slot ``bank``) its output policy — release ``scores``, its X25519 recipient key, a 32-byte
result key — and the body :func:`pps_wire.sealed.score_request`: the context id, the dataset id and the SHA-256 of the list of
subjects it asks for. ``he_scores`` opens that provisioning once (the quote is forgotten after), refuses a
request that names a recipient key of its own, checks that the host's context, dataset and asked subjects are
the ones the bank bound and that every released subject is one of them, and releases ``{"query_id",
"context_id", "dataset_id", "subjects_sha256", "subjects", "noise_std"}`` in the clear with the scores HPKE-
encrypted to the provisioned key, the whole tagged with HMAC under the result key (:func:`pps_wire.sealed.open_scores`
checks it). A host that swaps the key, alters the provisioning, reuses it or points it at another dataset or
other subjects gets a refusal, not scores.

Who learns what, and under which assumptions: the enclave (attested build) sees the aggregates and the
listed subjects' scores before noise; the host sees ciphertexts, sizes, cohort counts it built itself, and
the noisy aggregates it releases; the bank sees noisy scores of its consented subjects. What the enclave
cannot check: that the host built the cohort masks from consent, that a "score" ciphertext was made with the
bank's weights (the host could multiply a column by an encryption of 1 — the listed subjects' values would
then reach the *bank's* key, noised, as a crafted model would anyway), which slot holds which subject, and
who a provisioning party is: the enclave knows no bank identities, so an operator that provisions a request of
its own, as if it were a bank, is not told apart. Those are the residual risks of ``docs/security.md``.

Hostile ciphertexts are loaded by SEAL in here; one that crashes the native code ends the enclave process
(the host starts a new one, which loads the sealed key again), never a release.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi

from enclave_sim.crypto import seal, unseal
from enclave_sim.errors import EnclaveProtocolError, OutputPolicyViolation, ProvisioningError
from pps_wire.provision import OutputPolicy, Provisioned, pack_release
from pps_wire.quote import NONCE_BYTES
from pps_wire.sealed import (
    SCORES_JOB,
    SCORES_OUTPUT,
    SCORES_SLOT,
    plain_modulus_of,
    report_nonce,
    score_request,
    subjects_digest,
)

SEAL_LABEL = "pps-sealed-ckks:"
BFV_SEAL_LABEL = "pps-sealed-bfv:"
MIN_PLAIN_MODULUS_BITS, MAX_PLAIN_MODULUS_BITS = 20, 50
DEFAULT_PLAIN_MODULUS_BITS = 40
"""BFV plain modulus: the batching-friendly prime (``t = 1 mod 2N``) of this many bits, 1099511480321 for N = 8192
at 40 bits: exact sums up to ``(t - 1) / 2`` ~ 5.5e11 in magnitude. SEAL's default 128-bit coefficient modulus
for N = 8192 (218 bits) leaves ~126 bits of noise budget fresh and ~70 after the host's mask product and
rotate-and-sum (measured), so decryption is exact. 50 bits still leaves ~50."""
ALLOWED_POLY_MODULUS_DEGREES = (8192, 16384)
MIN_SCALE_BITS, MAX_SCALE_BITS = 30, 50
MAX_CONTEXTS = 4
MAX_AGGREGATES = 32
MAX_SCORE_BLOCKS = 512
MAX_SCORES = 200_000
MIN_SCORE_NOISE_STD = 2.0**-16
MAX_SCORE_NOISE_STD = 1.0e3
MIN_EPSILON, MAX_EPSILON = 1e-3, 10.0
UNIFORM_TOLERANCE = 1e-4
"""Relative spread (to ``max(1, |value|)``) allowed between the slots of an aggregate ciphertext (CKKS noise)."""
MAX_BIND = 128
MAX_PROVISION = 4096
"""Bytes of a bank's provisioned score request (enc || ciphertext): a small header and body."""
SCORES_FIELDS = frozenset(
    {
        "op",
        "context_id",
        "query_id",
        "dataset_id",
        "subjects",
        "noise_std",
        "quote_hash",
        "provision",
        "blocks",
        "model",
    }
)
MODEL_FIELDS = frozenset({"weights", "columns", "n", "policy"})
MAX_MODEL_SUBJECTS = 200_000
WEIGHT_TOLERANCE = 1e-4
"""Relative spread (to ``max(1, |w|)``) allowed between the slots of a weight ciphertext (one value, replicated)."""
PRODUCT_TOLERANCE = 1e-4
"""How far (relative to ``1 + sum_j |w_j| max(|lower_j|, |upper_j|)``) the host's product may be from the weights
times the columns the enclave decrypted (CKKS noise is ~1e-7 of it): further, and it is not the bank's model."""


class Platform(Protocol):
    measurement: bytes
    seal_key: bytes


IssueQuote = Callable[[bytes], bytes]
"""The enclave core's quoting: a quote for report data, remembered for provisioning."""
OpenProvisioned = Callable[[bytes, bytes, str, str], Provisioned]
"""The enclave core's provisioning: ``(quote_hash, ciphertext, job, slot)`` -> opened, once per quote."""


def public_context_bytes(context: ts.Context) -> bytes:
    """The public context of a TenSEAL context: parameters and public key only."""
    raw: bytes = context.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    return raw


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bytes(msg: dict[str, Any], name: str) -> bytes:
    value = msg.get(name)
    if not isinstance(value, str):
        raise EnclaveProtocolError(f"{name} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise EnclaveProtocolError(f"{name} must be base64") from None


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise EnclaveProtocolError(f"{name} must be an integer in [{lo}, {hi}]")
    return value


def _float(value: Any, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EnclaveProtocolError(f"{name} must be a finite number")
    if not lo <= float(value) <= hi:
        raise EnclaveProtocolError(f"{name} must be in [{lo:g}, {hi:g}]")
    return float(value)


def laplace_float(value: float, scale: float) -> float:
    """OpenDP's Laplace mechanism over floats (a real sum)."""
    import opendp.prelude as dp  # loaded when an aggregate is released, not at start-up

    dp.enable_features("contrib")
    m = dp.m.make_laplace(dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale)
    return float(m(float(value)))


def laplace_int(value: int, scale: float) -> int:
    """OpenDP's discrete Laplace mechanism over 64-bit integers (a count, an exact integer sum)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    m = dp.m.make_laplace(dp.atom_domain(T="i64"), dp.absolute_distance(T="i64"), scale)
    return int(m(int(value)))


class SealedHE:
    """The enclave's CKKS keys and the two decrypting operations. Holds secret keys in memory only."""

    def __init__(
        self, platform: Platform, issue_quote: IssueQuote, open_provisioned: OpenProvisioned
    ) -> None:
        self.platform = platform
        self._issue_quote = issue_quote
        self._open_provisioned = open_provisioned
        self._keys: dict[str, ts.Context] = {}
        self._bfv: dict[str, tuple[str, ts.Context]] = {}
        """CKKS context id -> (BFV context id, BFV context with its secret key): the exact-integer pair"""

    def ops(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "he_keygen": self._keygen,
            "he_load": self._load,
            "he_quote": self._quote,
            "he_aggregate": self._aggregate,
            "he_scores": self._scores,
        }

    # --- keys ---------------------------------------------------------------------------------------------

    def _remember(self, context_id: str, context: ts.Context, bfv: tuple[str, ts.Context] | None) -> None:
        self._keys.pop(context_id, None)
        self._bfv.pop(context_id, None)
        self._keys[context_id] = context
        if bfv is not None:
            self._bfv[context_id] = bfv
        while len(self._keys) > MAX_CONTEXTS:
            old = next(iter(self._keys))
            self._keys.pop(old)
            self._bfv.pop(old, None)

    def _bfv_context(self, context_id: str) -> tuple[str, ts.Context]:
        got = self._bfv.get(context_id)
        if got is None:
            raise ProvisioningError(
                f"context {context_id[:16]} has no BFV key pair (made before exact integer columns): rotate"
            )
        return got

    def _context(self, msg: dict[str, Any]) -> tuple[str, ts.Context]:
        cid = msg.get("context_id")
        if not isinstance(cid, str) or len(cid) != 64:
            raise EnclaveProtocolError("context_id must be 64 hex characters")
        ctx = self._keys.get(cid)
        if ctx is None:
            raise ProvisioningError(
                f"this enclave instance holds no key for context {cid[:16]}: load it first"
            )
        return cid, ctx

    def _keygen(self, msg: dict[str, Any]) -> dict[str, Any]:
        params = msg.get("params")
        required = {"poly_modulus_degree", "coeff_mod_bit_sizes", "scale_bits"}
        if not isinstance(params, dict) or not required <= set(params) <= required | {"plain_modulus_bits"}:
            raise EnclaveProtocolError(
                "params must be {poly_modulus_degree, coeff_mod_bit_sizes, scale_bits[, plain_modulus_bits]}"
            )
        n = params["poly_modulus_degree"]
        if n not in ALLOWED_POLY_MODULUS_DEGREES:
            raise EnclaveProtocolError(
                f"poly_modulus_degree must be one of {list(ALLOWED_POLY_MODULUS_DEGREES)}"
            )
        bits = params["coeff_mod_bit_sizes"]
        if not isinstance(bits, list) or not 3 <= len(bits) <= 8:
            raise EnclaveProtocolError("coeff_mod_bit_sizes must list 3 to 8 prime sizes")
        bits = [_int(b, "a prime size", 20, 60) for b in bits]
        scale_bits = _int(params["scale_bits"], "scale_bits", MIN_SCALE_BITS, MAX_SCALE_BITS)
        try:  # SEAL refuses parameters below 128-bit security (its tc128 table)
            ctx = ts.context(ts.SCHEME_TYPE.CKKS, n, coeff_mod_bit_sizes=bits)
        except ValueError as exc:
            raise EnclaveProtocolError(f"SEAL refused the parameters: {exc}") from None
        t_bits = _int(
            params.get("plain_modulus_bits", DEFAULT_PLAIN_MODULUS_BITS),
            "plain_modulus_bits",
            MIN_PLAIN_MODULUS_BITS,
            MAX_PLAIN_MODULUS_BITS,
        )
        ctx.global_scale = 2.0**scale_bits
        ctx.generate_relin_keys()
        ctx.generate_galois_keys()
        plain_modulus = int(sealapi.PlainModulus.Batching(n, t_bits).value())
        bfv = ts.context(ts.SCHEME_TYPE.BFV, n, plain_modulus=plain_modulus)  # SEAL's 128-bit default chain
        bfv.generate_galois_keys()
        bfv_public = public_context_bytes(bfv)
        bid = hashlib.sha256(bfv_public).hexdigest()
        bfv_eval: bytes = bfv.serialize(
            save_public_key=True, save_secret_key=False, save_galois_keys=True, save_relin_keys=False
        )
        bfv_secret: bytes = bfv.serialize(
            save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
        )
        public = public_context_bytes(ctx)
        cid = hashlib.sha256(public).hexdigest()
        evaluation: bytes = ctx.serialize(
            save_public_key=True, save_secret_key=False, save_galois_keys=True, save_relin_keys=True
        )
        secret: bytes = ctx.serialize(
            save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
        )
        p = self.platform
        blob = seal(p.seal_key, p.measurement, SEAL_LABEL + cid, secret)
        bfv_blob = seal(p.seal_key, p.measurement, BFV_SEAL_LABEL + cid + ":" + bid, bfv_secret)
        self._remember(cid, ctx, (bid, bfv))
        return {
            "context_id": cid,
            "public_context": _b64(public),
            "eval_context": _b64(evaluation),
            "eval_sha256": hashlib.sha256(evaluation).hexdigest(),
            "sealed": _b64(blob),
            "bfv_context_id": bid,
            "bfv_public_context": _b64(bfv_public),
            "bfv_eval_context": _b64(bfv_eval),
            "bfv_sealed": _b64(bfv_blob),
            "plain_modulus": plain_modulus,
        }

    def _load(self, msg: dict[str, Any]) -> dict[str, Any]:
        cid = msg.get("context_id")
        if not isinstance(cid, str) or len(cid) != 64:
            raise EnclaveProtocolError("context_id must be 64 hex characters")
        p = self.platform
        secret = unseal(p.seal_key, p.measurement, SEAL_LABEL + cid, _bytes(msg, "sealed"))
        ctx = ts.context_from(secret)
        if hashlib.sha256(public_context_bytes(ctx)).hexdigest() != cid:
            raise ProvisioningError("the sealed key is not the one of this context id")
        ctx.generate_relin_keys()
        ctx.generate_galois_keys()
        bfv = None
        bid = msg.get("bfv_context_id")
        if bid is not None:  # the BFV pair sealed with (and bound to) this CKKS context id
            if not isinstance(bid, str) or len(bid) != 64:
                raise EnclaveProtocolError("bfv_context_id must be 64 hex characters")
            bsecret = unseal(
                p.seal_key, p.measurement, BFV_SEAL_LABEL + cid + ":" + bid, _bytes(msg, "bfv_sealed")
            )
            bctx = ts.context_from(bsecret)
            if hashlib.sha256(public_context_bytes(bctx)).hexdigest() != bid:
                raise ProvisioningError("the sealed BFV key is not the one of this BFV context id")
            bctx.generate_galois_keys()
            bfv = (bid, bctx)
        self._remember(cid, ctx, bfv)
        return {"context_id": cid, "bfv_context_id": bid}

    def _quote(self, msg: dict[str, Any]) -> dict[str, Any]:
        cid, _ = self._context(msg)
        nonce = _bytes(msg, "nonce")
        if len(nonce) != NONCE_BYTES:
            raise EnclaveProtocolError(f"a nonce is {NONCE_BYTES} bytes")
        bfv = self._bfv.get(cid)
        bid = bfv[0] if bfv is not None else None  # both pairs bound whenever this enclave holds both
        return {"quote": _b64(self._issue_quote(report_nonce(cid, nonce, bid))), "bfv_context_id": bid}

    # --- decryption of results ----------------------------------------------------------------------------

    def _vector(self, ctx: ts.Context, data: bytes, what: str) -> ts.CKKSVector:
        try:
            vec = ts.ckks_vector_from(ctx, data)
            ct = vec.ciphertext()
        except Exception:
            raise ProvisioningError(f"{what} is not a CKKS vector under this context") from None
        if len(ct) != 1:
            raise ProvisioningError(f"{what} must be one ciphertext")
        return vec

    def _slots(self, ctx: ts.Context, vec: ts.CKKSVector) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Every slot of the ciphertext (TenSEAL's ``decrypt`` would show only the first ``size``)."""
        sc = ctx.seal_context().data
        plain = sealapi.Plaintext()
        sealapi.Decryptor(sc, ctx.secret_key().data).decrypt(vec.ciphertext()[0], plain)
        return np.asarray(sealapi.CKKSEncoder(sc).decode_double(plain), dtype=np.float64)

    def _level(self, ctx: ts.Context, vec: ts.CKKSVector) -> int:
        data = ctx.seal_context().data.get_context_data(vec.ciphertext()[0].parms_id())
        if data is None:
            raise ProvisioningError("the ciphertext's parameters are not this context's")
        return int(data.chain_index())

    def _bfv_slots(self, ctx: ts.Context, data: bytes, what: str) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Every slot (both rows of N/2) of one BFV ciphertext under ``ctx``, as signed integers mod t."""
        try:
            vec = ts.bfv_vector_from(ctx, data)
            ct = vec.ciphertext()
        except Exception:
            raise ProvisioningError(f"{what} is not a BFV vector under this context") from None
        if len(ct) != 1:
            raise ProvisioningError(f"{what} must be one ciphertext")
        sc = ctx.seal_context().data
        decryptor = sealapi.Decryptor(sc, ctx.secret_key().data)
        if decryptor.invariant_noise_budget(ct[0]) <= 0:
            raise OutputPolicyViolation(f"{what} has no noise budget left: its value would be wrong")
        plain = sealapi.Plaintext()
        decryptor.decrypt(ct[0], plain)
        return np.asarray(sealapi.BatchEncoder(sc).decode_int64(plain), dtype=np.int64)

    def _aggregate(self, msg: dict[str, Any]) -> dict[str, Any]:
        cid, ctx = self._context(msg)
        epsilon = _float(msg.get("epsilon"), "epsilon", MIN_EPSILON, MAX_EPSILON)
        min_cohort = _int(msg.get("min_cohort"), "min_cohort", 1, 1 << 40)
        items = msg.get("items")
        if not isinstance(items, list) or not 0 < len(items) <= MAX_AGGREGATES:
            raise EnclaveProtocolError(f"items must list 1 to {MAX_AGGREGATES} aggregates")
        slots = ctx.seal_context().data.first_context_data().parms().poly_modulus_degree() // 2
        results: dict[str, Any] = {}
        checked: list[tuple[str, float | int, int, float, float, bool]] = []
        keys = {"name", "ciphertext", "count", "lower", "upper"}
        for i, item in enumerate(items):  # every check before any noise is drawn or anything is released
            if not isinstance(item, dict) or not keys <= set(item) <= keys | {"scheme"}:
                raise EnclaveProtocolError(
                    "an aggregate item is {name, ciphertext, count, lower, upper[, scheme]}"
                )
            name = item["name"]
            if not isinstance(name, str) or not 0 < len(name) <= 128 or name in results:
                raise EnclaveProtocolError("aggregate names are distinct strings of 1-128 characters")
            scheme = item.get("scheme", "ckks")
            if scheme not in ("ckks", "bfv"):
                raise EnclaveProtocolError(
                    "an aggregate's scheme is 'ckks' (reals) or 'bfv' (exact integers)"
                )
            count = _int(item["count"], "count", 0, 1 << 40)
            lower = _float(item["lower"], "lower", -1e15, 1e15)
            upper = _float(item["upper"], "upper", lower, 1e15)
            if count < min_cohort:
                raise OutputPolicyViolation(
                    f"aggregate {name!r}: a cohort of {count} is below the minimum of {min_cohort}; nothing released"
                )
            total: float | int
            if scheme == "bfv":
                total = self._exact_total(cid, item, name, i, count, lower, upper)
            else:
                vec = self._vector(ctx, _bytes(item, "ciphertext"), f"aggregate {i}")
                values = self._slots(ctx, vec)
                if values.size != slots:
                    raise OutputPolicyViolation(f"aggregate {name!r} does not span all {slots} slots")
                centre = float(np.median(values))
                if float(np.max(np.abs(values - centre))) > UNIFORM_TOLERANCE * max(1.0, abs(centre)):
                    raise OutputPolicyViolation(
                        f"aggregate {name!r} is not result-shaped: its slots differ (a column, not a sum); "
                        "nothing was decrypted out of the enclave"
                    )
                total = centre
            checked.append((name, total, count, lower, upper, scheme == "bfv"))
            results[name] = None
        half = epsilon / 2
        for name, total, count, lower, upper, exact in checked:
            sensitivity = max(abs(lower), abs(upper), upper - lower if lower < 0 < upper else 0.0)
            sum_scale = max(sensitivity, 1e-12) / half
            count_scale = 1.0 / half
            noisy_sum: float | int = (
                laplace_int(int(total), sum_scale) if exact else laplace_float(float(total), sum_scale)
            )
            noisy_count = max(0, laplace_int(count, count_scale))
            results[name] = {
                "sum": noisy_sum,
                "count": noisy_count,
                "mean": min(max(float(noisy_sum) / max(noisy_count, 1), lower), upper),
                "sum_scale": sum_scale,
                "count_scale": count_scale,
                "scheme": "bfv" if exact else "ckks",
            }
        return {"results": results}

    def _exact_total(
        self, cid: str, item: dict[str, Any], name: str, i: int, count: int, lower: float, upper: float
    ) -> int:
        """The exact integer sum in a BFV aggregate ciphertext, refused unless it is result-shaped: every slot of
        the first row (the N/2 slots a column occupies) holds one value, the second row one value too (TenSEAL's
        sum rotates within rows; the host never puts data there). The bounds must be integers whose sum over
        ``count`` subjects cannot wrap modulo the plain modulus ``t``."""
        _, bctx = self._bfv_context(cid)
        if lower != math.floor(lower) or upper != math.floor(upper):
            raise EnclaveProtocolError(f"aggregate {name!r}: an exact integer column has integer bounds")
        values = self._bfv_slots(bctx, _bytes(item, "ciphertext"), f"aggregate {i}")
        half_row = values.size // 2
        first, second = values[:half_row], values[half_row:]
        if values.size < 2 or np.any(first != first[0]) or np.any(second != second[0]):
            raise OutputPolicyViolation(
                f"aggregate {name!r} is not result-shaped: its slots differ (a column, not a sum); "
                "nothing was decrypted out of the enclave"
            )
        t = plain_modulus_of(bctx)
        if max(abs(lower), abs(upper)) * max(count, 1) > (t - 1) // 2:
            raise OutputPolicyViolation(
                f"aggregate {name!r}: {count} values in [{lower:g}, {upper:g}] could wrap modulo the plain "
                f"modulus {t}; nothing released"
            )
        return int(first[0])

    def _score_request(self, msg: dict[str, Any], context_id: str) -> tuple[OutputPolicy, bytes, list[str]]:
        """The bank's provisioned request: its output policy (recipient key, result key) and what it binds.

        The recipient key comes only from here — encrypted by the bank to this enclave instance under a quote
        it verified — never from the host."""
        if "recipient_key" in msg:
            raise ProvisioningError(
                "the host named a recipient key: scores are encrypted only to the key the bank provisioned "
                "under a quote; nothing was decrypted"
            )
        extra = sorted(set(msg) - SCORES_FIELDS)
        if extra:
            raise EnclaveProtocolError(f"he_scores takes no field(s) {extra}")
        query_id = msg.get("query_id")
        if not isinstance(query_id, str) or not 0 < len(query_id) <= MAX_BIND:
            raise EnclaveProtocolError(f"query_id must be a string of 1-{MAX_BIND} characters")
        dataset_id = msg.get("dataset_id")
        if not isinstance(dataset_id, str) or not 0 < len(dataset_id) <= MAX_BIND:
            raise EnclaveProtocolError(f"dataset_id must be a string of 1-{MAX_BIND} characters")
        asked = msg.get("subjects")
        if (
            not isinstance(asked, list)
            or not 0 < len(asked) <= MAX_SCORES
            or not all(isinstance(u, str) and 0 < len(u) <= 64 for u in asked)
        ):
            raise EnclaveProtocolError(f"subjects must list 1 to {MAX_SCORES} subject keys")
        try:
            quote_hash = bytes.fromhex(str(msg.get("quote_hash")))
        except ValueError:
            raise EnclaveProtocolError("quote_hash must be hex") from None
        if len(quote_hash) != 32:
            raise EnclaveProtocolError("quote_hash is 32 bytes")
        ciphertext = _bytes(msg, "provision")
        if len(ciphertext) > MAX_PROVISION:
            raise EnclaveProtocolError(f"a provisioned score request is at most {MAX_PROVISION} bytes")
        got = self._open_provisioned(quote_hash, ciphertext, SCORES_JOB, SCORES_SLOT)
        policy = got.output
        if policy is None or policy.release != (SCORES_OUTPUT,) or policy.recipient_key is None:
            raise ProvisioningError(
                f"a score request's output policy releases exactly {SCORES_OUTPUT!r} to a recipient key"
            )
        try:
            bound = json.loads(got.body)
        except ValueError:
            raise ProvisioningError("the provisioned score request is not JSON") from None
        if not isinstance(bound, dict) or bound != json.loads(
            score_request(context_id=context_id, dataset_id=dataset_id, subjects=asked)
        ):
            raise ProvisioningError(
                "the bank's provisioned request binds another context, dataset or list of subjects than the one "
                "the host asks to release; nothing was decrypted"
            )
        return policy, quote_hash, asked

    def _sealed_model(self, ctx: ts.Context, cid: str, doc: Any) -> _SealedModel:
        """The bank's weights and the columns they read, decrypted here; the model policy checked on the
        dataset's own distribution at the published grid (:mod:`enclave_sim.model_check`) before any score."""
        from enclave_sim.model_check import ModelPolicy, PlainModel, verify_model

        if not isinstance(doc, dict) or set(doc) != MODEL_FIELDS:
            raise EnclaveProtocolError(f"model is {{{', '.join(sorted(MODEL_FIELDS))}}}")
        n = _int(doc["n"], "model.n", 1, MAX_MODEL_SUBJECTS)
        weights_doc, columns_doc = doc["weights"], doc["columns"]
        if (
            not isinstance(weights_doc, dict)
            or not isinstance(columns_doc, dict)
            or not 0 < len(weights_doc) <= 64
            or set(weights_doc) != set(columns_doc)
        ):
            raise EnclaveProtocolError("model.weights and model.columns name the same 1-64 columns")
        slots = ctx.seal_context().data.first_context_data().parms().poly_modulus_degree() // 2
        weights: dict[str, float] = {}
        raw: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}
        grid: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}
        step: dict[str, float] = {}
        reach = 1.0
        for name in sorted(weights_doc):
            values = self._slots(ctx, self._vector(ctx, _bytes(weights_doc, name), f"weight {name!r}"))
            w = float(np.median(values))
            if float(np.max(np.abs(values - w))) > WEIGHT_TOLERANCE * max(1.0, abs(w)):
                raise ProvisioningError(f"weight {name!r} must be one value replicated across every slot")
            weights[name] = float(f"{w:.6g}")  # CKKS noise below the 6th digit: the same model digests alike
            col = columns_doc[name]
            if not isinstance(col, dict) or set(col) != {"blocks", "resolution", "lower", "upper"}:
                raise EnclaveProtocolError("a model column is {blocks, resolution, lower, upper}")
            lower = _float(col["lower"], "lower", -1e15, 1e15)
            upper = _float(col["upper"], "upper", lower, 1e15)
            res = _float(col["resolution"], "resolution", 1e-12, 1e15)
            blocks = col["blocks"]
            if not isinstance(blocks, list) or len(blocks) != -(-n // slots):
                raise EnclaveProtocolError(f"column {name!r}: one block per {slots} subjects")
            x = np.concatenate(
                [
                    self._slots(ctx, self._vector(ctx, _bytes({"b": b}, "b"), f"column {name!r} block {i}"))
                    for i, b in enumerate(blocks)
                ]
            )[:n]
            x = np.clip(x, lower, upper)
            raw[name] = x
            grid[name] = np.round(x / res) * res  # the published grid, as ordinary features are rounded
            step[name] = res
            reach += abs(weights[name]) * max(abs(lower), abs(upper))
        if doc["policy"] is not None:
            try:
                policy = ModelPolicy.from_dict(doc["policy"])
            except (TypeError, ValueError) as exc:
                raise ProvisioningError(f"the model policy is malformed: {exc}") from None
            verify_model(PlainModel(dict(weights), 0.0), policy, grid, step)
        digest = hmac.new(
            self.platform.seal_key,
            json.dumps({"context": cid, "weights": weights}, sort_keys=True).encode(),
            hashlib.sha256,
        ).hexdigest()
        return _SealedModel(weights, raw, grid, reach, digest)

    def _scores(self, msg: dict[str, Any]) -> dict[str, Any]:
        cid, ctx = self._context(msg)
        policy, quote_hash, asked = self._score_request(msg, cid)
        model = self._sealed_model(ctx, cid, msg["model"]) if msg.get("model") is not None else None
        allowed = set(asked)
        noise_std = _float(msg.get("noise_std"), "noise_std", MIN_SCORE_NOISE_STD, MAX_SCORE_NOISE_STD)
        blocks = msg.get("blocks")
        if not isinstance(blocks, list) or not 0 < len(blocks) <= MAX_SCORE_BLOCKS:
            raise EnclaveProtocolError(f"blocks must list 1 to {MAX_SCORE_BLOCKS} score blocks")
        first = ctx.seal_context().data.first_context_data()
        slots = first.parms().poly_modulus_degree() // 2
        top = int(first.chain_index())
        released: list[str] = []
        seen: set[str] = set()
        picked: list[tuple[ts.CKKSVector, list[int], int]] = []
        for i, block in enumerate(blocks):
            shape = {"ciphertext", "slots", "subjects"} | ({"block"} if model is not None else set())
            if not isinstance(block, dict) or set(block) != shape:
                raise EnclaveProtocolError(f"a score block is {{{', '.join(sorted(shape))}}}")
            wanted, who = block["slots"], block["subjects"]
            if (
                not isinstance(wanted, list)
                or not wanted
                or len(set(wanted)) != len(wanted)
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < slots for s in wanted)
            ):
                raise EnclaveProtocolError(f"block {i}: slots must list distinct integers in [0, {slots})")
            if not isinstance(who, list) or len(who) != len(wanted):
                raise EnclaveProtocolError(f"block {i}: subjects must name the subject of each slot")
            for u in who:
                if not isinstance(u, str) or u not in allowed or u in seen:
                    raise OutputPolicyViolation(
                        f"block {i} releases a subject the bank did not ask for (or twice); nothing was decrypted"
                    )
                seen.add(u)
            released.extend(who)
            if len(released) > MAX_SCORES:
                raise OutputPolicyViolation(f"at most {MAX_SCORES} scores per call")
            vec = self._vector(ctx, _bytes(block, "ciphertext"), f"score block {i}")
            if self._level(ctx, vec) >= top:
                raise OutputPolicyViolation(
                    f"score block {i} is a fresh ciphertext at the top level, not a product of weights and "
                    "features: it could be a feature column, and is not decrypted"
                )
            at = 0
            if model is not None:
                n = len(next(iter(model.raw.values())))
                at = _int(block["block"], f"block {i}: block", 0, max(0, (n - 1) // slots))
                if at * slots + max(wanted) >= n:
                    raise EnclaveProtocolError(f"block {i}: a slot past the dataset's last subject")
            picked.append((vec, wanted, at))
        rng = np.random.default_rng(int.from_bytes(os.urandom(32), "big"))
        scores: list[float] = []
        for vec, wanted, at in picked:
            values = self._slots(ctx, vec)[wanted]
            if model is not None:
                rows = np.asarray(wanted, dtype=np.int64) + at * slots
                exact = sum(w * model.raw[n_][rows] for n_, w in model.weights.items())
                if float(np.max(np.abs(values - exact))) > PRODUCT_TOLERANCE * model.reach:
                    raise OutputPolicyViolation(
                        "a score ciphertext is not the bank's weights times the dataset's columns; nothing was "
                        "released"
                    )
                values = sum(w * model.grid[n_][rows] for n_, w in model.weights.items())
            chosen = values + rng.normal(0.0, noise_std, len(wanted))
            if not np.isfinite(chosen).all():
                raise OutputPolicyViolation("a score is not a finite number")
            scores.extend(float(v) for v in chosen)
        release = pack_release(
            job=SCORES_JOB,
            measurement=self.platform.measurement,
            quote_hash=quote_hash,
            policy=policy,
            plain={
                "query_id": str(msg["query_id"]),
                "context_id": cid,
                "dataset_id": str(msg["dataset_id"]),
                "subjects_sha256": subjects_digest(asked),
                "subjects": released,
                "noise_std": noise_std,
            },
            secret={SCORES_OUTPUT: scores},
        )
        out = {"release": _b64(release), "released": len(scores), "output": policy.public()}
        if model is not None:
            out["model_digest"] = model.digest
        return out


@dataclass(frozen=True)
class _SealedModel:
    """A bank's sealed-scoring weights as the enclave decrypted them, and the columns they read."""

    weights: dict[str, float]
    raw: dict[str, np.ndarray[Any, np.dtype[np.float64]]]
    """each column as decrypted (clipped to its bounds): what the host's product must match"""
    grid: dict[str, np.ndarray[Any, np.dtype[np.float64]]]
    """each column on its published grid: what the released score is computed from"""
    reach: float
    digest: str
    """keyed by the seal key: the same weights digest alike, and nobody outside can test a guess"""
