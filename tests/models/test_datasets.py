"""The real data sets used to judge joint models: loaded offline, split without leaking, dealt to banks."""

from __future__ import annotations

import numpy as np
import pytest

from models import datasets as d


@pytest.mark.parametrize(
    ("loader", "rows", "rate"),
    [
        (d.lending_club_vertical, 9_857, 0.052),
        (d.credit_data_vertical, 4_454, 0.282),
        (d.hmda_vertical, 2_380, 0.120),
    ],
)
def test_real_credit_data_loads_offline_and_splits_vertically(loader, rows: int, rate: float) -> None:
    s = loader(seed=1)
    assert len(s.y_train) + len(s.y_test) == rows
    assert abs(float(np.r_[s.y_train, s.y_test].mean()) - rate) < 0.002
    assert abs(float(s.y_test.mean()) - float(s.y_train.mean())) < 0.01  # stratified
    assert not set(s.guest_features) & set(s.host_features)
    for block in (s.guest_train, s.host_train, s.guest_test, s.host_test):
        assert np.all(np.isfinite(block))  # missing values imputed and flagged
    assert np.allclose(
        s.host_train[:, [not n.count("=") for n in s.host_features]].mean(axis=0), 0, atol=1e-9
    )


def test_no_label_or_protected_column_is_a_feature() -> None:
    assert "Class" not in d.LENDING_CLUB_BANK + d.LENDING_CLUB_PLATFORM
    assert "afam" not in d.HMDA_BANK + d.HMDA_PLATFORM and "deny" not in d.HMDA_BANK + d.HMDA_PLATFORM


def test_a_low_default_portfolio_keeps_every_negative() -> None:
    frame, y = d.lending_club_frame()
    _, y_low = d.with_positive_rate(frame, y, 0.03, seed=2)
    assert abs(float(y_low.mean()) - 0.03) < 1e-3 and int((y_low == 0).sum()) == int((y == 0).sum())
    with pytest.raises(ValueError, match="rate"):
        d.with_positive_rate(frame, y, 0.5)


def test_raw_amounts_stay_raw_when_asked() -> None:
    raw = d.lending_club_vertical(standardise=False)
    column = raw.guest_features.index("funded_amnt")
    assert raw.guest_train[:, column].max() > 10_000  # dollars, as a careless bank would send them


@pytest.mark.parametrize("kind", ["iid", "label_skew", "region_skew"])
def test_horizontal_splits_deal_every_training_row_once(kind: str) -> None:
    s = d.lending_club_vertical(seed=0)
    groups = d.lending_club_regions(seed=0) if kind == "region_skew" else None
    h = d.horizontal_split(s, 4, kind, seed=0, groups=groups)
    x, y = h.pooled()
    assert len(y) == len(s.y_train) and x.shape[1] == len(h.features)
    rates = [float(py.mean()) for _, py in h.banks]
    if kind == "label_skew":
        assert rates == sorted(rates) and rates[-1] > 2 * rates[0]
    if kind == "region_skew":
        assert groups is not None
        assert all(len(set(h.owner[groups == g])) == 1 for g in set(groups))  # a state lends through one bank
