"""Paillier on raw integers with gmpy2: the hot path of vertical logistic regression.

A *sharp* library (the hazmat of :mod:`protocols.vertical_lr`): it works on bare ``gmpy2.mpz`` ciphertexts and
integer plaintexts and leaves it to the caller to keep scales, masks and re-randomisation right. ``phe``
(python-paillier) generates the keys and is the reference the tests check against.

Scheme: ``g = n + 1``, ``Enc(m; r) = (1 + m n) * r^n mod n^2``, additive (``Enc(a) Enc(b) = Enc(a + b)``,
``Enc(a)^k = Enc(k a)``), CRT decryption; 2048-bit keys by default (about 112-bit security). Security rests on
DCR and, for the default ``"short_exponent"`` obfuscators, on the DJN short-exponent assumption; ciphertexts of
either kind decrypt with any Paillier implementation. Keys: :mod:`~protocols.paillier_fast.keys`; fixed-point
encoding: :mod:`~protocols.paillier_fast.encoding`; obfuscators: :mod:`~protocols.paillier_fast.obfuscators`;
encryption, homomorphic sums and the wire form: :mod:`~protocols.paillier_fast.ciphertexts`. The method and
figures: ``docs/protocols.md`` ("Vertical logistic regression") and ``docs/benchmarks.md``.
"""

from protocols.errors import EncodingOverflow, InvalidCiphertext
from protocols.errors import ProtocolError as PaillierError
from protocols.paillier_fast.ciphertexts import (
    ROWS_PER_BLOCK,
    _column_dots_on_executor,
    add_plain,
    best_window,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    encrypt_raw,
    encrypted_column_dots,
    multi_exp,
    product,
    rerandomise,
)
from protocols.paillier_fast.encoding import (
    HEADROOM_BITS,
    decode_fixed,
    encode_fixed,
    encode_ints,
    quantize,
    random_masks,
    to_signed,
)
from protocols.paillier_fast.keys import (
    DEFAULT_KEY_BITS,
    MIN_KEY_BITS,
    PrivateKey,
    PublicKey,
    generate_keypair,
)
from protocols.paillier_fast.obfuscators import (
    FIXED_BASE_WINDOW,
    OBFUSCATORS_PER_CHUNK,
    ObfuscatorKind,
    ObfuscatorPool,
    PoolStats,
    Timer,
    fill_pools,
)

__all__ = [
    "DEFAULT_KEY_BITS",
    "FIXED_BASE_WINDOW",
    "HEADROOM_BITS",
    "MIN_KEY_BITS",
    "OBFUSCATORS_PER_CHUNK",
    "ROWS_PER_BLOCK",
    "EncodingOverflow",
    "InvalidCiphertext",
    "ObfuscatorKind",
    "ObfuscatorPool",
    "PaillierError",
    "PoolStats",
    "PrivateKey",
    "PublicKey",
    "Timer",
    "_column_dots_on_executor",
    "add_plain",
    "best_window",
    "ciphertexts_from_bytes",
    "ciphertexts_to_bytes",
    "decode_fixed",
    "encode_fixed",
    "encode_ints",
    "encrypt_raw",
    "encrypted_column_dots",
    "fill_pools",
    "generate_keypair",
    "multi_exp",
    "product",
    "quantize",
    "random_masks",
    "rerandomise",
    "to_signed",
]
