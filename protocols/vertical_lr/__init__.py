"""Vertical (hetero) logistic regression: a bank and the safe-room train one model on aligned rows, with a
key-holding coordinator, in the manner of FATE's coordinated hetero-LR.

Who learns what (all three parties *semi-honest* and *non-colluding*: the coordinator with either side decrypts
everything that side lacks; Paillier at 2048 bits, DJN short-exponent obfuscators; messages, the computation and
the full account: ``docs/protocols.md``, "Vertical logistic regression"):

* the **coordinator** sees one uniformly masked vector per side per batch: nothing of gradients, loss, weights,
  features or labels, only shapes and when training stopped; with ``loss="exact"`` (the default) it also
  decrypts each batch's joined linear predictors ``z = x_g w_g + b + x_h w_h`` (one number per training row,
  the model's logit: neither part alone, no label) to take the exact sigmoid, which it returns encrypted —
  trust it holds because it runs in the attested enclave; ``loss="taylor"`` avoids this at the cost of the
  second-order approximation's optimum;
* the **guest** (the bank) sees host ciphertexts, its own gradients and the loss: ``p_g + 1`` linear equations
  per batch in the host's partial predictions, which is why the host refuses batches of at most ``p_g + 1`` rows;
* the **host** (the safe-room) sees guest ciphertexts and its own gradient: ``p_h`` linear equations per batch in
  the residuals, hence in the labels (FATE's known leakage; the guest refuses batches of at most ``p_h`` rows);
* each keeps its half of the model; scoring needs both, the host's part encrypted under the bank's own key.

Parties: :mod:`~protocols.vertical_lr.guest`, :mod:`~protocols.vertical_lr.host`,
:mod:`~protocols.vertical_lr.coordinator`; the frame in :mod:`~protocols.vertical_lr.messages`, the
configuration and data checks in :mod:`~protocols.vertical_lr.inputs`, the two halves and scoring in
:mod:`~protocols.vertical_lr.scoring`, the in-process driver and the plaintext reference beside them.
"""

from protocols.errors import (
    InvalidConfig,
    InvalidMessage,
    InvalidTrainingData,
    ProtocolStateError,
    TrainingDiverged,
)
from protocols.errors import ProtocolError as VerticalLRError
from protocols.vertical_lr.coordinator import Coordinator
from protocols.vertical_lr.driver import InMemoryTransport, TrainingReport, Transport, train_vertical_lr
from protocols.vertical_lr.guest import Guest
from protocols.vertical_lr.host import Host
from protocols.vertical_lr.inputs import VerticalLRConfig, batches_for, check_features, check_labels
from protocols.vertical_lr.messages import (
    FLAG_STOP,
    FLAG_WITH_LOSS,
    KEY_ID_BYTES,
    MAGIC,
    MAX_BODY_BYTES,
    MAX_VALUES,
    SESSION_BYTES,
    VERSION,
    Message,
    MessageType,
    Party,
    Stage,
    decode_message,
    key_id_of,
)
from protocols.vertical_lr.reference import local_fit, reference_fit
from protocols.vertical_lr.scoring import (
    SCORE_FRAC_BITS,
    GuestModel,
    HostModel,
    guest_score,
    host_score_contribution,
    sigmoid,
    standardisation,
)

__all__ = [
    "FLAG_STOP",
    "FLAG_WITH_LOSS",
    "KEY_ID_BYTES",
    "MAGIC",
    "MAX_BODY_BYTES",
    "MAX_VALUES",
    "SCORE_FRAC_BITS",
    "SESSION_BYTES",
    "VERSION",
    "Coordinator",
    "Guest",
    "GuestModel",
    "Host",
    "HostModel",
    "InMemoryTransport",
    "InvalidConfig",
    "InvalidMessage",
    "InvalidTrainingData",
    "Message",
    "MessageType",
    "Party",
    "ProtocolStateError",
    "Stage",
    "TrainingDiverged",
    "TrainingReport",
    "Transport",
    "VerticalLRConfig",
    "VerticalLRError",
    "batches_for",
    "check_features",
    "check_labels",
    "decode_message",
    "guest_score",
    "host_score_contribution",
    "key_id_of",
    "local_fit",
    "reference_fit",
    "sigmoid",
    "standardisation",
    "train_vertical_lr",
]
