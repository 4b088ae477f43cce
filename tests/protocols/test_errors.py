"""The protocols' error tree (``protocols.errors``): one tree, stable and unique codes, picklable errors."""

from __future__ import annotations

import pickle

import pytest

from protocols import errors as pe


def test_every_error_has_its_own_code() -> None:
    tree = [cls for cls in pe._tree(pe.ProtocolError) if cls.__module__ == pe.__name__]
    codes = [cls.code for cls in tree]
    assert len(codes) == len(set(codes))
    assert {cls.code: cls for cls in tree} == pe.BY_CODE
    assert all("code" in vars(cls) for cls in tree)  # each class states its code, none inherits one


def test_the_kinds_and_some_leaves() -> None:
    kinds = (pe.InvalidMessage, pe.InvalidParameters, pe.MessageTooLarge, pe.EncodingOverflow, pe.StateError)
    assert all(issubclass(k, pe.ProtocolError) for k in kinds)
    assert issubclass(pe.ForeignCiphertext, pe.InvalidCiphertext)
    assert issubclass(pe.ScoringLimitExceeded, pe.MessageTooLarge)
    assert issubclass(pe.SecAggStageError, pe.StateError)
    assert issubclass(pe.WorkerCrashed, pe.IsolationError)
    assert not any(issubclass(cls, ValueError) for cls in pe.BY_CODE.values())


def test_codes_the_clients_see_are_unchanged() -> None:
    """Codes that cross the HTTP edge and job records: stable."""
    assert {
        pe.InvalidPSIMessage.code,
        pe.PSISetTooLarge.code,
        pe.InvalidSecAggMessage.code,
        pe.SecAggStageError.code,
        pe.SecAggAborted.code,
        pe.InvalidContext.code,
        pe.ContextHasSecretKey.code,
        pe.WeakParameters.code,
        pe.InvalidCiphertext.code,
        pe.ForeignCiphertext.code,
        pe.InvalidScoringModel.code,
        pe.InvalidFeatureMatrix.code,
        pe.ScoringLimitExceeded.code,
    } == {
        "invalid_psi_message",
        "psi_set_too_large",
        "invalid_secagg_message",
        "secagg_wrong_stage",
        "secagg_aborted",
        "invalid_he_context",
        "he_context_has_secret_key",
        "he_parameters_too_weak",
        "invalid_ciphertext",
        "ciphertext_from_another_context",
        "invalid_scoring_model",
        "invalid_feature_matrix",
        "he_limit_exceeded",
    }


@pytest.mark.parametrize("cls", sorted(pe.BY_CODE.values(), key=lambda c: c.code), ids=lambda c: c.code)
def test_errors_survive_pickling_with_their_details(cls: type[pe.ProtocolError]) -> None:
    """Errors cross process pools (setup shards, gradient blocks): message, details and extras travel."""
    err = cls("what went wrong", details={"index": 3})
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert (back.message, back.details, str(back)) == ("what went wrong", {"index": 3}, "what went wrong")
    crashed = pickle.loads(pickle.dumps(pe.WorkerCrashed("died", exitcode=-6)))
    assert crashed.exitcode == -6
