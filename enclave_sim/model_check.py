"""The model policy a bank's scoring model must meet before it runs, and the coarsening of what it releases.

Runs inside the enclave (it is part of the measured build): the bank provisions its model's *plaintext*
parameters under a quote it verified, the host supplies the platform's feature distribution and the policy the
operator published (a ledger entry), and :func:`check_model` decides. The operator never sees the weights;
the bank learns the verdict and, per feature, the share of the score's variance its model puts there.

Why: an encrypted model is opaque to the safe-room, so a bank can put weight 1 on one feature and read it
back (measured: within 2.45 % for 10 of 10 enterprises), or pack three count features into one score with
weights 1, 10^3, 10^6 and read all three exactly. A model that *scores* spreads its weight over several
features; a model that *reads* concentrates it. The policy says so in numbers (:class:`ModelPolicy`):

* ``min_material_features`` features each carry at least ``material_share`` of the score's variance;
* no feature carries more than ``max_share`` of it — computed on the platform's own feature distribution
  (after the bank's preprocessing), with the features taken as independent (``share_j = Var(c_j) / sum_k
  Var(c_k)`` for the contribution ``c_j`` of feature ``j``);
* weights are bounded: no feature's contribution has a standard deviation above ``max_contribution_std``
  (log-odds units) and the bias is at most ``max_abs_bias``;
* no packing: one resolution step of a feature moves the score by at most ``max_step_ratio`` times the
  spread (standard deviation) of the rest of the score, so that no feature's steps stand clear of the others'
  noise (packing needs a step larger than the whole range of what it is packed over);
* across models: a bank's approved models in the window, taken together, may not pin a feature down — the
  best linear unbiased estimate of feature ``j`` from all their outputs (each seen with its release error, see
  :func:`release_error`), with the other features as noise, stays at least as imprecise as the read-back
  floor above. In numbers: its standard deviation ``1 / sqrt(w_j^T (W_-j Sigma_-j W_-j^T + T)^+ w_j)``, with
  ``W`` the models' effective weights per unit of each feature (``w_j`` its column, ``W_-j`` the others),
  ``Sigma`` the features' variances on the platform's distribution (taken as independent) and ``T`` the
  outputs' error variances.
  So k models cannot be solved for k features (``t + d`` and ``t - d`` give ``t`` to the release error), while
  an honest update — a retraining, or one weight moved a little — isolates only the *difference*, whose effect
  on the score drowns in the output's resolution. (The leverage ``b_j^T (B B^T)^+ b_j``, the largest share
  feature ``j`` reaches in any combination, is still reported; it is 1 for any two models differing in one
  weight, which is why it is not the rule.)

Release granularity (:class:`Granularity`): the subject's consent says what leaves — ``decision`` (approve /
decline at the bank's stated PD threshold), ``grade`` (the bank's PD band edges, at most
``MAX_GRADES`` bands) or ``score`` (the PD rounded to a stated resolution, no finer than
``MIN_SCORE_RESOLUTION``). :func:`coarsen` applies it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from enclave_sim.errors import ModelRefused as _ModelRefused
from enclave_sim.errors import ProvisioningError

FloatArray = npt.NDArray[np.float64]

MAX_MODEL_FEATURES = 64
MAX_ABS_PARAMETER = 1e6
MAX_GRADES = 20
MIN_SCORE_RESOLUTION = 0.001
DEFAULT_GRADE_EDGES: tuple[float, ...] = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
"""A PD master scale of ten grades (each band doubles the PD), used when the bank states none."""
DEFAULT_SCORE_RESOLUTION = 0.01
GRANULARITIES = ("decision", "grade", "score")
"""From the coarsest to the finest."""


def refused(reasons: Sequence[str]) -> _ModelRefused:
    """The error naming every rule a model breaks."""
    return _ModelRefused("the model does not meet the published model policy: " + "; ".join(reasons))


# --- the policy --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPolicy:
    """What the operator publishes (and the ledger records, with its :meth:`digest`)."""

    min_material_features: int = 3
    material_share: float = 0.01
    max_share: float = 0.6
    max_contribution_std: float = 4.0
    max_abs_bias: float = 50.0
    max_step_ratio: float = 2.5
    min_readback_relative: float = 0.2
    """Read from one score with the rest of it as noise, no feature may be pinned down more precisely than
    the coarser of its resolution step and this fraction of its typical value (``log1p`` features: of the
    amount, i.e. ``log(1 + r)``) — or ``narrow_spread`` times its population spread, for a feature narrower
    than that (guessing its median already comes within 20 %)."""
    narrow_spread: float = 1.0
    """For a feature narrower than that (its population already pins it within ``min_readback_relative``), the
    read-back floor is this fraction of its population standard deviation: 1 — the score may not tell it more
    precisely than the population does (0.5 before issue 17's follow-up let ``tax_months_filed``, 72 % at its
    maximum, be read to 5.5 % when guessing the median gives 9 %)."""
    window_days: int = 90
    """Approved models of one bank within this window are checked together (posterior precision)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_material_features <= MAX_MODEL_FEATURES:
            raise ValueError(f"min_material_features must be in [1, {MAX_MODEL_FEATURES}]")
        if not 0 < self.material_share < 1 or not 0 < self.max_share <= 1:
            raise ValueError("material_share and max_share must be in (0, 1)")
        if self.material_share * self.min_material_features > 1:
            raise ValueError("min_material_features x material_share exceeds the whole variance")
        for name in ("max_contribution_std", "max_abs_bias", "max_step_ratio"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not 0 < self.narrow_spread <= 4:
            raise ValueError("narrow_spread must be in (0, 4]")
        if not 1 <= self.window_days <= 3660:
            raise ValueError("window_days must be in [1, 3660]")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ModelPolicy:
        unknown = sorted(set(doc) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown model policy field(s): {', '.join(unknown)}")
        return cls(**dict(doc))

    def digest(self) -> str:
        return hashlib.sha256(_canonical(self.as_dict())).hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --- the model the bank provisions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Prep:
    center: float = 0.0
    scale: float = 1.0
    clip: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"center": self.center, "scale": self.scale}
        if self.clip is not None:
            out["clip"] = list(self.clip)
        return out

    def apply(self, x: FloatArray) -> FloatArray:
        if self.clip is not None:
            x = np.clip(x, *self.clip)
        out: FloatArray = (x - self.center) / self.scale
        return out


@dataclass(frozen=True)
class Granularity:
    """What leaves for one subject: ``decision``, ``grade`` or ``score`` (see the module docstring)."""

    level: str
    threshold: float = 0.5
    edges: tuple[float, ...] = DEFAULT_GRADE_EDGES
    resolution: float = DEFAULT_SCORE_RESOLUTION

    def __post_init__(self) -> None:
        if self.level not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}")


@dataclass(frozen=True)
class PlainModel:
    """A logistic regression ``PD = sigmoid(bias + sum_j w_j * prep_j(x_j))`` in plaintext, with how the bank
    wants its coarse outputs cut (decision threshold, grade edges, score resolution — all on the PD)."""

    weights: dict[str, float]
    bias: float
    preprocess: dict[str, Prep] = field(default_factory=dict)
    threshold: float = 0.5
    grade_edges: tuple[float, ...] = DEFAULT_GRADE_EDGES
    score_resolution: float = DEFAULT_SCORE_RESOLUTION

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def prep(self, name: str) -> Prep:
        return self.preprocess.get(name, Prep())

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "logistic",
            "weights": dict(self.weights),
            "bias": self.bias,
            "preprocess": {k: self.prep(k).as_dict() for k in self.weights},
            "release": {
                "threshold": self.threshold,
                "grade_edges": list(self.grade_edges),
                "score_resolution": self.score_resolution,
            },
        }

    def digest(self) -> str:
        """What approvals and disclosure accounting name: every parameter that changes an output."""
        return hashlib.sha256(_canonical(self.as_dict())).hexdigest()

    def granularity(self, level: str) -> Granularity:
        return Granularity(level, self.threshold, self.grade_edges, self.score_resolution)

    def contributions(self, x: Mapping[str, FloatArray]) -> FloatArray:
        """Per subject and feature, ``w_j * prep_j(x_j)`` (missing values contribute nothing)."""
        cols = []
        for name, w in self.weights.items():
            z = self.prep(name).apply(np.asarray(x[name], dtype=np.float64))
            cols.append(np.nan_to_num(w * z, nan=0.0))
        return np.column_stack(cols) if cols else np.empty((0, 0))

    def pd(self, x: Mapping[str, FloatArray]) -> FloatArray:
        z = self.bias + self.contributions(x).sum(axis=1)
        out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        return out


@dataclass(frozen=True)
class Characteristic:
    """One scorecard characteristic: bin ``b`` is ``[edges[b-1], edges[b])`` (open at both ends), ``points[b]``
    its points; ``missing`` the points of a missing value (``None``: none allowed)."""

    edges: tuple[float, ...]
    points: tuple[float, ...]
    missing: float | None = None

    def points_of(self, x: FloatArray) -> FloatArray:
        bins = np.searchsorted(np.asarray(self.edges), np.nan_to_num(x), side="right")
        out: FloatArray = np.where(
            np.isnan(x), 0.0 if self.missing is None else self.missing, np.asarray(self.points)[bins]
        )
        return out


@dataclass(frozen=True)
class PlainScorecard:
    """A scorecard ``base_points + sum_j points_j(bin of x_j)`` in plaintext (bins on the features at their
    published resolution). The policy's scale-free rules apply (shares, packing, read-back); its points have no
    log-odds scale, so the weight and bias bounds do not, and it releases points (encrypted scoring only)."""

    characteristics: dict[str, Characteristic]
    base_points: float = 0.0

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.characteristics)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "scorecard",
            "base_points": self.base_points,
            "features": [
                {
                    "name": n,
                    "edges": list(c.edges),
                    "points": list(c.points),
                    **({"missing_points": c.missing} if c.missing is not None else {}),
                }
                for n, c in self.characteristics.items()
            ],
        }

    def digest(self) -> str:
        return hashlib.sha256(_canonical(self.as_dict())).hexdigest()

    def contributions(self, x: Mapping[str, FloatArray]) -> FloatArray:
        cols = [c.points_of(np.asarray(x[n], dtype=np.float64)) for n, c in self.characteristics.items()]
        return np.column_stack(cols) if cols else np.empty((0, 0))

    def slopes(self, sample: Mapping[str, FloatArray]) -> dict[str, float]:
        """Per feature, the least-squares slope of its points on the feature (its linear part, for the
        cross-model rule)."""
        out = {}
        for n, c in self.characteristics.items():
            if n not in sample:
                continue
            x = np.asarray(sample[n], dtype=np.float64)
            ok = np.isfinite(x)
            v = float(np.var(x[ok])) if ok.any() else 0.0
            p = c.points_of(x[ok])
            out[n] = float(np.mean((x[ok] - x[ok].mean()) * (p - p.mean())) / v) if v > 0 else 0.0
        return out


Model = PlainModel | PlainScorecard


def _num(value: object, what: str, limit: float = MAX_ABS_PARAMETER) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProvisioningError(f"{what} must be a number")
    x = float(value)
    if not math.isfinite(x) or abs(x) > limit:
        raise ProvisioningError(f"{what} must be finite and at most {limit:g} in magnitude")
    return x


def parse_model(doc: object) -> PlainModel:
    """The bank's model spec: ``{"kind": "logistic", "weights": {name: w}, "bias": b, "preprocess":
    {name: {center, scale, clip}}, "release": {threshold, grade_edges, score_resolution}}``."""
    if isinstance(doc, Mapping) and doc.get("kind") == "scorecard":
        raise ProvisioningError(
            "a logistic model is needed here: a scorecard releases points, through encrypted scoring only "
            "(no PD to grade or decide on)"
        )
    if not isinstance(doc, Mapping) or doc.get("kind") != "logistic":
        raise ProvisioningError('the model must be an object with "kind": "logistic"')
    unknown = sorted(set(doc) - {"kind", "weights", "bias", "preprocess", "release"})
    if unknown:
        raise ProvisioningError(f"unknown model field(s): {', '.join(unknown)}")
    weights = doc.get("weights")
    if not isinstance(weights, Mapping) or not 0 < len(weights) <= MAX_MODEL_FEATURES:
        raise ProvisioningError(f"weights must map 1-{MAX_MODEL_FEATURES} feature names to numbers")
    w = {str(k): _num(v, f"weights[{k!r}]") for k, v in weights.items()}
    bias = _num(doc.get("bias", 0.0), "bias")
    prep_doc = doc.get("preprocess") or {}
    if not isinstance(prep_doc, Mapping) or set(prep_doc) - set(w):
        raise ProvisioningError("preprocess may name only the model's features")
    prep: dict[str, Prep] = {}
    for name, item in prep_doc.items():
        if not isinstance(item, Mapping) or set(item) - {"center", "scale", "clip"}:
            raise ProvisioningError(f"preprocess[{name!r}] may hold only center, scale and clip")
        scale = _num(item.get("scale", 1.0), f"preprocess[{name!r}].scale")
        if scale <= 0:
            raise ProvisioningError(f"preprocess[{name!r}].scale must be positive")
        clip = item.get("clip")
        bounds = None
        if clip is not None:
            if not isinstance(clip, list | tuple) or len(clip) != 2:
                raise ProvisioningError(f"preprocess[{name!r}].clip must be [low, high]")
            lo, hi = (_num(v, f"preprocess[{name!r}].clip") for v in clip)
            if not lo <= hi:
                raise ProvisioningError(f"preprocess[{name!r}].clip must have low <= high")
            bounds = (lo, hi)
        prep[str(name)] = Prep(_num(item.get("center", 0.0), f"preprocess[{name!r}].center"), scale, bounds)
    release = doc.get("release") or {}
    if not isinstance(release, Mapping) or set(release) - {"threshold", "grade_edges", "score_resolution"}:
        raise ProvisioningError("release may hold only threshold, grade_edges and score_resolution")
    threshold = _num(release.get("threshold", 0.5), "release.threshold", 1.0)
    if not 0 < threshold < 1:
        raise ProvisioningError("release.threshold is a PD in (0, 1)")
    edges_doc = release.get("grade_edges", list(DEFAULT_GRADE_EDGES))
    if not isinstance(edges_doc, list | tuple) or not 1 <= len(edges_doc) < MAX_GRADES:
        raise ProvisioningError(f"release.grade_edges must hold 1-{MAX_GRADES - 1} PDs")
    edges = tuple(_num(e, "release.grade_edges", 1.0) for e in edges_doc)
    if any(not 0 < e < 1 for e in edges) or any(b <= a for a, b in itertools.pairwise(edges)):
        raise ProvisioningError("release.grade_edges must be increasing PDs in (0, 1)")
    resolution = _num(
        release.get("score_resolution", DEFAULT_SCORE_RESOLUTION), "release.score_resolution", 1
    )
    if not MIN_SCORE_RESOLUTION <= resolution <= 0.5:
        raise ProvisioningError(f"release.score_resolution must be in [{MIN_SCORE_RESOLUTION}, 0.5]")
    return PlainModel(w, bias, prep, threshold, edges, resolution)


def parse_scorecard(doc: object) -> PlainScorecard:
    """``{"kind": "scorecard", "base_points": p, "features": [{"name", "edges", "points"[, "missing_points"]}]}``
    (the shape of :class:`protocols.he_scoring.Scorecard`: ``len(points) == len(edges) + 1``)."""
    if not isinstance(doc, Mapping) or doc.get("kind") != "scorecard":
        raise ProvisioningError('a scorecard is an object with "kind": "scorecard"')
    unknown = sorted(set(doc) - {"kind", "base_points", "features"})
    if unknown:
        raise ProvisioningError(f"unknown scorecard field(s): {', '.join(unknown)}")
    items = doc.get("features")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_MODEL_FEATURES:
        raise ProvisioningError(f"features must list 1-{MAX_MODEL_FEATURES} characteristics")
    out: dict[str, Characteristic] = {}
    for item in items:
        if not isinstance(item, Mapping) or set(item) - {"name", "edges", "points", "missing_points"}:
            raise ProvisioningError("a characteristic is {name, edges, points[, missing_points]}")
        name = item.get("name")
        if not isinstance(name, str) or not name or name in out:
            raise ProvisioningError("characteristic names are distinct non-empty strings")
        edges_doc, points_doc = item.get("edges"), item.get("points")
        if not isinstance(edges_doc, list) or not 1 <= len(edges_doc) <= 255:
            raise ProvisioningError(f"characteristic {name!r}: 1-255 bin edges")
        if not isinstance(points_doc, list) or len(points_doc) != len(edges_doc) + 1:
            raise ProvisioningError(f"characteristic {name!r}: points must have len(edges) + 1 entries")
        edges = tuple(_num(e, f"{name}.edges") for e in edges_doc)
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ProvisioningError(f"characteristic {name!r}: edges must increase")
        points = tuple(_num(v, f"{name}.points") for v in points_doc)
        missing = item.get("missing_points")
        out[name] = Characteristic(
            edges, points, None if missing is None else _num(missing, f"{name}.missing_points")
        )
    return PlainScorecard(out, _num(doc.get("base_points", 0.0), "base_points"))


def parse_any_model(doc: object) -> Model:
    """A logistic model (:func:`parse_model`) or a scorecard (:func:`parse_scorecard`), by ``kind``."""
    if isinstance(doc, Mapping) and doc.get("kind") == "scorecard":
        return parse_scorecard(doc)
    return parse_model(doc)


# --- the population a model scores -------------------------------------------------------------------------


def population_sample(
    model: PlainModel | PlainScorecard,
    keys: Sequence[str],
    sample: Mapping[str, FloatArray],
    populations: Mapping[str, Sequence[str]],
) -> tuple[str, dict[str, FloatArray]]:
    """The rows and columns of the one population whose features ``model`` reads: ``(population, sample)``.

    The platform's subjects are of several kinds (enterprises, farm and herding households) with features of
    their own; a row of one kind holds 0 in the other kind's features, so a model's shares are computed over
    its own population only (a household model over the households, never diluted by enterprises' zeros).
    Sample keys are ``"<population>:<n>"``. A model reading features of two populations is refused: no subject
    has both.
    """
    owner = {n: pop for pop, names in populations.items() for n in names}
    unknown = [n for n in model.features if n not in owner]
    if unknown:
        raise ProvisioningError(f"the platform publishes no feature(s) {', '.join(unknown)}")
    used = sorted({owner[n] for n in model.features})
    if len(used) != 1:
        raise refused(
            [
                "the model reads features of "
                + " and ".join(used)
                + ": a model scores one kind of subject (no subject has both kinds of features)"
            ]
        )
    pop = used[0]
    rows = np.fromiter((k.split(":", 1)[0] == pop for k in keys), dtype=bool, count=len(keys))
    if not rows.any():
        raise refused([f"the platform holds no {pop} to check the model on"])
    names = set(populations[pop])
    return pop, {n: np.asarray(v)[rows] for n, v in sample.items() if n in names}


def same_population(
    prior: Sequence[PlainModel | PlainScorecard], sample: Mapping[str, FloatArray]
) -> list[PlainModel | PlainScorecard]:
    """The earlier models that read only features of ``sample``'s population (from :func:`population_sample`).

    Only those can be combined with a new model against one subject: no subject has both kinds of features,
    so an enterprise model says nothing about a household's features, and back. (Checking them together
    would also be meaningless: their features are not columns of this sample.)"""
    return [m for m in prior if all(n in sample for n in m.features)]


# --- the check ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the check found: per feature, its variance share, its leverage over the bank's approved models
    with this one, and its step ratio; the rules broken (empty: approved)."""

    shares: dict[str, float]
    leverage: dict[str, float]
    step_ratio: dict[str, float]
    contribution_std: dict[str, float]
    reasons: tuple[str, ...]

    @property
    def approved(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, Any]:
        r = 4
        return {
            "approved": self.approved,
            "reasons": list(self.reasons),
            "shares": {k: round(v, r) for k, v in self.shares.items()},
            "leverage": {k: round(v, r) for k, v in self.leverage.items()},
            "step_ratio": {k: round(v, r) for k, v in self.step_ratio.items()},
        }


def _step(resolution: float) -> float:
    """The smallest change of a feature the platform publishes: its grid step, or 1 for counts and flags."""
    return resolution if resolution > 0 else 1.0


def _is_log(name: str) -> bool:
    """A ``log1p`` amount: enterprise ``log_*`` and household ``hh_log_*`` features."""
    return name.removeprefix("hh_").startswith("log_")


def _readback_floor(
    name: str, x: FloatArray, resolution: float, relative: float, narrow: float = 1.0
) -> float:
    """The precision (in feature units) below which a feature counts as read back."""
    spread = float(np.std(x)) * narrow  # a narrow feature: the score may not say more than the population
    if _is_log(name):
        return max(_step(resolution), min(math.log1p(relative), spread))
    typical = float(np.median(np.abs(x)))
    if typical == 0:  # mostly zero (a count of rare events): its steps are the step-ratio rule's
        return 0.0
    return max(_step(resolution), min(relative * typical, spread))


def _contribution_scales(
    model: PlainModel, sample: Mapping[str, FloatArray]
) -> tuple[FloatArray, FloatArray]:
    c = model.contributions(sample)
    return c.std(axis=0), c


def check_model(
    model: Model,
    policy: ModelPolicy,
    sample: Mapping[str, FloatArray],
    resolution: Mapping[str, float],
    prior: Sequence[Model] = (),
) -> Verdict:
    """Check ``model`` against ``policy`` on the platform's feature ``sample`` (raw features, at their
    published resolution); ``prior`` are the bank's models approved in the policy's window."""
    if isinstance(model, PlainScorecard):
        return _check_scorecard(model, policy, sample, resolution, prior)
    reasons: list[str] = []
    missing = [n for n in model.features if n not in sample or n not in resolution]
    if missing:
        raise ProvisioningError(f"the platform publishes no feature(s) {', '.join(missing)}")
    names = model.features
    sd, c = _contribution_scales(model, sample)
    var = sd**2
    total = float(var.sum())
    if total <= 0:
        raise refused(["the score does not vary over the platform's subjects"])
    shares = {n: float(v / total) for n, v in zip(names, var, strict=True)}
    material = [n for n, s in shares.items() if s >= policy.material_share]
    if len(material) < policy.min_material_features:
        reasons.append(
            f"only {len(material)} feature(s) carry at least {policy.material_share:.0%} of the score's "
            f"variance; at least {policy.min_material_features} must (a scoring model spreads its weight)"
        )
    top = max(shares, key=lambda n: shares[n])
    if shares[top] > policy.max_share:
        reasons.append(
            f"feature {top} carries {shares[top]:.0%} of the score's variance, above the "
            f"{policy.max_share:.0%} allowed (a model this concentrated reads the feature back)"
        )
    contribution_std = {n: float(s) for n, s in zip(names, sd, strict=True)}
    big = [n for n, s in contribution_std.items() if s > policy.max_contribution_std]
    if big:
        reasons.append(
            f"feature(s) {', '.join(big)} move the log-odds by more than "
            f"{policy.max_contribution_std:g} standard deviations' worth (bounded weights)"
        )
    if abs(model.bias) > policy.max_abs_bias:
        reasons.append(f"the bias {model.bias:g} exceeds {policy.max_abs_bias:g} in magnitude")
    step_ratio: dict[str, float] = {}
    score_total = c.sum(axis=1)
    readback: dict[str, float] = {}
    for j, n in enumerate(names):
        w_eff = abs(model.weights[n]) / model.prep(n).scale
        rest = float((score_total - c[:, j]).std())
        x = np.asarray(sample[n], dtype=np.float64)
        x = x[np.isfinite(x)]
        if w_eff == 0 or x.size == 0 or len(np.unique(x)) <= 2:
            continue
        floor = _readback_floor(n, x, resolution[n], policy.min_readback_relative, policy.narrow_spread)
        if floor > 0:
            readback[n] = (rest / w_eff) / floor
    pinned = sorted(n for n, r in readback.items() if r < 1)
    if pinned:
        reasons.append(
            f"the rest of the score hides {', '.join(pinned)} less than the coarser of its resolution and "
            f"{policy.min_readback_relative:.0%} of its typical value (one score would read it back)"
        )
    for j, n in enumerate(names):
        values = np.unique(np.asarray(sample[n])[np.isfinite(np.asarray(sample[n], dtype=np.float64))])
        if len(values) <= 2:  # a flag is one bit however it is weighted: nothing to pack into its steps
            continue
        rest = float((score_total - c[:, j]).std())
        step = abs(model.weights[n]) * _step(resolution[n]) / model.prep(n).scale
        step_ratio[n] = step / rest if rest > 0 else math.inf
    packed = [n for n, r in step_ratio.items() if r > policy.max_step_ratio]
    if packed:
        reasons.append(
            f"one resolution step of {', '.join(packed)} moves the score by more than "
            f"{policy.max_step_ratio:g} x the spread of the rest of it (packing)"
        )
    leverage = _leverage([*prior, model], sample)
    solved = _solved([*prior, model], sample, resolution, policy) if prior else {}
    isolated = sorted(n for n, r in solved.items() if r < 1 and n in shares)
    if isolated:
        reasons.append(
            f"with the bank's {len(prior)} model(s) approved in the last {policy.window_days} days, a linear "
            f"combination of their outputs pins down {', '.join(isolated)} more precisely than the coarser of "
            f"its resolution and {policy.min_readback_relative:.0%} of its typical value: k models must not "
            "solve for k features"
        )
    return Verdict(
        shares,
        {n: leverage.get(n, 0.0) for n in names},
        step_ratio,
        contribution_std,
        tuple(reasons),
    )


def release_error(model: PlainModel, sample: Mapping[str, FloatArray]) -> float:
    """The error (standard deviation, log-odds) with which the model's finest release — its PD rounded to
    ``score_resolution`` — tells a typical subject's logit: the rounding's ``r / sqrt(12)`` in PD over ``p (1 -
    p)``, its median on the platform's distribution (the read-back floor is about a typical subject too).

    Encrypted scoring releases logits, not rounded PDs: it adds Gaussian noise of this standard deviation to an
    approved model's logits (:mod:`pps.services.scoring`), so that no path releases the model more finely."""
    p = model.pd(sample)
    slope = np.maximum(p * (1 - p), 1e-6) if p.size else np.array([0.25])
    return float(np.median(model.score_resolution / math.sqrt(12) / slope))


def _effective(m: Model, sample: Mapping[str, FloatArray]) -> dict[str, float]:
    """A model's weight per unit of each raw feature (a scorecard: its points' least-squares slope)."""
    if isinstance(m, PlainScorecard):
        return m.slopes(sample)
    return {n: w / m.prep(n).scale for n, w in m.weights.items()}


def _release_error(m: Model, sample: Mapping[str, FloatArray]) -> float:
    # a scorecard releases its points (encrypted scoring, 2^-16 noise): no error to speak of
    return release_error(m, sample) if isinstance(m, PlainModel) else 0.0


def _solved(
    models: Sequence[Model],
    sample: Mapping[str, FloatArray],
    resolution: Mapping[str, float],
    policy: ModelPolicy,
) -> dict[str, float]:
    """Per feature ``j``: the standard deviation of the best linear unbiased estimate of ``x_j`` from every
    model's output (outputs ``W x + e``; the other features and the release errors ``e`` are the noise:
    ``1 / sqrt(w_j^T (W_-j Sigma_-j W_-j^T + T)^+ w_j)``), over its read-back floor; below 1, the models together
    pin it down. For one model without release error it is the single-model rule's ``rest / |w_j|``."""
    names = sorted({n for m in models for n in m.features if n in sample})
    xs = {n: np.asarray(sample[n], dtype=np.float64) for n in names}
    var = np.array([float(np.nanvar(xs[n])) for n in names])
    w = np.zeros((len(models), len(names)))
    for i, m in enumerate(models):
        eff = _effective(m, sample)
        for j, n in enumerate(names):
            w[i, j] = eff.get(n, 0.0)
    noise = np.diag([_release_error(m, sample) ** 2 for m in models])
    post = np.full(len(names), math.inf)
    for j in range(len(names)):
        if not np.any(w[:, j]):
            continue
        rest = np.delete(w, j, axis=1)
        cov = (rest * np.delete(var, j)) @ rest.T + noise  # what hides x_j in the outputs
        info = float(w[:, j] @ np.linalg.pinv(cov, rcond=1e-12) @ w[:, j])
        post[j] = 1 / math.sqrt(info) if info > 0 else math.inf
    out: dict[str, float] = {}
    for j, n in enumerate(names):
        x = xs[n][np.isfinite(xs[n])]
        if x.size == 0 or len(np.unique(x)) <= 2:  # a flag is one bit: the step rule's
            continue
        # a narrow feature: the models together may not halve what the population says (one score alone may
        # not narrow it at all: the single-model rule)
        floor = _readback_floor(
            n, x, resolution.get(n, 0.0), policy.min_readback_relative, policy.narrow_spread / 2
        )
        if floor > 0:
            out[n] = float(post[j] / floor)
    return out


def _leverage(models: Sequence[Model], sample: Mapping[str, FloatArray]) -> dict[str, float]:
    """Per feature, the largest variance share it reaches in any linear combination of ``models`` (features
    taken as independent): ``b_j^T (B B^T)^+ b_j`` where ``B[m, j]`` is the signed standard deviation of
    model ``m``'s contribution of feature ``j``. One model: its shares. Models spanning ``e_j``: 1."""
    names = sorted({n for m in models for n in m.features if n in sample})
    b = np.zeros((len(models), len(names)))
    for i, m in enumerate(models):
        eff = _effective(m, sample)
        for j, n in enumerate(names):
            if n in eff:
                b[i, j] = eff[n] * float(np.nanstd(np.asarray(sample[n], dtype=np.float64)))
    gram = b @ b.T
    inv = np.linalg.pinv(gram, rcond=1e-10)
    lev = np.einsum("ij,ik,kj->j", b, inv, b)
    return {n: float(min(1.0, max(0.0, v))) for n, v in zip(names, lev, strict=True)}


def _check_scorecard(
    card: PlainScorecard,
    policy: ModelPolicy,
    sample: Mapping[str, FloatArray],
    resolution: Mapping[str, float],
    prior: Sequence[Model],
) -> Verdict:
    """The scale-free rules on a scorecard: shares (material features, largest share), packing (no jump
    between adjacent bins above ``max_step_ratio`` times the spread of the rest of the score), read-back (no
    bin narrower than the read-back floor whose jumps both stand clear of the rest's spread: one score would
    place the value in it; nor may the points' linear part read it as a logistic weight would). The cross-model
    rule is for logistic models only (below)."""
    missing = [n for n in card.features if n not in sample or n not in resolution]
    if missing:
        raise ProvisioningError(f"the platform publishes no feature(s) {', '.join(missing)}")
    names = card.features
    c = card.contributions(sample)
    sd = c.std(axis=0)
    total = float((sd**2).sum())
    if total <= 0:
        raise refused(["the score does not vary over the platform's enterprises"])
    shares = {n: float(v**2 / total) for n, v in zip(names, sd, strict=True)}
    reasons: list[str] = []
    material = [n for n, v in shares.items() if v >= policy.material_share]
    if len(material) < policy.min_material_features:
        reasons.append(
            f"only {len(material)} feature(s) carry at least {policy.material_share:.0%} of the score's "
            f"variance; at least {policy.min_material_features} must (a scoring model spreads its weight)"
        )
    top = max(shares, key=lambda n: shares[n])
    if shares[top] > policy.max_share:
        reasons.append(
            f"feature {top} carries {shares[top]:.0%} of the score's variance, above the "
            f"{policy.max_share:.0%} allowed (a model this concentrated reads the feature back)"
        )
    unbinned = [
        n
        for n, ch in card.characteristics.items()
        if ch.missing is None and np.isnan(np.asarray(sample[n], dtype=np.float64)).any()
    ]
    if unbinned:
        reasons.append(
            f"feature(s) {', '.join(unbinned)} have missing values on the platform: give them missing_points"
        )
    score_total = c.sum(axis=1)
    step_ratio: dict[str, float] = {}
    pinned: list[str] = []
    for j, n in enumerate(names):
        ch = card.characteristics[n]
        x = np.asarray(sample[n], dtype=np.float64)
        x = x[np.isfinite(x)]
        if x.size == 0 or len(np.unique(x)) <= 2:
            continue
        rest = float((score_total - c[:, j]).std())
        jumps = np.abs(np.diff(np.asarray(ch.points)))
        step_ratio[n] = float(jumps.max()) / rest if rest > 0 else math.inf
        floor = _readback_floor(n, x, resolution[n], policy.min_readback_relative, policy.narrow_spread)
        slope = abs(card.slopes({n: x})[n])
        if slope > 0 and floor > 0 and rest / slope < floor:  # its linear part, read as a logistic weight
            pinned.append(n)
            continue
        widths = np.diff(np.asarray(ch.edges))  # interior bins
        for b, width in enumerate(widths):
            inside = np.count_nonzero((x >= ch.edges[b]) & (x < ch.edges[b + 1]))
            if inside and width < floor and min(jumps[b], jumps[b + 1]) > rest:
                pinned.append(n)
                break
    packed = [n for n, r in step_ratio.items() if r > policy.max_step_ratio]
    if packed:
        reasons.append(
            f"one bin step of {', '.join(packed)} moves the score by more than {policy.max_step_ratio:g} x the "
            "spread of the rest of it (packing)"
        )
    if pinned:
        reasons.append(
            f"a bin of {', '.join(sorted(pinned))} narrower than the coarser of its resolution and "
            f"{policy.min_readback_relative:.0%} of its typical value stands clear of the rest of the score "
            "(one score would read the value into it)"
        )
    # across models: a scorecard's points are not linear in its features, so the cross-model rule (linear
    # algebra on the models' weights) does not apply to it; the disclosure budget (distinct models per subject
    # and window) bounds what several scorecards release together
    leverage = _leverage([*prior, card], sample)
    return Verdict(
        shares,
        {n: leverage.get(n, 0.0) for n in names},
        step_ratio,
        {n: float(v) for n, v in zip(names, sd, strict=True)},
        tuple(reasons),
    )


def verify_model(
    model: Model,
    policy: ModelPolicy,
    sample: Mapping[str, FloatArray],
    resolution: Mapping[str, float],
    prior: Sequence[Model] = (),
) -> Verdict:
    """:func:`check_model`, raising :class:`enclave_sim.errors.ModelRefused` naming every rule broken."""
    verdict = check_model(model, policy, sample, resolution, prior)
    if not verdict.approved:
        raise refused(verdict.reasons)
    return verdict


# --- coarsening ----------------------------------------------------------------------------------------------


def coarsen(pd: float, granularity: Granularity) -> dict[str, Any]:
    """What leaves for one subject at ``granularity``: ``{"decision": "approve"|"decline"}``,
    ``{"grade": 1..n, "band": [low, high]}`` or ``{"pd": rounded}``."""
    if granularity.level == "decision":
        return {"decision": "approve" if pd < granularity.threshold else "decline"}
    if granularity.level == "grade":
        edges = granularity.edges
        g = int(np.searchsorted(np.asarray(edges), pd, side="right"))
        low = 0.0 if g == 0 else edges[g - 1]
        high = 1.0 if g == len(edges) else edges[g]
        return {"grade": g + 1, "band": [low, high]}
    r = granularity.resolution
    return {"pd": round(round(pd / r) * r, 6)}


def finer(a: str, b: str) -> bool:
    """Whether granularity ``a`` is finer than ``b``."""
    return GRANULARITIES.index(a) > GRANULARITIES.index(b)
