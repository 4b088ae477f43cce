"""Jobs that run inside the enclave, and the interface a new one implements.

A job is a class with:

* ``kind`` — its name (``"gbdt"``);
* ``party_slots`` — inputs a party provisions, HPKE-encrypted to the enclave (:mod:`enclave_sim.crypto`);
  ``owner_slot`` — the one of them whose header carries the output policy;
* ``host_slots`` — inputs the host supplies in the clear (data the host holds anyway, e.g. platform features
  it read under its own policy checks);
* ``outputs`` — every output it can produce; ``plain_outputs`` — those that may leave unencrypted (aggregate
  figures);
* ``__init__(inputs, params)``, optional ``step(message) -> message`` rounds (an interactive protocol, e.g. the
  key-holding coordinator of vertical logistic regression: it would hold its Paillier secret key here, answer
  each round's encrypted gradients with masked decryptions, and release the model under the output policy),
  and ``finish() -> {output name: JSON value}``.

The job never releases anything itself: :class:`enclave_sim.core.EnclaveCore` takes what ``finish`` returns,
refuses any output the job did not declare, drops those the owner's output policy does not allow, and
encrypts the non-plain ones to the owner's key. A job cannot widen its own release.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from enclave_sim.errors import EnclaveJobError, EnclaveProtocolError, ProvisioningError

FloatArray = npt.NDArray[np.float64]


class EnclaveJob(ABC):
    kind: ClassVar[str]
    party_slots: ClassVar[tuple[str, ...]]
    owner_slot: ClassVar[str]
    required_party_slots: ClassVar[tuple[str, ...] | None] = None
    """Party slots that must be provisioned before the job starts (None: all of them). A job whose parties may
    drop out (one slot per bank of a federation) requires only its owner's."""
    host_slots: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[frozenset[str]]
    plain_outputs: ClassVar[frozenset[str]] = frozenset()
    signed_outputs: ClassVar[frozenset[str]] = frozenset()
    """Plain outputs (objects) the core signs with the enclave's signing key (``signature``, hex Ed25519 over
    :func:`enclave_sim.core.signed_bytes`): anyone holding the key from ``hello`` checks they came from here."""
    sealed_outputs: ClassVar[dict[str, str]] = {}
    """Outputs the core seals (output name -> seal label) before they leave: only this build opens them."""
    sealed_slots: ClassVar[dict[str, str]] = {}
    """Host slots that take a JSON list of blobs sealed under the label; the core opens them (the job gets
    the JSON list of the values)."""

    def __init__(self, inputs: Mapping[str, bytes], params: Mapping[str, Any]) -> None:
        self.inputs = inputs
        self.params = params

    def step(self, message: bytes) -> bytes:
        """One round of an interactive job; one-shot jobs have none."""
        raise EnclaveProtocolError(f"job {self.kind} is not interactive")

    @abstractmethod
    def finish(self) -> dict[str, Any]:
        """Compute and return candidate outputs by name (JSON values); the core decides what leaves."""


# --- column tables (the shape both parties' data takes) ------------------------------------------------------

MAX_FEATURES = 256
MAX_ROWS = 1_000_000


def parse_table(
    data: bytes, *, what: str, labelled: bool
) -> tuple[list[str], dict[str, FloatArray], FloatArray | None]:
    """``{"keys": [...], "features": {name: [number | null, ...]}, "labels": [0|1, ...]}`` (labels only for
    the labelled party). Returns keys, features (NaN for null) and labels."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise ProvisioningError(f"{what}: not JSON") from None
    allowed = {"keys", "features", "labels"} if labelled else {"keys", "features"}
    if not isinstance(doc, dict) or not set(doc) <= allowed or "keys" not in doc or "features" not in doc:
        raise ProvisioningError(f"{what}: must be an object with {', '.join(sorted(allowed))}")
    keys, features = doc["keys"], doc["features"]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(keys) > MAX_ROWS:
        raise ProvisioningError(f"{what}: keys must be a list of at most {MAX_ROWS} strings")
    if len(set(keys)) != len(keys):
        raise ProvisioningError(f"{what}: keys must be distinct")
    if not isinstance(features, dict) or len(features) > MAX_FEATURES:
        raise ProvisioningError(f"{what}: features must be an object of at most {MAX_FEATURES} columns")
    cols: dict[str, FloatArray] = {}
    for name, values in features.items():
        if not isinstance(values, list) or len(values) != len(keys):
            raise ProvisioningError(f"{what}: feature {name!r} must have one value per key")
        try:
            col = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        except (TypeError, ValueError):
            raise ProvisioningError(f"{what}: feature {name!r} must hold numbers or null") from None
        if np.isinf(col).any():
            raise ProvisioningError(f"{what}: feature {name!r} holds an infinite value")
        cols[name] = col
    labels = None
    if labelled:
        raw = doc.get("labels")
        if (
            not isinstance(raw, list)
            or len(raw) != len(keys)
            or any(v not in (0, 1) or isinstance(v, bool) for v in raw)
        ):
            raise ProvisioningError(f"{what}: labels must be one 0 or 1 per key")
        labels = np.asarray(raw, dtype=np.float64)
    return keys, cols, labels


# --- metrics (local, small) ----------------------------------------------------------------------------------


def auc_ks(y: FloatArray, p: FloatArray) -> tuple[float, float]:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    return float(roc_auc_score(y, p)), float(np.max(tpr - fpr))


# --- gradient-boosted trees ----------------------------------------------------------------------------------

GBDT_DEFAULTS: dict[str, int] = {
    "max_iter": 100,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 20,
    "test_percent": 30,
    "seed": 0,
}
GBDT_LIMITS: dict[str, tuple[int, int]] = {
    "max_iter": (1, 10_000),
    "max_leaf_nodes": (2, 256),
    "min_samples_leaf": (1, 10_000),
    "test_percent": (10, 50),
    "seed": (0, 2**31 - 1),
}
MIN_JOINED_ROWS = 50
"""Fewer joined rows and nothing is trained (figures over a handful of enterprises say too much)."""
LEARNING_RATE = 0.1


def check_gbdt_params(params: Mapping[str, Any]) -> dict[str, int]:
    unknown = sorted(set(params) - set(GBDT_DEFAULTS))
    if unknown:
        raise EnclaveJobError(f"unknown gbdt parameter(s): {', '.join(unknown)}")
    out = dict(GBDT_DEFAULTS)
    for name, value in params.items():
        low, high = GBDT_LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise EnclaveJobError(f"gbdt parameter {name} must be an integer in [{low}, {high}]")
        out[name] = value
    return out


def joined_design(
    bank: tuple[list[str], dict[str, FloatArray], FloatArray | None],
    platform: tuple[list[str], dict[str, FloatArray], FloatArray | None],
) -> tuple[list[str], list[str], FloatArray, FloatArray]:
    """Inner join on the key, in the bank's row order: (keys, column names, X, y). Columns are the bank's
    features (``bank.<name>``, in the order given) then the platform's (``platform.<name>``)."""
    bkeys, bcols, labels = bank
    pkeys, pcols, _ = platform
    assert labels is not None
    where = {k: i for i, k in enumerate(pkeys)}
    bi = [i for i, k in enumerate(bkeys) if k in where]
    pi = [where[bkeys[i]] for i in bi]
    names = [f"bank.{n}" for n in bcols] + [f"platform.{n}" for n in pcols]
    columns = [bcols[n][bi] for n in bcols] + [pcols[n][pi] for n in pcols]
    x = np.column_stack(columns) if columns else np.empty((len(bi), 0))
    return [bkeys[i] for i in bi], names, x, labels[bi]


def train_gbdt(
    x: FloatArray, y: FloatArray, params: Mapping[str, int]
) -> tuple[Any, dict[str, Any], FloatArray]:
    """Split (stratified), train, evaluate on the held-out part; ``(model, metrics, test mask)``.

    The same function runs in the enclave and in a plaintext baseline: the enclave computes on plaintext, so
    the two agree exactly on the same split.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    n = len(y)
    if n < MIN_JOINED_ROWS:
        raise EnclaveJobError(f"only {n} rows joined; at least {MIN_JOINED_ROWS} are needed")
    positives = int(y.sum())
    if positives < 2 or n - positives < 2:
        raise EnclaveJobError("the joined rows must hold at least two of each label")
    if x.shape[1] == 0:
        raise EnclaveJobError("the joined rows have no features")
    idx = np.arange(n)
    train_idx, test_idx = train_test_split(
        idx, test_size=params["test_percent"] / 100, random_state=params["seed"], stratify=y
    )
    model = HistGradientBoostingClassifier(
        max_iter=params["max_iter"],
        learning_rate=LEARNING_RATE,
        max_leaf_nodes=params["max_leaf_nodes"],
        min_samples_leaf=params["min_samples_leaf"],
        early_stopping=False,
        random_state=params["seed"],
    )
    model.fit(x[train_idx], y[train_idx])
    p = model.predict_proba(x[test_idx])[:, 1]
    auc, ks = auc_ks(y[test_idx], p)
    metrics = {
        "joined": n,
        "train": len(train_idx),
        "test": len(test_idx),
        "positives": positives,
        "test_auc": round(auc, 6),
        "test_ks": round(ks, 6),
    }
    mask = np.zeros(n, dtype=bool)
    mask[test_idx] = True
    return model, metrics, mask


def export_model(model: Any, names: Sequence[str]) -> dict[str, Any]:
    """The trained trees as data (not a pickle): a bank evaluates them with :func:`predict_exported`."""
    trees = []
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        trees.append(
            {
                "feature": nodes["feature_idx"].astype(int).tolist(),
                "threshold": [float(t) for t in nodes["num_threshold"]],
                "missing_left": nodes["missing_go_to_left"].astype(int).tolist(),
                "left": nodes["left"].astype(int).tolist(),
                "right": nodes["right"].astype(int).tolist(),
                "leaf": nodes["is_leaf"].astype(int).tolist(),
                "value": [float(v) for v in nodes["value"]],
            }
        )
    return {
        "format": "pps-gbdt-v1",
        "features": list(names),
        "baseline": float(np.ravel(model._baseline_prediction)[0]),
        "trees": trees,
    }


def predict_exported(model: Mapping[str, Any], x: FloatArray) -> FloatArray:
    """Probabilities of class 1 from an exported model (columns of ``x`` in ``model["features"]`` order)."""
    if model.get("format") != "pps-gbdt-v1":
        raise ValueError("not a pps-gbdt-v1 model")
    x = np.asarray(x, dtype=np.float64)
    raw = np.full(len(x), float(model["baseline"]))
    for tree in model["trees"]:
        feat, thr, mleft = tree["feature"], tree["threshold"], tree["missing_left"]
        left, right, leaf, value = tree["left"], tree["right"], tree["leaf"], tree["value"]
        for r in range(len(x)):
            node = 0
            while not leaf[node]:
                v = x[r, feat[node]]
                go_left = bool(mleft[node]) if math.isnan(v) else v <= thr[node]
                node = left[node] if go_left else right[node]
            raw[r] += value[node]
    out: FloatArray = 1.0 / (1.0 + np.exp(-raw))
    return out


class GBDTJob(EnclaveJob):
    """Gradient-boosted trees on joint data: the bank's labelled rows joined with the platform's features.

    Inputs: ``bank`` (party; keys, labels, the bank's own features), ``platform`` (host; keys and the platform
    features of the subjects whose consent allowed it). Outputs: ``metrics`` (plain: row counts, held-out AUC
    and KS), ``scores`` (every joined row's probability, by key), ``model`` (the trees, :func:`export_model`).

    Who learns what: the host learns nothing of the bank's rows (not even which of its subjects joined, only
    how many); the bank learns what its output policy releases — a model trained on platform features is a
    summary of those features, and scores are per-subject functions of them, which is why both need the
    subjects' consent for operation ``enclave`` and are encrypted to the bank.
    """

    kind = "gbdt"
    party_slots = ("bank",)
    owner_slot = "bank"
    host_slots = ("platform",)
    outputs = frozenset({"metrics", "scores", "model"})
    plain_outputs = frozenset({"metrics"})

    def finish(self) -> dict[str, Any]:
        params = check_gbdt_params(self.params)
        bank = parse_table(self.inputs["bank"], what="bank rows", labelled=True)
        platform = parse_table(self.inputs["platform"], what="platform features", labelled=False)
        keys, names, x, y = joined_design(bank, platform)
        model, metrics, _mask = train_gbdt(x, y, params)
        scores = model.predict_proba(x)[:, 1] if len(keys) else np.empty(0)
        return {
            "metrics": {**metrics, "features": names},
            "scores": {k: round(float(p), 8) for k, p in zip(keys, scores, strict=True)},
            "model": export_model(model, names),
        }


class VerticalLRCoordinatorJob(EnclaveJob):
    """The key-holding coordinator of vertical logistic regression (:class:`protocols.vertical_lr.Coordinator`),
    inside the enclave: its Paillier key pair is made here and the private key never leaves.

    Input: ``guest`` (party, the bank that starts the training): ``{"key_bits": 2048}`` and its output
    policy. Rounds (:meth:`step`), each message one op byte then the protocol message::

        0x01                    -> PUBLIC_KEY message (for guest and host)
        0x02 || SETUP           -> empty (the session and its configuration are fixed)
        0x03 || MASKED_GRADIENT -> DECRYPTED (masked values: the coordinator learns nothing it can unmask)
        0x04 || EPOCH_END       -> empty
        0x05 || LINEAR_PREDICTOR -> PROBABILITIES (loss="exact": the enclave decrypts the batch's linear
                                    predictors z, once per batch, and answers [[4 sigmoid(z)]] encrypted)

    Output: ``summary`` (plain: decryptions made, sigmoids taken, epochs seen). Who learns what is the protocol's
    (``protocols.vertical_lr``): the enclave replaces the assumption that the coordinator does not collude with
    either party by the assumption that the enclave is what its quote says.
    """

    kind = "vlr_coordinator"
    party_slots = ("guest",)
    owner_slot = "guest"
    outputs = frozenset({"summary"})
    plain_outputs = frozenset({"summary"})
    KEY_BITS = (1024, 2048, 3072)
    """1024 only for tests: below today's recommendation for Paillier."""

    def __init__(self, inputs: Mapping[str, bytes], params: Mapping[str, Any]) -> None:
        super().__init__(inputs, params)
        from protocols import vertical_lr
        from protocols.errors import ProtocolError

        try:
            doc = json.loads(inputs["guest"])
        except ValueError:
            raise ProvisioningError("coordinator set-up: not JSON") from None
        if not isinstance(doc, dict) or set(doc) - {"key_bits"}:
            raise ProvisioningError('coordinator set-up must be {"key_bits": 2048}')
        bits = doc.get("key_bits", 2048)
        if bits not in self.KEY_BITS or isinstance(bits, bool):
            raise ProvisioningError(f"key_bits must be one of {list(self.KEY_BITS)}")
        self._errors: tuple[type[Exception], ...] = (ProtocolError, ValueError)
        self._coordinator = vertical_lr.Coordinator.create(int(bits))

    def step(self, message: bytes) -> bytes:
        if not message:
            raise EnclaveProtocolError("an empty coordinator message")
        op, body = message[0], bytes(message[1:])
        c = self._coordinator
        try:
            if op == 1 and not body:
                return c.public_key_message()
            if op == 2:
                c.receive_setup(body)
                return b""
            if op == 3:
                return c.decrypt(body)
            if op == 4:
                c.receive_epoch_end(body)
                return b""
            if op == 5:
                return c.sigmoid(body)
        except self._errors as exc:
            raise EnclaveJobError(f"coordinator: {exc}") from None
        raise EnclaveProtocolError(f"unknown coordinator op {op}")

    def finish(self) -> dict[str, Any]:
        c = self._coordinator
        return {"summary": {"decryptions": c.decryptions, "sigmoids": c.sigmoids, "epochs": c.epochs_done}}


# --- model approval and graded scoring (enclave_sim.model_check) ---------------------------------------------

APPROVED_MODEL_LABEL = "pps-approved-model-v1"
"""The seal label of an approved model: sealed by :class:`ModelApprovalJob`, opened by :class:`GradedScoreJob`
and as a prior of the next approval."""


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ProvisioningError(f"{what}: not JSON") from None


class ModelApprovalJob(EnclaveJob):
    """The attested model check: a bank's plaintext model against the model policy the operator published.

    Inputs: ``bank`` (party): ``{"model": <model spec>, "context": base64 public CKKS context | null,
    "packing": "none" | ...}`` (:func:`enclave_sim.model_check.parse_model`); ``platform`` (host): the
    platform's features of its subjects at their published resolution (the distribution the shares are
    computed on), keys ``"<population>:<n>"``; ``policy`` (host): ``{"policy": ModelPolicy, "resolution":
    {feature: step}, "populations": {"enterprise": [features], "household": [features]}}`` — the model is
    checked on the rows of the one population whose features it reads
    (:func:`enclave_sim.model_check.population_sample`); ``prior`` (host, sealed): the bank's models approved
    in the policy's window, as this job sealed them.

    Outputs (plain): ``approval`` (signed by the enclave: digests of the model, of the policy and of the
    encrypted model, the features, the preprocessing, the verdict's shares), ``encrypted_model`` (the model
    encrypted *here* under the bank's public context, base64: what the safe-room may evaluate, exactly what was
    checked) and ``sealed_model`` (sealed: for graded scoring and later checks; only this build opens it).
    A model that fails the policy raises ``model_refused`` naming every rule it breaks; nothing leaves.

    Who learns what: the operator learns the verdict, the per-feature shares and leverages, and the digests,
    never a weight; the bank learns the same (the shares describe its own model on the platform's whole
    distribution, no enterprise's value).
    """

    kind = "model_approval"
    party_slots = ("bank",)
    owner_slot = "bank"
    host_slots = ("platform", "policy", "prior")
    outputs = frozenset({"approval", "encrypted_model", "sealed_model"})
    plain_outputs = outputs
    signed_outputs = frozenset({"approval"})
    sealed_outputs = {"sealed_model": APPROVED_MODEL_LABEL}
    sealed_slots = {"prior": APPROVED_MODEL_LABEL}

    def finish(self) -> dict[str, Any]:
        import base64

        from enclave_sim.model_check import (
            ModelPolicy,
            PlainModel,
            PlainScorecard,
            parse_any_model,
            population_sample,
            release_error,
            same_population,
            verify_model,
        )

        doc = _json(self.inputs["bank"], "the bank's model")
        if not isinstance(doc, dict) or "model" not in doc or set(doc) - {"model", "context", "packing"}:
            raise ProvisioningError(
                'the bank\'s input must be {"model": ..., "context": ..., "packing": ...}'
            )
        model = parse_any_model(doc["model"])
        pol = _json(self.inputs["policy"], "the model policy")
        try:
            policy = ModelPolicy.from_dict(pol["policy"])
            resolution = {str(k): float(v) for k, v in pol["resolution"].items()}
            populations = {str(p): [str(n) for n in ns] for p, ns in pol.get("populations", {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProvisioningError(f"the model policy is malformed: {exc}") from None
        keys, sample, _ = parse_table(self.inputs["platform"], what="platform features", labelled=False)
        population = None
        if populations:
            population, sample = population_sample(model, keys, sample, populations)
        prior = [parse_any_model(m) for m in _json(self.inputs["prior"], "prior models")]
        prior = [m for m in prior if m.digest() != model.digest()]  # the same model again is no new read
        prior = same_population(prior, sample)
        verdict = verify_model(model, policy, sample, resolution, prior)
        out: dict[str, Any] = {"sealed_model": model.as_dict()}
        encrypted_sha256 = None
        context_id = None
        if doc.get("context") is not None:
            from protocols.errors import ProtocolError
            from protocols.he_scoring.bank import (
                Scorecard,
                ScorecardFeature,
                encrypt_model_public,
                encrypt_scorecard_public,
            )
            from protocols.he_scoring.wire import DEFAULT_PACKING, Packing

            try:
                context = base64.b64decode(str(doc["context"]), validate=True)
                packing = Packing(doc.get("packing", DEFAULT_PACKING))
                if isinstance(model, PlainScorecard):
                    card = Scorecard(
                        tuple(
                            ScorecardFeature(n, c.edges, c.points, c.missing)
                            for n, c in model.characteristics.items()
                        ),
                        model.base_points,
                    )
                    message = encrypt_scorecard_public(context, card, packing=packing)
                else:
                    message = encrypt_model_public(
                        context,
                        {n: w / model.prep(n).scale for n, w in model.weights.items()},
                        model.bias
                        - sum(
                            w * model.prep(n).center / model.prep(n).scale for n, w in model.weights.items()
                        ),
                        packing=packing,
                    )
            except (ProtocolError, ValueError) as exc:
                raise ProvisioningError(
                    f"the model could not be encrypted under the context: {exc}"
                ) from None
            blob = message.to_bytes()
            encrypted_sha256 = hashlib.sha256(blob).hexdigest()
            context_id = message.context_id
            out["encrypted_model"] = base64.b64encode(blob).decode()
        out["approval"] = {
            "model_digest": model.digest(),
            "policy_digest": policy.digest(),
            "features": list(model.features),
            "kind": "scorecard" if isinstance(model, PlainScorecard) else "logistic",
            "clip": {n: list(p.clip) for n, p in model.preprocess.items() if p.clip is not None}
            if isinstance(model, PlainModel)
            else {},
            "encrypted_model_sha256": encrypted_sha256,
            "context_id": context_id,
            "prior_models": len(prior),
            "population": population,
            "release_error": round(release_error(model, sample), 6) if isinstance(model, PlainModel) else 0.0,
            "verdict": verdict.as_dict(),
        }
        return out


class GradedScoreJob(EnclaveJob):
    """Scoring with an approved model inside the enclave, released at each subject's consented granularity.

    Inputs: ``bank`` (party): ``{"model_digest": hex}`` and the output policy (the recipient key);
    ``model`` (host, sealed): the approved model as :class:`ModelApprovalJob` sealed it; ``platform`` (host):
    the admitted subjects' features; ``granularity`` (host): ``{subject: "decision" | "grade" | "score"}`` from
    each subject's consent. Outputs: ``scores`` (encrypted to the bank): per subject what its granularity
    allows (:func:`enclave_sim.model_check.coarsen`); ``summary`` (plain): how many at each granularity.

    Who learns what: the host supplies features it holds anyway and learns only the summary; the bank learns
    per subject a decision, a grade or a PD at the stated resolution — never finer than the subject allowed.
    """

    kind = "graded_score"
    party_slots = ("bank",)
    owner_slot = "bank"
    host_slots = ("model", "platform", "granularity")
    outputs = frozenset({"scores", "summary"})
    plain_outputs = frozenset({"summary"})
    sealed_slots = {"model": APPROVED_MODEL_LABEL}

    def finish(self) -> dict[str, Any]:
        from enclave_sim.model_check import GRANULARITIES, coarsen, parse_model

        request = _json(self.inputs["bank"], "the bank's request")
        models = _json(self.inputs["model"], "the approved model")
        if not isinstance(models, list) or len(models) != 1:
            raise ProvisioningError("graded scoring takes exactly one approved model")
        model = parse_model(models[0])
        if not isinstance(request, dict) or request.get("model_digest") != model.digest():
            raise EnclaveJobError("the approved model supplied is not the one the bank asked to run")
        keys, cols, _ = parse_table(self.inputs["platform"], what="platform features", labelled=False)
        levels = _json(self.inputs["granularity"], "granularity")
        if not isinstance(levels, dict) or set(levels) != set(keys):
            raise ProvisioningError("granularity must name every subject supplied, and only those")
        if any(v not in GRANULARITIES for v in levels.values()):
            raise ProvisioningError(f"granularity must be one of {', '.join(GRANULARITIES)}")
        missing = [n for n in model.features if n not in cols]
        if missing:
            raise ProvisioningError(f"the platform features lack {', '.join(missing)}")
        pd = model.pd(cols) if keys else np.empty(0)
        scores = {k: coarsen(float(p), model.granularity(levels[k])) for k, p in zip(keys, pd, strict=True)}
        summary = {g: sum(1 for v in levels.values() if v == g) for g in GRANULARITIES}
        return {"scores": scores, "summary": {"scored": len(keys), "by_granularity": summary}}


MAX_EXPLAINED_FEATURES = 5


class ExplainDecisionJob(EnclaveJob):
    """Why an approved model scored one subject as it did (PIPL Art. 24: explanation of an automated decision).

    Inputs: ``request`` (party; the platform provisions it on the subject's behalf, under a quote it verified):
    ``{"model_digest": hex, "granularity": "decision" | "grade" | "score", "top": 1-5}`` and the output policy;
    ``model`` (host, sealed): the approved model as :class:`ModelApprovalJob` sealed it; ``population`` (host):
    the platform's features, keyed ``"<population>:<n>"`` as for the approval (the baseline); ``subject`` (host):
    the subject's own features (one key). ``policy`` (host): ``{"populations": {...}}``.

    Output (plain, signed): ``explanation`` — the model's digest, the features it reads, the population it was
    compared with, the ``top`` features that moved this subject's score most away from the population's average
    score (``w_j * (z_j - mean z_j)``, the exact attribution of a logistic model's log-odds with features taken
    as independent), each with its direction (``raises`` or ``lowers`` the estimated risk) and its share of the
    total movement rounded to 10 %; and the result at the granularity the bank was released
    (:func:`enclave_sim.model_check.coarsen`), recomputed on the subject's current data.

    Who learns what: the subject learns its own result (at the granularity its consent gave the bank) and, for
    at most five features, a direction and a share in steps of 10 % — never a weight, a coefficient, another
    subject's value or the population's figures beyond what the ranking implies. The host learns the same (it
    relays it). Rounded shares of one subject's movement fix the bank's weights only to within what the
    rounding and the unknown preprocessing leave (``docs/security.md``).
    """

    kind = "explain_decision"
    party_slots = ("request",)
    owner_slot = "request"
    host_slots = ("model", "population", "subject", "policy")
    outputs = frozenset({"explanation"})
    plain_outputs = outputs
    signed_outputs = outputs
    sealed_slots = {"model": APPROVED_MODEL_LABEL}

    def finish(self) -> dict[str, Any]:
        from enclave_sim.model_check import GRANULARITIES, coarsen, parse_model, population_sample

        request = _json(self.inputs["request"], "the explanation request")
        if not isinstance(request, dict) or set(request) != {"model_digest", "granularity", "top"}:
            raise ProvisioningError('the request must be {"model_digest", "granularity", "top"}')
        if request["granularity"] not in GRANULARITIES:
            raise ProvisioningError(f"granularity must be one of {', '.join(GRANULARITIES)}")
        top = request["top"]
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_EXPLAINED_FEATURES:
            raise ProvisioningError(f"top must be an integer in [1, {MAX_EXPLAINED_FEATURES}]")
        models = _json(self.inputs["model"], "the approved model")
        if not isinstance(models, list) or len(models) != 1:
            raise ProvisioningError("an explanation takes exactly one approved model")
        model = parse_model(models[0])
        if request["model_digest"] != model.digest():
            raise EnclaveJobError("the approved model supplied is not the one the explanation is about")
        pol = _json(self.inputs["policy"], "the populations")
        try:
            populations = {str(p): [str(n) for n in ns] for p, ns in pol["populations"].items()}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProvisioningError(f"the populations are malformed: {exc}") from None
        keys, sample, _ = parse_table(self.inputs["population"], what="population features", labelled=False)
        population, rows = population_sample(model, keys, sample, populations)
        who, mine, _ = parse_table(self.inputs["subject"], what="the subject's features", labelled=False)
        if len(who) != 1 or any(n not in mine for n in model.features):
            raise ProvisioningError("supply exactly one subject, with every feature the model reads")
        mean = model.contributions(rows).mean(axis=0)
        own = model.contributions(mine)[0]
        phi = own - mean
        total = float(np.abs(phi).sum())
        ranked = sorted(range(len(phi)), key=lambda j: -abs(float(phi[j])))
        drivers = []
        for j in ranked[:top]:
            share = round(abs(float(phi[j])) / total, 1) if total > 0 else 0.0
            if share <= 0:
                continue
            drivers.append(
                {
                    "feature": model.features[j],
                    "direction": "raises" if phi[j] > 0 else "lowers",
                    "share": share,
                }
            )
        pd = float(model.pd(mine)[0])
        return {
            "explanation": {
                "model_digest": model.digest(),
                "features": list(model.features),
                "population": population,
                "drivers": drivers,
                "result": coarsen(pd, model.granularity(request["granularity"])),
                "granularity": request["granularity"],
            }
        }


# --- bounded influence in horizontal training -----------------------------------------------------------------

MAX_FED_BANKS = 50
"""slots ``bank1`` .. ``bank50``: a federation's participants by position (pps.services.federated)"""
MAX_FED_DIM = 1 << 20
TAIL_LIMIT = 1 << 90


def _fed_terms(doc: Any) -> dict[str, Any]:
    keys = {"federation", "round", "dim", "clip_norm", "max_weight", "tail", "min_banks"}
    if not isinstance(doc, dict) or set(doc) != keys:
        raise ProvisioningError(f"the round's terms must be an object with {', '.join(sorted(keys))}")
    ints = {"round": (0, 10_000), "dim": (1, MAX_FED_DIM), "max_weight": (1, 1 << 24), "tail": (0, 4096)}
    ints["min_banks"] = (3, MAX_FED_BANKS)
    for name, (lo, hi) in ints.items():
        v = doc[name]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ProvisioningError(f"terms: {name} must be an integer in [{lo}, {hi}]")
    clip = doc["clip_norm"]
    if isinstance(clip, bool) or not isinstance(clip, int | float) or not 0 < clip <= 1e6:
        raise ProvisioningError("terms: clip_norm must be a number in (0, 1e6]")
    if not isinstance(doc["federation"], str) or not 0 < len(doc["federation"]) <= 64:
        raise ProvisioningError("terms: federation must be a string of 1-64 characters")
    return doc


def _fed_update(data: bytes, terms: dict[str, Any]) -> tuple[FloatArray, int, list[int]]:
    """One bank's input, checked against the round's terms; raises ProvisioningError naming what is wrong."""
    doc = _json(data, "the bank's update")
    if not isinstance(doc, dict) or set(doc) != {"terms", "update", "weight", "tail"}:
        raise ProvisioningError("an update must be an object with terms, update, weight and tail")
    if doc["terms"] != terms:
        raise ProvisioningError(
            "the update was made for other terms than the round's (clip norm, size, round)"
        )
    raw = doc["update"]
    if not isinstance(raw, list) or len(raw) != terms["dim"]:
        raise ProvisioningError(f"the update must hold {terms['dim']} numbers")
    try:
        update = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProvisioningError("the update must hold numbers") from None
    if not np.all(np.isfinite(update)):
        raise ProvisioningError("the update holds NaN or infinity")
    w = doc["weight"]
    if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= terms["max_weight"]:
        raise ProvisioningError(f"the weight must be an integer in [1, {terms['max_weight']}]")
    tail = doc["tail"]
    if (
        not isinstance(tail, list)
        or len(tail) != terms["tail"]
        or any(isinstance(v, bool) or not isinstance(v, int) or abs(v) >= TAIL_LIMIT for v in tail)
    ):
        raise ProvisioningError(f"the tail must hold {terms['tail']} integers below 2^90 in magnitude")
    return update, w, tail


class FedAvgAggregateJob(EnclaveJob):
    """One FedAvg round aggregated inside the enclave, with a norm bound no bank can evade.

    Inputs: ``terms`` (party, the owner: the initiating bank states the round — federation, round, update size
    ``dim``, ``clip_norm``, ``max_weight``, tail length, ``min_banks`` — and the output policy ``aggregate``);
    ``bank1`` .. ``bank50`` (party, one per participant by position, HPKE-encrypted to the enclave under a quote
    that bank verified): ``{"terms": <the same terms>, "update": [dim numbers], "weight": int, "tail": [ints]}``.
    Only ``terms`` is required: a bank that never provisions has dropped out.

    The check: every update is parsed here, in the clear; one that is malformed, not finite, made for other
    terms or over ``max_weight`` is **refused** (its position is named in the output, it adds nothing); every
    other update is **clipped** to ``clip_norm`` here, whatever the bank did before sending it. The output
    ``aggregate`` (plain) is ``{"terms": the round's terms, "sum": sum_i w_i clip(u_i), "weight": sum_i w_i, "tail": exact sums, "banks":
    positions summed, "clipped": how many were clipped, "refused": {position: reason}}``; with fewer than
    ``min_banks`` accepted updates the job fails and nothing leaves.

    Who learns what: the **enclave** sees each bank's update (trust moves from "the server does not collude
    with the banks" to "the enclave is what its quote says"); the **host/server** learns exactly what secure
    aggregation gives it — the sum, the total weight and the tail's sums — plus the number of clipped updates
    and the refused banks with the reason (a bank that breaks the round's terms is named: JR/T 0196-2020
    traceability); a **bank** learns the same aggregate as under secure aggregation. A malicious bank moves the
    mean by at most ``w_i * clip_norm / sum_j w_j`` (``max_weight`` caps ``w_i``): the weight is self-declared,
    which the enclave cannot check (it never sees the bank's rows). Drop-outs: no shares or unmasking — the
    round sums the banks that provisioned before the host ran it.
    """

    kind = "fedavg_aggregate"
    party_slots = ("terms", *(f"bank{i}" for i in range(1, MAX_FED_BANKS + 1)))
    owner_slot = "terms"
    required_party_slots = ("terms",)
    outputs = frozenset({"aggregate"})
    plain_outputs = frozenset({"aggregate"})

    def finish(self) -> dict[str, Any]:
        terms = _fed_terms(_json(self.inputs["terms"], "the round's terms"))
        total = np.zeros(terms["dim"])
        tail = [0] * terms["tail"]
        weight, clipped = 0, 0
        banks: list[int] = []
        refused: dict[str, str] = {}
        clip = float(terms["clip_norm"])
        for i in range(1, MAX_FED_BANKS + 1):
            data = self.inputs.get(f"bank{i}")
            if data is None:
                continue
            try:
                update, w, t = _fed_update(data, terms)
            except ProvisioningError as exc:
                refused[str(i)] = exc.message
                continue
            norm = float(np.linalg.norm(update))
            if norm > clip:
                update = update * (clip / norm)
                clipped += 1
            total += w * update
            weight += w
            tail = [a + b for a, b in zip(tail, t, strict=True)]
            banks.append(i)
        if len(banks) < terms["min_banks"]:
            raise EnclaveJobError(
                f"only {len(banks)} acceptable update(s) (refused: {sorted(refused) or 'none'}); a round needs "
                f"{terms['min_banks']}: nothing was aggregated"
            )
        return {
            "aggregate": {
                "terms": terms,
                "sum": [float(v) for v in total],
                "weight": weight,
                "tail": tail,
                "banks": banks,
                "clipped": clipped,
                "refused": refused,
            }
        }


JOBS: dict[str, type[EnclaveJob]] = {
    GBDTJob.kind: GBDTJob,
    VerticalLRCoordinatorJob.kind: VerticalLRCoordinatorJob,
    ModelApprovalJob.kind: ModelApprovalJob,
    GradedScoreJob.kind: GradedScoreJob,
    ExplainDecisionJob.kind: ExplainDecisionJob,
    FedAvgAggregateJob.kind: FedAvgAggregateJob,
}
"""The jobs this enclave build runs (part of its measurement: adding one changes the build)."""
