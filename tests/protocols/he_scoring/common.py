"""Helpers shared by the encrypted-scoring tests: sizes, plaintext references, crafted contexts and frames."""

from __future__ import annotations

import json
import struct

import numpy as np
import tenseal.sealapi as seal

from protocols.he_scoring import Scorecard, ScorecardFeature
from protocols.he_scoring.protobuf import decode_ckks_vector, pb_len, pb_varint
from protocols.he_scoring.seal_objects import seal_save

SLOTS = 4096
N_FEATURES = 20
TOLERANCE = 1e-3


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_scorecard() -> Scorecard:
    return Scorecard(
        features=(
            ScorecardFeature("company_age_years", edges=(1.0, 3.0, 10.0), points=(-30, -5, 10, 25)),
            ScorecardFeature("arrears_months", edges=(1.0, 3.0), points=(20, -10, -40), missing_points=-15.0),
            ScorecardFeature("log_sales", edges=(), points=(7.5,)),
            ScorecardFeature("court_cases", edges=(0.5,), points=(12, -35), missing_points=0.0),
        ),
        base_points=600.0,
    )


def scorecard_data(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.uniform(0, 20, n),
            rng.integers(0, 6, n).astype(float),
            rng.normal(10, 2, n),
            rng.integers(0, 3, n).astype(float),
        ]
    )
    x[:, 0][:5] = [1.0, 3.0, 10.0, 0.999, 9.999]  # values on the edges fall in the upper bin
    x[rng.random(n) < 0.1, 1] = np.nan
    x[rng.random(n) < 0.05, 3] = np.nan
    return x


def crafted_context(n: int, bits: list[int], *, with_secret: bool = False) -> bytes:
    """A TenSEAL-format public context built with SEAL directly (TenSEAL itself refuses weak parameters)."""
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(n)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(n, bits))
    context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.NONE)
    keygen = seal.KeyGenerator(context)
    public_key = seal.PublicKey()
    keygen.create_public_key(public_key)
    public = (
        pb_len(1, seal_save(public_key))
        + pb_varint(2 << 3)
        + pb_varint(7)
        + pb_varint(3 << 3 | 1)
        + struct.pack("<d", 2.0**40)
    )
    out = pb_len(1, seal_save(parms)) + pb_len(2, public)
    if with_secret:
        out += pb_len(3, pb_len(1, seal_save(keygen.secret_key())))
    return out


def truncations(data: bytes) -> list[bytes]:
    cuts = {0, 1, 2, 5, 9, 10, 12, 50, 86, 90, 100, 200, len(data) // 3, len(data) // 2, len(data) - 1}
    return [data[:c] for c in sorted(cuts) if c < len(data)]


def third_party_frame(header: dict, blobs: list[bytes]) -> bytes:
    """A MODEL frame written from the documented format with the standard library only."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    out = b"PPHE" + bytes([1, 1]) + struct.pack("!I", len(head)) + head + struct.pack("!I", len(blobs))
    return out + b"".join(struct.pack("!I", len(b)) + b for b in blobs)


def third_party_unframe(data: bytes) -> tuple[dict, list[bytes]]:
    assert data[:6] == b"PPHE" + bytes([1, 2])
    (length,) = struct.unpack_from("!I", data, 6)
    header = json.loads(data[10 : 10 + length])
    pos = 10 + length
    (count,) = struct.unpack_from("!I", data, pos)
    pos += 4
    blobs = []
    for _ in range(count):
        (size,) = struct.unpack_from("!I", data, pos)
        blobs.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return header, blobs


def seal_payload_offset(blob: bytes) -> int:
    vector = decode_ckks_vector(blob)
    return blob.index(vector.seal_bytes)
