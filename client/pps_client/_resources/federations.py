"""Horizontal federated training: banks train one model over their own portfolios with secure aggregation.

The secure-aggregation secrets of a round (two X25519 keys, the self-mask seed, the peers' shares) live in this
object only (one per :class:`~pps_client.Client`); they never go to the service. If the object is lost
mid-round, the bank has dropped out of that round (the others finish it without it, as long as the threshold
holds). (``federated`` extra.)

>>> fed = client.federations.create(name="sme-pd", participants=[me, b, c], kind="horizontal_lr",
...                                 feature_schema=names, rounds=10, threshold=2)
>>> client.federations.train(fed.id, x_train, y_train)   # blocks until done or aborted
"""

from __future__ import annotations

import base64
import builtins
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pps_client._client import dumps
from pps_client._exceptions import JobTimeout
from pps_client._resources._base import Resource
from pps_wire.schemas import (
    PURPOSE,
    AcceptIn,
    AdvanceIn,
    FederationIn,
    FederationOut,
    FederationSummaryOut,
    MessageIn,
)

if TYPE_CHECKING:
    import numpy.typing as npt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from pps_wire.federated import FedModelBase

StepCallback = Callable[[FederationOut], None]


class Federations(Resource):
    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self._rounds: dict[str, tuple[int, Any]] = {}

    def create(
        self,
        *,
        name: str,
        participants: Sequence[str],
        kind: Literal["horizontal_lr", "horizontal_mlp"],
        feature_schema: Sequence[str],
        rounds: int,
        threshold: int,
        **options: Any,
    ) -> FederationOut:
        """Start a federation with other banks (``participants``: bank organisation ids, this bank included).
        ``options``: local_epochs, clip_norm, learning_rate, l2, batch_size, hidden, seed, phase_timeout_s."""
        body = FederationIn.model_validate(
            {
                "name": name,
                "participants": list(participants),
                "kind": kind,
                "feature_schema": list(feature_schema),
                "rounds": rounds,
                "threshold": threshold,
                **options,
            }
        )
        return self._client._call("POST", "/v1/federations", FederationOut, json_body=dumps(body))

    def list(self) -> builtins.list[FederationSummaryOut]:
        """The federations this bank takes part in."""
        return self._client._call_list("GET", "/v1/federations", FederationSummaryOut)

    def get(self, federation_id: str) -> FederationOut:
        """A federation: its round, phase, global model and this bank's inbox."""
        return self._client._call("GET", f"/v1/federations/{federation_id}", FederationOut)

    def accept(self, federation_id: str, purpose: str = PURPOSE) -> FederationOut:
        body = AcceptIn(purpose=purpose)
        return self._client._call(
            "POST", f"/v1/federations/{federation_id}/accept", FederationOut, json_body=dumps(body)
        )

    def advance(self, federation_id: str) -> FederationOut:
        """Close the current phase with the banks heard from (after its deadline, or once all have posted)."""
        return self._client._call(
            "POST", f"/v1/federations/{federation_id}/advance", FederationOut, json_body=dumps(AdvanceIn())
        )

    def post_message(self, federation_id: str, frame: bytes) -> FederationOut:
        """Post this bank's secure-aggregation message of the current phase."""
        body = MessageIn(message=base64.b64encode(frame).decode())
        return self._client._call(
            "POST", f"/v1/federations/{federation_id}/messages", FederationOut, json_body=dumps(body)
        )

    @staticmethod
    def _training_model(view: FederationOut) -> FedModelBase:
        """The global model in the space the banks train in (standardised features, if the federation is)."""
        from pps_wire.federated import federation_model

        m = federation_model(view.kind, len(view.feature_schema), view.config, view.local_epochs)
        if view.global_weights is not None:
            m.set_flat(view.global_weights)
        return m

    @classmethod
    def model(cls, view: FederationOut) -> FedModelBase:
        """The federation's current global model (:mod:`pps_wire.federated`) on *raw* features: the joint
        standardisation, if any, is folded into its weights. Once done, the registered model."""
        from pps_wire.federated import fold_standardisation

        m = cls._training_model(view)
        return fold_standardisation(m, view.standardisation) if view.standardisation else m

    def step(
        self,
        federation_id: str,
        x: npt.ArrayLike,
        y: npt.ArrayLike,
        *,
        vendor_key: Ed25519PublicKey | None = None,
    ) -> FederationOut:
        """Take this bank's next action in the current round, if there is one now; return the federation.

        Advertise keys → share keys → train locally from the round's global model and post the masked update
        (weighted by this bank's sample count) → post unmasking shares. Returns at once when waiting for others.
        In an enclave-mode federation: verify a fresh quote of the enclave (``vendor_key``: the vendor's
        attestation key you pinned) and provision the update to it, in one step.
        """
        from pps_wire.federated import round_tail
        from protocols.secagg import RoundInfo, SecAggClient, SecAggParams

        view = self.get(federation_id)
        rnd = view.round
        if view.state != "running" or rnd is None or rnd.posted:
            return view
        if view.config.get("aggregation") == "enclave":
            return self._enclave_step(view, x, y, vendor_key)
        r, phase = rnd.round_no, rnd.phase
        if phase == "advertise_keys":
            params = SecAggParams(
                n=len(view.participants),
                threshold=view.threshold,
                dim=view.n_params,
                clip_norm=view.config["clip_norm"],
                tail=round_tail(len(view.feature_schema), r, view.config),
            )
            sa = SecAggClient(RoundInfo(federation_id, r, params), view.my_position)
            self._rounds[federation_id] = (r, sa)
            return self.post_message(federation_id, sa.advertise_keys())
        held = self._rounds.get(federation_id)
        if held is None or held[0] != r or view.inbox is None:
            return view  # this bank is out of this round (it lost its secrets or dropped out earlier)
        sa, inbox = held[1], base64.b64decode(view.inbox)
        if phase == "share_keys":
            return self.post_message(federation_id, sa.share_keys(inbox))
        if phase == "masked_input":
            return self.post_message(federation_id, self._masked_input(view, sa, inbox, x, y))
        if phase == "unmask":
            out = self.post_message(federation_id, sa.unmask(inbox))
            self._rounds.pop(federation_id, None)
            return out
        return view

    def _local(
        self, view: FederationOut, x: npt.ArrayLike, y: npt.ArrayLike, dim: int, tail: bool
    ) -> tuple[Any, int, builtins.list[int]]:
        """``(update, weight, tail)`` of this bank for the current round. Round 0: a zero update and this bank's
        row count, positives, feature sums and sums of squares (summed securely: the joint statistics). A
        training round: the validation loss of the round's global model on this bank's held-out rows, then the
        local update on the others, both on features standardised with the joint statistics."""
        import numpy as np

        from pps_wire.federated import local_moments, standardise, validation_split, validation_tail

        k, labels = len(view.feature_schema), np.asarray(y)
        features = np.asarray(x, dtype=np.float64)
        if view.current_round == 0:
            return np.zeros(dim), len(labels), local_moments(features, labels, k)
        if view.standardisation:
            features = standardise(features, view.standardisation)
        fraction = float(view.config.get("validation_fraction", 0.0))
        train, held = validation_split(
            len(labels), labels, fraction, seed=int(view.config["seed"]) + view.my_position
        )
        model = self._training_model(view)
        vt = validation_tail(model, features[held], labels[held]) if tail else []
        start = model.get_flat()
        delta = model.fit(features[train], labels[train]).get_flat() - start
        return delta, len(train), vt

    def _masked_input(
        self, view: FederationOut, sa: Any, inbox: bytes, x: npt.ArrayLike, y: npt.ArrayLike
    ) -> bytes:
        p = sa.info.params
        update, weight, tail = self._local(view, x, y, p.dim, bool(p.tail))
        return bytes(sa.masked_input(inbox, update, min(weight, p.max_weight), tail=tail))

    def _enclave_step(
        self, view: FederationOut, x: npt.ArrayLike, y: npt.ArrayLike, vendor_key: Ed25519PublicKey | None
    ) -> FederationOut:
        """Enclave mode: this bank's (clipped) update provisioned to the enclave aggregator under a verified
        quote; the initiating bank provisions the round's terms and output policy too."""
        import json
        import os

        from pps_wire import provision
        from pps_wire.quote import Quote
        from pps_wire.schemas import EnclaveInputIn
        from protocols.secagg import clip_l2

        if vendor_key is None:
            raise ValueError(
                "an enclave-mode federation needs vendor_key: the enclave vendor's key you pinned"
            )
        terms = view.enclave_terms
        if terms is None:
            return view
        update, weight, tail = self._local(view, x, y, int(terms["dim"]), bool(terms["tail"]))
        body = {
            "terms": terms,
            "update": [float(v) for v in clip_l2(update, float(terms["clip_norm"]))],
            "weight": min(int(weight), int(terms["max_weight"])),
            "tail": tail,
        }

        def sealed(slot: str, doc: Any, output: provision.OutputPolicy | None) -> dict[str, str]:
            q, ct = self._client.enclave.provision(
                job="fedavg_aggregate",
                slot=slot,
                body=json.dumps(doc).encode(),
                output=output,
                vendor_key=vendor_key,
            )
            return {
                "quote_hash": Quote.parse(q).quote_hash.hex(),
                "ciphertext": base64.b64encode(ct).decode(),
            }

        payload: dict[str, Any] = {"update": sealed(f"bank{view.my_position}", body, None)}
        if view.initiator_org_id == next(
            p.bank_org_id for p in view.participants if p.position == view.my_position
        ):
            payload["terms"] = sealed("terms", terms, provision.OutputPolicy(("aggregate",), os.urandom(32)))
        return self._client._call(
            "POST",
            f"/v1/federations/{view.id}/enclave-input",
            FederationOut,
            json_body=dumps(EnclaveInputIn.model_validate(payload)),
        )

    def train(
        self,
        federation_id: str,
        x: npt.ArrayLike,
        y: npt.ArrayLike,
        *,
        poll: float = 0.2,
        timeout: float = 3600.0,
        on_step: StepCallback | None = None,
        vendor_key: Ed25519PublicKey | None = None,
    ) -> FederationOut:
        """Take part until the federation is done or aborted; :class:`~pps_client.JobTimeout` after
        ``timeout`` seconds. A federation stopped because training failed — divergence, or a model no better
        than predicting the base rate — raises :class:`protocols.errors.TrainingDiverged` naming the cause and
        the fix (no model was registered); other aborts (too few banks) return the aborted view."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.step(federation_id, x, y, vendor_key=vendor_key)
            if on_step is not None:
                on_step(view)
            if view.state == "aborted" and (view.outcome or {}).get("code") == "training_diverged":
                from protocols.errors import TrainingDiverged

                raise TrainingDiverged(view.abort_reason or "training diverged")
            if view.state in ("done", "aborted"):
                return view
            if time.monotonic() > deadline:
                raise JobTimeout(federation_id, timeout)
            time.sleep(poll)
