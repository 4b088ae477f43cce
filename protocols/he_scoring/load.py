"""The safe-room's one validation point for what the bank sends: the public CONTEXT (:func:`check_public_context`)
and the MODEL (:func:`load_model`), each loaded in the isolated checker before this process loads it."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import tenseal.sealapi as seal

from protocols.errors import (
    ContextHasSecretKey,
    ForeignCiphertext,
    InvalidCiphertext,
    InvalidContext,
    ScoringLimitExceeded,
    WeakParameters,
)
from protocols.he_isolation import IsolatedWorker
from protocols.he_scoring.checker import run_isolated
from protocols.he_scoring.protobuf import (
    CKKSVectorBlob,
    _ProtoError,
    context_id_of,
    decode_ckks_vector,
    parse_context,
)
from protocols.he_scoring.seal_objects import Level, build_seal_context, data_levels, seal_load, working_level
from protocols.he_scoring.wire import (
    ALLOWED_POLY_MODULUS_DEGREES,
    CIPHERTEXT_SLACK_BYTES,
    DEFAULT_LIMITS,
    HEADROOM_BITS,
    MAX_SCALE_BITS,
    MIN_SCALE_BITS,
    Design,
    EncryptedModelMessage,
    ModelKind,
    Packing,
    ScoringLimits,
    decode_model,
)


class PublicScoringContext:
    """A checked public context: parameters, public key and the SEAL objects to compute with. No secret key."""

    def __init__(
        self,
        *,
        context_bytes: bytes,
        poly_modulus_degree: int,
        primes: tuple[int, ...],
        public_key: bytes,
        global_scale: float | None,
    ) -> None:
        self.context_bytes = context_bytes
        """The public context exactly as received (it holds no secret key: checked); what the service stores."""
        self.context_id = context_id_of(context_bytes)
        self.poly_modulus_degree = poly_modulus_degree
        self.primes = primes
        self.global_scale = global_scale
        self.seal_context = build_seal_context(poly_modulus_degree, primes)
        self.public_key = seal_load(seal.PublicKey(), self.seal_context, public_key)
        self.evaluator = seal.Evaluator(self.seal_context)
        self.encoder = seal.CKKSEncoder(self.seal_context)
        self.encryptor = seal.Encryptor(self.seal_context, self.public_key)
        self.levels = data_levels(self.seal_context)
        self.slots = int(self.encoder.slot_count())
        self.lock = threading.Lock()
        """SEAL's encryptor and evaluator are not documented as thread-safe; :func:`score` holds this."""

    @property
    def coeff_modulus_bits(self) -> tuple[int, ...]:
        return tuple(p.bit_length() for p in self.primes)

    def max_ciphertext_bytes(self) -> int:
        limbs = len(self.primes) - 1
        return 2 * limbs * self.poly_modulus_degree * 8 + CIPHERTEXT_SLACK_BYTES

    def __repr__(self) -> str:
        return (
            f"PublicScoringContext(id={self.context_id[:16]}..., N={self.poly_modulus_degree}, "
            f"bits={list(self.coeff_modulus_bits)})"
        )


def check_public_context(
    data: bytes, limits: ScoringLimits = DEFAULT_LIMITS, *, worker: IsolatedWorker | None = None
) -> PublicScoringContext:
    """CONTEXT's validation point: a public CKKS context at >= 128-bit security, within limits, or an error.

    Refuses (each with its own error): bytes that are not a TenSEAL context (:class:`InvalidContext`), a context
    with a secret key or any private part (:class:`ContextHasSecretKey`), a scheme other than CKKS or
    parameters below 128-bit security (:class:`WeakParameters`), a context over ``limits``
    (:class:`ScoringLimitExceeded`), Galois or relinearisation keys, a symmetric context without public key.
    The bytes are loaded by SEAL and TenSEAL in the isolated checker first; this process then loads only the
    parts that passed.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidContext(f"a public context must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise InvalidContext("the public context is empty")
    if len(raw) > limits.max_context_bytes:
        raise ScoringLimitExceeded(
            f"the public context of {len(raw)} bytes exceeds the limit of {limits.max_context_bytes}"
        )
    parts = parse_context(raw)
    report = run_isolated(
        worker,
        "check_context",
        {},
        [parts.parameters, parts.public_key, raw],
        timeout_s=limits.check_timeout_s,
        error=InvalidContext,
        what="the public context",
    )
    if not isinstance(report, dict):  # pragma: no cover - the checker always answers a dict
        raise InvalidContext("the public context could not be checked")
    scheme, n = report.get("scheme"), report.get("poly_modulus_degree")
    primes = tuple(int(p) for p in report.get("primes", ()))
    if scheme != "CKKS":
        raise WeakParameters(f"the context uses scheme {scheme}; encrypted scoring needs CKKS")
    if not isinstance(n, int) or n < min(ALLOWED_POLY_MODULUS_DEGREES):
        raise WeakParameters(
            f"poly modulus degree {n} is too small; allowed: {list(limits.allowed_poly_modulus_degrees)}"
        )
    if n < max(limits.allowed_poly_modulus_degrees) and n not in limits.allowed_poly_modulus_degrees:
        raise InvalidContext(
            f"poly modulus degree {n} is not accepted here; allowed: {list(limits.allowed_poly_modulus_degrees)}"
        )
    if n not in limits.allowed_poly_modulus_degrees:
        raise ScoringLimitExceeded(
            f"poly modulus degree {n} is not accepted here; allowed: {list(limits.allowed_poly_modulus_degrees)}"
        )
    total_bits, max_bits = sum(p.bit_length() for p in primes), int(report.get("max_bits_tc128", 0))
    if not report.get("secure") or total_bits > max_bits:
        raise WeakParameters(
            f"the parameters (N={n}, coefficient modulus of {total_bits} bits) are below 128-bit security: "
            f"at most {max_bits} bits are allowed at N={n} ({report.get('error', '')})"
        )
    if len(primes) < 3:
        raise InvalidContext("the coefficient modulus needs at least two data primes and the special prime")
    if report.get("tenseal_has_secret_key") or not report.get("tenseal_public"):
        raise ContextHasSecretKey("TenSEAL reads this context as private; send the public context only")
    return PublicScoringContext(
        context_bytes=raw,
        poly_modulus_degree=n,
        primes=primes,
        public_key=parts.public_key,
        global_scale=parts.scale,
    )


# --- model ---------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class LoadedModel:
    """A checked MODEL, ready to evaluate: ciphertexts at the working level, one per design column."""

    message: EncryptedModelMessage
    context_id: str
    scale: float
    """The scale of the model ciphertexts; feature columns are encoded at the same scale."""
    level: Level
    weights: list[Any | None]
    """One SEAL ciphertext per design column (None: the column contributes nothing)."""
    base: Any
    """The bias (or base points plus every feature's bin-0 points) times 1, at the product scale."""

    @property
    def kind(self) -> ModelKind:
        return self.message.kind

    @property
    def packing(self) -> Packing:
        return self.message.packing

    @property
    def required_features(self) -> tuple[str, ...]:
        """The feature names the model reads, in column order: check them against consent and the schema."""
        return self.message.features

    @property
    def digest(self) -> str:
        return self.message.digest

    @property
    def design(self) -> Design:
        return self.message.design


def load_model(
    context: PublicScoringContext,
    data: bytes | EncryptedModelMessage,
    limits: ScoringLimits = DEFAULT_LIMITS,
    *,
    worker: IsolatedWorker | None = None,
) -> LoadedModel:
    """MODEL's validation point: framing, header, context binding and every ciphertext, then load.

    Refuses a model made for another context (:class:`ForeignCiphertext`), ciphertexts that SEAL cannot load
    under this context's parameters, that are not fresh 2-component NTT-form CKKS ciphertexts, that do not all
    share one scale, whose scale leaves no room for the product, or that are not replicated over all slots.
    """
    if isinstance(data, EncryptedModelMessage):
        # decoded already (keeps the digest of the bytes as received), or built in memory: check it as bytes
        message = data if data._digest else decode_model(data.to_bytes(), limits)
    else:
        message = decode_model(data, limits)
    if message.context_id != context.context_id:
        raise ForeignCiphertext(
            "the model was encrypted under another context than the one checked for this job "
            f"(model names {message.context_id[:16]}..., context is {context.context_id[:16]}...)"
        )
    if message.design.n_ciphertexts > limits.max_model_ciphertexts:
        raise ScoringLimitExceeded(
            f"the model needs {message.design.n_ciphertexts} ciphertexts; the limit is {limits.max_model_ciphertexts}"
        )
    vectors: list[CKKSVectorBlob] = []
    max_bytes = context.max_ciphertext_bytes()
    for i, blob in enumerate(message.ciphertexts):
        try:
            vector = decode_ckks_vector(blob)
        except _ProtoError as exc:
            raise InvalidCiphertext(f"model ciphertext {i} is not a TenSEAL CKKSVector: {exc}") from None
        if vector.size != context.slots:
            raise InvalidCiphertext(
                f"model ciphertext {i} holds {vector.size} values; encrypt each value replicated across all "
                f"{context.slots} slots (ts.ckks_vector(ctx, [v] * {context.slots}))"
            )
        if len(vector.seal_bytes) > max_bytes:
            raise ScoringLimitExceeded(
                f"model ciphertext {i} has {len(vector.seal_bytes)} bytes; at most {max_bytes}"
            )
        vectors.append(vector)
    reports = run_isolated(
        worker,
        "check_ciphertexts",
        {"poly_modulus_degree": context.poly_modulus_degree, "primes": list(context.primes)},
        [v.seal_bytes for v in vectors],
        timeout_s=limits.check_timeout_s,
        error=InvalidCiphertext,
        what="the model's ciphertexts",
    )
    if not isinstance(reports, list) or len(reports) != len(vectors):  # pragma: no cover
        raise InvalidCiphertext("the model's ciphertexts could not be checked")
    scales = set()
    for i, rep in enumerate(reports):
        if rep.get("size") != 2 or not rep.get("ntt_form") or rep.get("transparent"):
            raise InvalidCiphertext(
                f"model ciphertext {i} must be a fresh CKKS ciphertext (2 components, NTT form, not transparent)"
            )
        scales.add(float(rep["scale"]))
    if len(scales) != 1:
        raise InvalidCiphertext(f"all model ciphertexts must share one scale, got {sorted(scales)}")
    scale = scales.pop()
    scale_bits = math.log2(scale) if scale > 0 else 0.0
    if not MIN_SCALE_BITS <= scale_bits <= MAX_SCALE_BITS:
        raise InvalidCiphertext(
            f"the model's scale 2^{scale_bits:.1f} is outside [2^{MIN_SCALE_BITS}, 2^{MAX_SCALE_BITS}]"
        )
    level = working_level(context.levels, scale_bits)
    if level is None:
        raise InvalidCiphertext(
            f"at scale 2^{scale_bits:.1f} no level of this context's modulus chain holds the product "
            f"(needs {2 * scale_bits + HEADROOM_BITS:.0f} bits)"
        )
    for i, rep in enumerate(reports):
        if int(rep["chain_index"]) < level.chain_index:
            raise InvalidCiphertext(f"model ciphertext {i} is at a level too low for the product")
    try:
        ciphertexts = []
        for v in vectors:
            ct = seal_load(seal.Ciphertext(), context.seal_context, v.seal_bytes)
            context.evaluator.mod_switch_to_inplace(ct, list(level.parms_id))
            ciphertexts.append(ct)
        weights, base = _prepare_model(context, message.design, message.packing, ciphertexts, level, scale)
    except (ValueError, RuntimeError, MemoryError, IndexError) as exc:
        raise InvalidCiphertext(f"the model's ciphertexts cannot be used: {exc}") from None
    return LoadedModel(message, context.context_id, scale, level, weights, base)


def _prepare_model(
    context: PublicScoringContext,
    design: Design,
    packing: Packing,
    ciphertexts: list[Any],
    level: Level,
    scale: float,
) -> tuple[list[Any | None], Any]:
    """Per model, once: design-column ciphertexts and the base times an encoded 1 (1 + 1i for complex
    packing: the base belongs to both subjects of a slot), at the product scale."""
    ev = context.evaluator
    if design.kind is ModelKind.LOGISTIC:
        weights: list[Any | None] = list(ciphertexts[:-1])
        base_sum = ciphertexts[-1]
    else:
        weights = []
        base_sum = ciphertexts[-1]
        pos = 0
        for edges, missing in design.bins:
            first = ciphertexts[pos]
            others = ciphertexts[pos + 1 : pos + len(edges) + 1 + int(missing)]
            for ct in others:
                delta = seal.Ciphertext()
                ev.sub(ct, first, delta)
                weights.append(None if delta.is_transparent() else delta)
            ev.add_inplace(base_sum, first)
            pos += len(edges) + 1 + int(missing)
    one = seal.Plaintext()
    unit = complex(1.0, 1.0) if packing is Packing.COMPLEX else 1.0
    context.encoder.encode(unit, list(level.parms_id), scale, one)
    base = seal.Ciphertext()
    ev.multiply_plain(base_sum, one, base)
    return weights, base
