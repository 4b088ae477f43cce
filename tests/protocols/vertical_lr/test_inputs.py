"""The configuration and the training data, checked at the door (``protocols.vertical_lr.inputs``)."""

from __future__ import annotations

import numpy as np
import pytest

from protocols import vertical_lr as vl
from protocols.errors import InvalidParameters, ProtocolError


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: vl.Guest(np.ones(5), np.zeros(5)), "2-D"),
        (lambda: vl.Guest(np.ones((5, 0)), np.zeros(5)), "2-D"),
        (lambda: vl.Guest(np.array([[1.0], [np.nan]]), np.array([0, 1])), "NaN or infinite value at row 1"),
        (lambda: vl.Host(np.array([[1.0], [np.inf]])), "NaN or infinite"),
        (lambda: vl.Guest(np.ones((3, 2)), np.array([0, 1, 2])), "0 or 1"),
        (lambda: vl.Guest(np.ones((3, 2)), np.array([0, 1, -1])), "0 or 1"),
        (lambda: vl.Guest(np.ones((3, 2)), np.array([1, 1, 1])), "both classes"),
        (lambda: vl.Guest(np.ones((3, 2)), np.array([0, 1])), "vector of 3"),
        (lambda: vl.Guest(np.ones((3, 2)), np.array(["a", "b", "c"])), "0 or 1"),
        (lambda: vl.Host([["a", "b"]]), "not a numeric matrix"),
    ],
)
def test_bad_training_data(make: object, match: str) -> None:
    with pytest.raises(vl.InvalidTrainingData, match=match):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"l2": -1.0}, "l2"),
        ({"tol": float("nan")}, "tol"),
        ({"batch_size": 0}, "batch_size"),
        ({"early_stopping": True, "compute_loss": False}, "compute_loss"),
        ({"feature_frac_bits": 60}, "feature_frac_bits"),
        ({"obfuscators": "none"}, "obfuscators"),
    ],
)
def test_bad_config(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(vl.InvalidConfig, match=match):
        vl.VerticalLRConfig(**kwargs)  # type: ignore[arg-type]


def test_input_errors_are_protocol_errors_with_codes() -> None:
    with pytest.raises(vl.InvalidTrainingData) as data:
        vl.Host(np.ones(5))
    assert data.value.code == "invalid_training_data" and isinstance(data.value, InvalidParameters)
    with pytest.raises(vl.InvalidConfig) as config:
        vl.VerticalLRConfig(epochs=0)
    assert config.value.code == "invalid_training_config" and not isinstance(config.value, ValueError)
    assert vl.VerticalLRError is ProtocolError  # the name the callers catch: everything the protocol refuses
