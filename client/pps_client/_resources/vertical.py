"""Vertical training: the bank (guest) trains a logistic regression with the platform (host); the key-holding
coordinator runs in the attested enclave.

:meth:`Vertical.train` aligns rows by PSI (operation ``train``), verifies a fresh quote of the enclave that will
hold the coordinator's key, provisions the coordinator there, starts the session and runs the guest
(:class:`protocols.vertical_lr.Guest`) here: the bank's labels and features never leave this process; only
ciphertexts under the coordinator's key and uniformly masked values do. :meth:`Vertical.scores` scores
applicants with both halves: the platform's contribution arrives encrypted under a Paillier key made here.
(``vertical`` and ``psi`` extras.)
"""

from __future__ import annotations

import base64
import builtins
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pps_client._client import dumps
from pps_client._resources._base import Resource
from pps_client._types import Alignment, VerticalTrainingResult
from pps_wire import frames, provision, quote
from pps_wire.schemas import (
    ContributionsIn,
    ContributionsOut,
    ModelOut,
    TrainingPublic,
    VerticalStarted,
    VerticalStartIn,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from protocols.vertical_lr import Guest, GuestModel, VerticalLRConfig

BatchCallback = Callable[[int, int], None]
"""Called after every mini-batch with the epoch (0-based) and the number of batches so far."""


class Vertical(Resource):
    def start_body(
        self,
        *,
        name: str,
        purpose: str,
        subjects: Sequence[str],
        platform_features: Sequence[str],
        vendor_key: Ed25519PublicKey,
        key_bits: int = 2048,
        measurements: Iterable[bytes] | None = None,
    ) -> VerticalStartIn:
        """The body of ``POST /v1/training/vertical``: a fresh quote verified, the coordinator's set-up
        encrypted to it."""
        raw_quote, sealed = self._client.enclave.provision(
            job="vlr_coordinator",
            slot="guest",
            body=f'{{"key_bits": {int(key_bits)}}}'.encode(),
            output=provision.OutputPolicy(("summary",), os.urandom(32)),
            vendor_key=vendor_key,
            measurements=measurements,
        )
        return VerticalStartIn(
            name=name,
            purpose=purpose,
            subjects=list(subjects),
            features=list(platform_features),
            quote_hash=quote.Quote.parse(raw_quote).quote_hash.hex(),
            ciphertext=base64.b64encode(sealed).decode(),
        )

    def start(self, body: VerticalStartIn) -> VerticalStarted:
        """Start a session (``body`` from :meth:`start_body`); the answer names the rows the platform uses."""
        return self._client._call("POST", "/v1/training/vertical", VerticalStarted, json_body=dumps(body))

    def exchange(self, training_id: str, messages: Sequence[bytes]) -> builtins.list[bytes]:
        """One round trip of the protocol's frames (:func:`pps_wire.frames.pack_frames`, both ways)."""
        response = self._client._request(
            "POST",
            f"/v1/training/vertical/{training_id}/exchange",
            content=frames.pack_frames(messages),
            headers={"content-type": frames.VLR_FRAMES_MEDIA_TYPE},
        )
        return frames.unpack_frames(response.content)

    def run_guest(
        self,
        started: VerticalStarted,
        guest: Guest,
        config: VerticalLRConfig,
        *,
        on_batch: BatchCallback | None = None,
    ) -> None:
        """Run the guest's side of a started session to its end (one round trip per mini-batch, two with
        ``loss="exact"``); not :meth:`finish`."""
        from protocols import vertical_lr as vl

        guest.receive_public_key(base64.b64decode(started.public_key))
        ack, forward = self.exchange(started.id, [guest.setup(config)])
        guest.receive_setup_ack(ack)
        batches = 0
        while True:
            residuals = guest.receive_forward(forward)
            if guest.stage is vl.Stage.AWAITING_PROBABILITIES:  # loss="exact": the enclave's sigmoid
                (probabilities,) = self.exchange(started.id, [residuals])
                residuals = guest.receive_probabilities(probabilities)
            reply = self.exchange(started.id, [residuals, guest.masked_gradient()])
            guest.receive_decrypted(reply[0])
            batches += 1
            if on_batch is not None:
                on_batch(guest.epoch, batches)
            if len(reply) > 1:
                forward = reply[1]
                continue
            after = self.exchange(started.id, [guest.end_epoch()])
            if guest.done:
                return
            (forward,) = after

    def finish(self, training_id: str) -> ModelOut:
        """End the training and register the model."""
        return self._client._call("POST", f"/v1/training/vertical/{training_id}/finish", ModelOut)

    def cancel(self, training_id: str) -> TrainingPublic:
        """Cancel a running training: nothing is registered."""
        return self._client._call("DELETE", f"/v1/training/vertical/{training_id}", TrainingPublic)

    def list(self) -> builtins.list[TrainingPublic]:
        return self._client._call_list("GET", "/v1/training/vertical", TrainingPublic)

    def get(self, training_id: str) -> TrainingPublic:
        return self._client._call("GET", f"/v1/training/vertical/{training_id}", TrainingPublic)

    def train(
        self,
        *,
        name: str,
        purpose: str,
        customers: Sequence[str],
        features: npt.ArrayLike,
        labels: npt.ArrayLike,
        platform_features: Sequence[str],
        vendor_key: Ed25519PublicKey,
        config: VerticalLRConfig | None = None,
        key_bits: int = 2048,
        measurements: Iterable[bytes] | None = None,
        on_batch: BatchCallback | None = None,
        standardise: bool = True,
    ) -> VerticalTrainingResult:
        """Train a vertical LR model: ``features`` / ``labels`` are the bank's rows for ``customers`` (USCCs),
        in that order, in their own units.

        ``standardise`` (default): the bank's columns are standardised here, over the aligned training rows
        (the platform does the same with its own); the statistics stay with the bank's half
        (``guest_model.mean``/``scale``) and apply when scoring. Training that diverges stops with
        :class:`protocols.errors.TrainingDiverged` (its message names the cause and the fix) and the session is
        cancelled: no model is registered.

        Consent is decided again before every batch reads the platform's features: a subject whose consent
        was withdrawn (or expired) meanwhile ends the session there with :class:`~pps_client.Conflict` (409,
        naming how many subjects, never who), and nothing is registered — align again (the withdrawn subject
        is no longer in the intersection) and train anew. The session's first batch spends one use of each
        consent, which stays spent if the training fails or is cancelled later."""
        import numpy as np

        from protocols import vertical_lr as vl

        t0 = time.perf_counter()
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels)
        if x.ndim != 2 or x.shape[0] != len(customers) or y.shape != (len(customers),):
            raise ValueError("features must be one row per customer and labels one per customer")
        if len(set(customers)) != len(customers):
            raise ValueError("customers must name each customer once")
        config = config or vl.VerticalLRConfig()
        # 1. alignment: which of my customers consented to training with me, for this purpose
        psi = self._client.psi.run(customers, purpose=purpose, operation="train")
        found = psi.intersection or frozenset()
        aligned = [c for c in customers if c in found]
        started = self.start(
            self.start_body(
                name=name,
                purpose=purpose,
                subjects=aligned,
                platform_features=platform_features,
                vendor_key=vendor_key,
                key_bits=key_bits,
                measurements=measurements,
            )
        )
        rows = list(started.subjects)
        position = {c: i for i, c in enumerate(customers)}
        idx = [position[c] for c in rows]
        own = x[idx]
        if standardise:
            mean, scale = vl.standardisation(own)
            own = (own - mean) / scale
        guest = vl.Guest(own, y[idx])
        try:
            self.run_guest(started, guest, config, on_batch=on_batch)
        except vl.VerticalLRError:
            self.cancel(started.id)  # diverged or refused: nothing is registered
            raise
        model = self.finish(started.id)
        half = guest.model()
        return VerticalTrainingResult(
            model=model,
            guest_model=half.standardised(mean, scale) if standardise else half,
            subjects=rows,
            excluded=dict(started.excluded),
            losses=list(guest.losses),
            epochs=guest.epoch + 1,
            stopped_early=guest.stopped_early,
            converged=guest.converged,
            alignment=Alignment(customers=len(customers), aligned=len(aligned), used=len(rows)),
            seconds=time.perf_counter() - t0,
        )

    def bank_alone(
        self, features: npt.ArrayLike, labels: npt.ArrayLike, *, l2: float | None = None
    ) -> GuestModel:
        """The baseline a joined model must beat: a logistic regression on the bank's own features only, fitted
        here (nothing is sent), to its optimum, on the same training rows as the joined model (pass those).
        Score the same held-out rows with it and post both evaluations
        (``evaluation.with_baseline(bank_alone_evaluation)``): the model report shows the value of joining."""
        from protocols import vertical_lr as vl

        return vl.local_fit(features, labels, l2=l2)

    def scores(
        self,
        model_id: str,
        guest_model: GuestModel,
        *,
        purpose: str,
        subjects: Sequence[str],
        features: npt.ArrayLike,
        key_bits: int = 2048,
    ) -> tuple[builtins.list[str], np.ndarray[Any, Any]]:
        """Probabilities of default for consented ``subjects`` (``features``: the bank's rows for them).

        Returns the subjects scored (those the platform could: consent for ``score``, a registry record) and
        their probabilities, in that order."""
        import numpy as np

        from protocols import paillier_fast as pf
        from protocols import vertical_lr as vl

        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != len(subjects):
            raise ValueError("features must be one row per subject")
        public, private = pf.generate_keypair(key_bits)
        body = ContributionsIn(
            purpose=purpose,
            subjects=list(subjects),
            public_key=base64.b64encode(public.to_bytes()).decode(),
        )
        got = self._client._call(
            "POST", f"/v1/models/{model_id}/contributions", ContributionsOut, json_body=dumps(body)
        )
        position = {s: i for i, s in enumerate(subjects)}
        scored = list(got.subjects)
        if not scored:
            return [], np.zeros(0)
        rows = x[[position[s] for s in scored]]
        return scored, vl.guest_score(guest_model, rows, base64.b64decode(got.contribution), private)
