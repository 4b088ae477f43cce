"""A sealed dataset's columns and a bank's weights, encrypted here under the enclave's public HE contexts
(``he`` extra). The secret keys live only in the attested enclave: nobody outside it can read these, the party
that encrypted them included."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pps_wire.sealed import plain_modulus_of


def _sealed_context(public_context: bytes) -> tuple[Any, int]:
    import tenseal as ts

    ctx = ts.context_from(public_context)
    if ctx.has_secret_key() or not ctx.is_public():
        raise ValueError("a sealed-dataset context must be public (the enclave keeps the secret key)")
    slots = ctx.seal_context().data.first_context_data().parms().poly_modulus_degree() // 2
    return ctx, int(slots)


def encrypt_sealed_columns(
    public_context: bytes, columns: dict[str, Iterable[float]], bounds: dict[str, tuple[float, float]]
) -> dict[str, list[bytes]]:
    """The provider's side of a sealed upload: each column clipped to its ``bounds`` and encrypted
    column-major under the enclave's public context — one CKKS vector per block of N/2 subjects (slot ``r`` of
    block ``b`` holds subject ``b * N/2 + r``; the last block padded with zeros). Missing values are refused:
    impute before sealing."""
    import numpy as np
    import tenseal as ts

    ctx, slots = _sealed_context(public_context)
    out: dict[str, list[bytes]] = {}
    for name, values in columns.items():
        if name not in bounds:
            raise ValueError(f"column {name!r} needs bounds (lower, upper)")
        lower, upper = bounds[name]
        x = np.asarray(list(values), dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError(f"column {name!r} holds missing or infinite values: impute before sealing")
        x = np.clip(x, lower, upper)
        n_blocks = -(-len(x) // slots)
        padded = np.zeros(n_blocks * slots)
        padded[: len(x)] = x
        out[name] = [
            ts.ckks_vector(ctx, padded[b * slots : (b + 1) * slots].tolist()).serialize()
            for b in range(n_blocks)
        ]
    return out


def encrypt_sealed_integer_columns(
    bfv_public_context: bytes, columns: dict[str, Iterable[float]], bounds: dict[str, tuple[float, float]]
) -> dict[str, list[bytes]]:
    """The provider's side of an exact integer column: each value must be an integer in its column's ``bounds``
    (integers too) — refused otherwise, never clipped or rounded silently — and the column's worst-case sum
    (subjects x the larger bound) must stay below half the BFV plain modulus, so it cannot wrap. Encrypted
    column-major under the enclave's public BFV context in blocks of N/2 subjects, as :func:`encrypt_sealed_columns`
    does (slot ``r`` of block ``b`` holds subject ``b * N/2 + r``; the last block padded with zeros)."""
    import numpy as np
    import tenseal as ts

    ctx, slots = _sealed_context(bfv_public_context)
    t = plain_modulus_of(ctx)
    out: dict[str, list[bytes]] = {}
    for name, values in columns.items():
        if name not in bounds:
            raise ValueError(f"column {name!r} needs bounds (lower, upper)")
        lower, upper = bounds[name]
        if lower != int(lower) or upper != int(upper) or not lower < upper:
            raise ValueError(f"integer column {name!r}: bounds are integers, lower < upper")
        x = np.asarray(list(values), dtype=np.float64)
        if not np.isfinite(x).all() or (x != np.round(x)).any():
            raise ValueError(f"integer column {name!r} holds a value that is not an integer")
        if (x < lower).any() or (x > upper).any():
            raise ValueError(
                f"integer column {name!r} holds values outside [{int(lower)}, {int(upper)}]: declare wider bounds"
            )
        if len(x) * max(abs(int(lower)), abs(int(upper))) > (t - 1) // 2:
            raise ValueError(
                f"integer column {name!r}: {len(x)} values in [{int(lower)}, {int(upper)}] could sum past the "
                f"plain modulus {t}; narrow the bounds"
            )
        n_blocks = -(-len(x) // slots)
        padded = np.zeros(n_blocks * slots, dtype=np.int64)
        padded[: len(x)] = x.astype(np.int64)
        out[name] = [
            ts.bfv_vector(ctx, padded[b * slots : (b + 1) * slots].tolist()).serialize()
            for b in range(n_blocks)
        ]
    return out


def encrypt_sealed_weights(public_context: bytes, weights: dict[str, float]) -> dict[str, bytes]:
    """A bank's weights under the enclave's public context, each replicated across all slots."""
    import tenseal as ts

    ctx, slots = _sealed_context(public_context)
    return {k: ts.ckks_vector(ctx, [float(w)] * slots).serialize() for k, w in weights.items()}
