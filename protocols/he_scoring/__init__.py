"""Encrypted scoring: a bank's private model evaluated over the safe-room's plaintext features under CKKS.

Who learns what, under which assumptions (the wire format, the method and the figures: ``docs/protocols.md``,
"Encrypted scoring"):

* the safe-room is *semi-honest*; the bank keeps its secret key (a context carrying one is refused) and
  encrypts honestly; CKKS at >= 128-bit security;
* the **safe-room** learns the model's shape (kind, feature names, scorecard bin edges, ciphertext count, the
  CKKS parameters), never weights, points or scores; which features and subjects are used is fixed by the
  caller from consent, never by the ciphertexts;
* the **bank** learns one score per admitted subject, with Gaussian noise (``noise_std``) and a fresh
  re-encryption on every result, and the number scored; nothing of the features beyond what the scores
  reveal. No decrypted value ever comes back (it would leak the secret key, Li & Micciancio 2021). A crafted
  model can still read a feature back through its scores: that control (use counts, rate limits, approval)
  belongs to the service; with complex packing two subjects share a slot and must be counted together.

Parties: :mod:`~protocols.he_scoring.bank` (:class:`BankScoringKey`) and, for the safe-room,
:mod:`~protocols.he_scoring.load` (the validation point of CONTEXT and MODEL) and
:mod:`~protocols.he_scoring.server` (:func:`score`, :class:`ScoringServer`); the frames are in
:mod:`~protocols.he_scoring.wire`, TenSEAL's formats in :mod:`~protocols.he_scoring.protobuf`, the SEAL plumbing
in :mod:`~protocols.he_scoring.seal_objects`, the isolated checker in :mod:`~protocols.he_scoring.checker`.
"""

from protocols.errors import (
    ContextHasSecretKey,
    ForeignCiphertext,
    InvalidCiphertext,
    InvalidContext,
    InvalidFeatureMatrix,
    InvalidScoringModel,
    ScoringLimitExceeded,
    ScoringStageError,
    WeakParameters,
)
from protocols.he_scoring.bank import BankScoringKey, DecryptedScores, Scorecard, ScorecardFeature
from protocols.he_scoring.checker import ISOLATED_OPERATIONS, run_isolated, shutdown_checker
from protocols.he_scoring.load import LoadedModel, PublicScoringContext, check_public_context, load_model
from protocols.he_scoring.protobuf import CKKSVectorBlob, context_id_of, decode_ckks_vector
from protocols.he_scoring.server import EncodedColumns, ScoringServer, design_matrix, encode_features, score
from protocols.he_scoring.wire import (
    ALLOWED_POLY_MODULUS_DEGREES,
    DEFAULT_COEFF_MOD_BIT_SIZES,
    DEFAULT_LIMITS,
    DEFAULT_PACKING,
    DEFAULT_POLY_MODULUS_DEGREE,
    DEFAULT_SCALE_BITS,
    DEFAULT_SCORE_NOISE_STD,
    EncryptedModelMessage,
    MessageType,
    ModelKind,
    Packing,
    ScoreResultMessage,
    ScoringLimits,
    ServerStage,
    SlotLayout,
    decode_model,
    decode_result,
)

__all__ = [
    "ALLOWED_POLY_MODULUS_DEGREES",
    "DEFAULT_COEFF_MOD_BIT_SIZES",
    "DEFAULT_LIMITS",
    "DEFAULT_PACKING",
    "DEFAULT_POLY_MODULUS_DEGREE",
    "DEFAULT_SCALE_BITS",
    "DEFAULT_SCORE_NOISE_STD",
    "ISOLATED_OPERATIONS",
    "BankScoringKey",
    "CKKSVectorBlob",
    "ContextHasSecretKey",
    "DecryptedScores",
    "EncodedColumns",
    "EncryptedModelMessage",
    "ForeignCiphertext",
    "InvalidCiphertext",
    "InvalidContext",
    "InvalidFeatureMatrix",
    "InvalidScoringModel",
    "LoadedModel",
    "MessageType",
    "ModelKind",
    "Packing",
    "PublicScoringContext",
    "ScoreResultMessage",
    "Scorecard",
    "ScorecardFeature",
    "ScoringLimitExceeded",
    "ScoringLimits",
    "ScoringServer",
    "ScoringStageError",
    "ServerStage",
    "SlotLayout",
    "WeakParameters",
    "check_public_context",
    "context_id_of",
    "decode_ckks_vector",
    "decode_model",
    "decode_result",
    "design_matrix",
    "encode_features",
    "load_model",
    "run_isolated",
    "score",
    "shutdown_checker",
]
