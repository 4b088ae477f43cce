"""Secure aggregation of model updates across banks, after Bonawitz et al. 2017 and Flower's SecAgg+.

Who learns what (*semi-honest* banks and server; stages, messages and parameters: ``docs/protocols.md``,
"Horizontal training with secure aggregation"):

* the **server** learns ``sum_i w_i * clip(x_i)`` and ``sum_i w_i`` over the banks that finish the round (the
  survivors ``U3``), and the sets of banks per stage; never a single update. A round never finishes with fewer
  than ``max(threshold, 3)`` survivors (with two, either could subtract its own update from the sum). A round
  may carry a *tail* of exact integers beside the update (``SecAggParams.tail``): the server learns their exact
  sums over the survivors (joint feature moments, validation-loss sums), never one bank's;
* **malicious banks**: a sum longer than ``sum w_i * clip_norm`` (no clipped inputs make one) is refused
  (:func:`~protocols.secagg.quantisation.dequantise`); a bank that stays inside the clip ball or overstates its
  weight is not caught here (its influence is bounded only in the enclave mode);
* **drop-outs**: banks that leave after sharing their keys are survived as long as ``threshold`` banks send
  their unmasking shares; their inputs are never revealed (only their mask keys are);
* a **bank** learns the public keys, the survivor set and the aggregate: subtracting its own contribution leaves
  the sum of at least two others;
* **collusion**: the server with up to ``threshold - 1`` banks learns nothing beyond the sum of the other
  survivors (``threshold > n / 2``). Not covered: a malicious server that shows banks different survivor sets,
  out-of-range inputs from malicious banks beyond what the sum's norm check catches (see docs/protocols.md and
  the enclave job ``fedavg_aggregate`` for a bound no bank can evade), leakage from the aggregate itself.

Parties: :mod:`~protocols.secagg.client` (:class:`SecAggClient`) and :mod:`~protocols.secagg.server`
(:class:`SecAggServer`); the frames in :mod:`~protocols.secagg.messages`, the parameters in
:mod:`~protocols.secagg.params`, the masks, Shamir sharing and quantisation in their own modules.
"""

from protocols.errors import InvalidSecAggMessage, SecAggAborted, SecAggStageError
from protocols.secagg.client import SecAggClient
from protocols.secagg.masks import pairwise_mask, prg, self_mask
from protocols.secagg.messages import Frame, decode_frame, encode_frame, peek_type, survivors_frame
from protocols.secagg.params import (
    HALF,
    KEY_BYTES,
    MAX_CLIENTS,
    MAX_DIM,
    MAX_TAIL,
    MIN_SURVIVORS,
    MODULUS,
    MODULUS_BITS,
    SHAMIR_PRIME,
    SHARE_BYTES,
    STAGE_OF,
    TAIL_BITS,
    MsgType,
    RoundInfo,
    SecAggParams,
    Stage,
    session_id,
)
from protocols.secagg.quantisation import clip_l2, dequantise, dequantise_tail, quantise
from protocols.secagg.server import SecAggServer
from protocols.secagg.shamir import shamir_combine, shamir_split

__all__ = [
    "HALF",
    "KEY_BYTES",
    "MAX_CLIENTS",
    "MAX_DIM",
    "MAX_TAIL",
    "MIN_SURVIVORS",
    "MODULUS",
    "MODULUS_BITS",
    "SHAMIR_PRIME",
    "SHARE_BYTES",
    "STAGE_OF",
    "TAIL_BITS",
    "Frame",
    "InvalidSecAggMessage",
    "MsgType",
    "RoundInfo",
    "SecAggAborted",
    "SecAggClient",
    "SecAggParams",
    "SecAggServer",
    "SecAggStageError",
    "Stage",
    "clip_l2",
    "decode_frame",
    "dequantise",
    "dequantise_tail",
    "encode_frame",
    "pairwise_mask",
    "peek_type",
    "prg",
    "quantise",
    "self_mask",
    "session_id",
    "shamir_combine",
    "shamir_split",
    "survivors_frame",
]
