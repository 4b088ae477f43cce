"""Errors of the protocol libraries: one tree, independent of ``pps`` (which maps it onto its own, once).

Every error has a stable ``code`` and a ``message`` that says what is wrong; ``details`` carries machine-readable
facts where they help. The tree says *what kind* of refusal it is; each protocol names its own leaves::

    ProtocolError                      protocol_error
    ├── InvalidMessage                 invalid_message          malformed, foreign or out-of-range bytes
    │   ├── InvalidCiphertext          invalid_ciphertext       a ciphertext (or frame of them) that cannot be used
    │   │   └── ForeignCiphertext      ciphertext_from_another_context
    │   ├── InvalidContext             invalid_he_context       not a usable public CKKS context
    │   │   ├── ContextHasSecretKey    he_context_has_secret_key
    │   │   └── WeakParameters         he_parameters_too_weak
    │   ├── InvalidScoringModel        invalid_scoring_model
    │   ├── InvalidPSIMessage          invalid_psi_message
    │   └── InvalidSecAggMessage       invalid_secagg_message
    ├── InvalidParameters              invalid_parameters       an argument, setting or plaintext input out of range
    │   ├── InvalidFeatureMatrix       invalid_feature_matrix
    │   ├── InvalidTrainingData        invalid_training_data
    │   │   └── TrainingDiverged       training_diverged        the loss rose or predictions blew up: names the fix
    │   ├── InvalidConfig              invalid_training_config
    │   └── PSISetTooLarge             psi_set_too_large
    ├── MessageTooLarge                message_too_large        a size limit (bytes, ciphertexts, features, ...)
    │   └── ScoringLimitExceeded       he_limit_exceeded
    ├── EncodingOverflow               encoding_overflow        a value too large (or not finite) to encode
    ├── StateError                     wrong_stage              a well-formed message that is not expected now
    │   ├── ScoringStageError          he_scoring_wrong_stage
    │   ├── PSIStageError              psi_wrong_stage
    │   ├── SecAggStageError           secagg_wrong_stage
    │   └── ProtocolStateError         vertical_lr_wrong_stage
    ├── Aborted                        protocol_aborted         too few parties remain; nothing is computed
    │   └── SecAggAborted              secagg_aborted
    └── IsolationError                 isolated_check_failed    the isolated checker gave no verdict
        ├── WorkerCrashed              isolated_worker_crashed
        ├── WorkerTimeout              isolated_worker_timeout
        └── WorkerRefused              isolated_worker_refused

Errors are plain picklable exceptions (they cross process pools: ``details`` and extra attributes travel in
``__dict__``). ``TypeError`` remains for calling code that passes the wrong Python type.
"""

from __future__ import annotations

from typing import Any


class ProtocolError(Exception):
    """Base of every error the protocol libraries raise on purpose."""

    code: str = "protocol_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


# --- kinds ---------------------------------------------------------------------------------------------------


class InvalidMessage(ProtocolError):
    """Bytes that are not a well-formed message of the expected type, or that belong to another session, key or
    context; or a ciphertext that cannot be used. Nothing changed."""

    code = "invalid_message"


class InvalidParameters(ProtocolError):
    """A parameter, a setting or a plaintext input (features, labels, items) is out of range or does not fit."""

    code = "invalid_parameters"


class MessageTooLarge(ProtocolError):
    """A size limit is exceeded (bytes, ciphertexts, features, bins, subjects); refused before any work."""

    code = "message_too_large"


class EncodingOverflow(ProtocolError):
    """A value is not finite, or too large for the plaintext space at the requested scale."""

    code = "encoding_overflow"


class StateError(ProtocolError):
    """A well-formed message or step that is not the one expected at the current stage (out of order, a replay,
    another round)."""

    code = "wrong_stage"


class Aborted(ProtocolError):
    """Too few parties remain for the protocol to finish without revealing an input; nothing is computed."""

    code = "protocol_aborted"


class IsolationError(ProtocolError):
    """The isolated check could not give a verdict on the input; the input must be refused."""

    code = "isolated_check_failed"


# --- encrypted scoring (protocols.he_scoring) --------------------------------------------------------------


class InvalidCiphertext(InvalidMessage):
    """Bytes that are not a well-formed encrypted model, result or ciphertext, or ciphertexts that cannot be
    used (out of range, of other parameters, at the wrong level or scale)."""

    code = "invalid_ciphertext"


class ForeignCiphertext(InvalidCiphertext):
    """A ciphertext (or message) that was made under another context or key than the one it is used with."""

    code = "ciphertext_from_another_context"


class InvalidContext(InvalidMessage):
    """Bytes that are not a usable public CKKS context for scoring."""

    code = "invalid_he_context"


class ContextHasSecretKey(InvalidContext):
    """The context carries a secret key (or a private part); it is refused and never stored."""

    code = "he_context_has_secret_key"


class WeakParameters(InvalidContext):
    """The encryption parameters are below 128-bit security (or not of the kind accepted)."""

    code = "he_parameters_too_weak"


class InvalidScoringModel(InvalidMessage):
    """A well-formed model message whose plaintext description (features, bins) is not acceptable."""

    code = "invalid_scoring_model"


class InvalidFeatureMatrix(InvalidParameters):
    """The plaintext feature matrix does not fit the model (shape, type, non-finite or too large values)."""

    code = "invalid_feature_matrix"


class ScoringLimitExceeded(MessageTooLarge):
    """A size limit of encrypted scoring is exceeded (bytes, ciphertexts, features, bins, subjects)."""

    code = "he_limit_exceeded"


class ScoringStageError(StateError):
    """A step of the scoring server taken out of order."""

    code = "he_scoring_wrong_stage"


# --- private set intersection (protocols.psi) --------------------------------------------------------------


class InvalidPSIMessage(InvalidMessage):
    """Bytes that are not a well-formed PSI message of the expected type, or that do not fit this session."""

    code = "invalid_psi_message"


class PSISetTooLarge(InvalidParameters):
    """A client set (or a request) has more items than the limit the server's setup was made for."""

    code = "psi_set_too_large"


class PSIStageError(StateError):
    """A PSI step taken out of order (e.g. a second request for one session)."""

    code = "psi_wrong_stage"


# --- secure aggregation (protocols.secagg) -----------------------------------------------------------------


class InvalidSecAggMessage(InvalidMessage):
    """Bytes that are not a well-formed secure-aggregation message of the expected type, shape and range, or
    an update that cannot be aggregated (NaN/inf, wrong length); nothing was recorded."""

    code = "invalid_secagg_message"


class SecAggStageError(StateError):
    """A message for another round (replayed or late), another stage, or from a bank not in the round."""

    code = "secagg_wrong_stage"


class SecAggAborted(Aborted):
    """Fewer banks than the threshold (or than three) remain: the round cannot complete and is aborted (nothing
    is averaged)."""

    code = "secagg_aborted"


# --- vertical logistic regression (protocols.vertical_lr) --------------------------------------------------


class InvalidTrainingData(InvalidParameters):
    """Features or labels are malformed: shapes, NaN/inf, labels other than 0/1, mismatched rows."""

    code = "invalid_training_data"


class TrainingDiverged(InvalidTrainingData):
    """Training stopped because it diverged (the loss rose, or linear predictors grew past any sensible
    logit): the message names the cause and the fix (standardise the features, lower the learning rate).
    No model is produced."""

    code = "training_diverged"


class InvalidConfig(InvalidParameters):
    """A training parameter is out of range, or a batch size would let one party solve for the other's data."""

    code = "invalid_training_config"


class ProtocolStateError(StateError):
    """A well-formed vertical-LR message that is not the one expected now (wrong type, sender, session, epoch or
    batch)."""

    code = "vertical_lr_wrong_stage"


# --- the isolated checker (protocols.he_isolation) ---------------------------------------------------------


class WorkerCrashed(IsolationError):
    """The child process died while handling the input (e.g. the native library aborted)."""

    code = "isolated_worker_crashed"

    def __init__(
        self, message: str, *, exitcode: int | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.exitcode = exitcode


class WorkerTimeout(IsolationError):
    """The child did not answer in time and was killed."""

    code = "isolated_worker_timeout"


class WorkerRefused(IsolationError):
    """The operation raised an exception in the child: the input is malformed."""

    code = "isolated_worker_refused"

    def __init__(self, message: str, *, error_type: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.error_type = error_type


def _tree(root: type[ProtocolError]) -> list[type[ProtocolError]]:
    out, stack = [], [root]
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(reversed(cls.__subclasses__()))
    return out


BY_CODE: dict[str, type[ProtocolError]] = {cls.code: cls for cls in _tree(ProtocolError)}
"""Every error of the tree by its code (codes are unique: ``tests/protocols/test_errors.py``)."""
