"""The bank's side of a vertical training, over the API (used by :class:`pps.client.PPSClient`).

:func:`train_vertical` aligns rows by PSI (operation ``train``), verifies a fresh quote of the enclave that
will hold the coordinator's key, provisions the coordinator there, starts the session and runs the guest
(:class:`protocols.vertical_lr.Guest`) locally: the bank's labels and features never leave this process; only
ciphertexts under the coordinator's key and uniformly masked values do. :func:`vertical_scores` scores
applicants with both halves: the platform's contribution arrives encrypted under a Paillier key made here.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pps import errors

if TYPE_CHECKING:
    from pps.client import PPSClient
    from protocols.vertical_lr import GuestModel, VerticalLRConfig

EXCHANGE_MEDIA_TYPE = "application/vnd.pps.vlr-frames"


@dataclass
class VerticalTrainingResult:
    """What the bank has after training: its own half, the registered model, and what happened."""

    model: dict[str, Any]
    """the registry's description (``model["id"]`` names the model for scoring and evaluation)"""
    guest_model: GuestModel
    subjects: list[str]
    """the rows used, in the order of ``guest_model``'s training"""
    excluded: dict[str, int]
    losses: list[float]
    epochs: int
    stopped_early: bool
    psi: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _post_frames(client: PPSClient, path: str, frames: Sequence[bytes]) -> list[bytes]:
    from pps.services.vertical import pack_frames, unpack_frames

    response = client._http.post(
        path, content=pack_frames(frames), headers={"content-type": EXCHANGE_MEDIA_TYPE}
    )
    if response.status_code >= 400:
        from pps.client import _raise_for

        _raise_for(response)
    return unpack_frames(response.content)


def start_body(
    client: PPSClient,
    *,
    name: str,
    purpose: str,
    subjects: Sequence[str],
    platform_features: Sequence[str],
    vendor_key: Any,
    key_bits: int = 2048,
    measurements: Iterable[bytes] | None = None,
) -> dict[str, Any]:
    """The body of ``POST /v1/training/vertical``: a fresh quote verified, the coordinator's set-up encrypted to it."""
    from enclave_sim import crypto
    from enclave_sim.quote import Quote

    quote, sealed = client.provision_to_enclave(
        job="vlr_coordinator",
        slot="guest",
        body=f'{{"key_bits": {int(key_bits)}}}'.encode(),
        output=crypto.OutputPolicy(("summary",), os.urandom(32)),
        vendor_key=vendor_key,
        measurements=measurements,
    )
    return {
        "name": name,
        "purpose": purpose,
        "subjects": list(subjects),
        "features": list(platform_features),
        "quote_hash": Quote.parse(quote).quote_hash.hex(),
        "ciphertext": base64.b64encode(sealed).decode(),
    }


def start_vertical(client: PPSClient, **kwargs: Any) -> dict[str, Any]:
    """Start a session (see :func:`start_body` for the arguments); the answer names the rows used."""
    started: dict[str, Any] = client.request(
        "POST", "/v1/training/vertical", json=start_body(client, **kwargs)
    )
    return started


def run_guest(
    client: PPSClient,
    started: dict[str, Any],
    guest: Any,
    config: Any,
    *,
    on_batch: Callable[[int, int], None] | None = None,
) -> None:
    """Run the guest's side of a started session to its end (one round trip per mini-batch); not ``finish``."""
    path = f"/v1/training/vertical/{started['id']}/exchange"
    guest.receive_public_key(base64.b64decode(started["public_key"]))
    ack, forward = _post_frames(client, path, [guest.setup(config)])
    guest.receive_setup_ack(ack)
    batches = 0
    while True:
        residuals = guest.receive_forward(forward)
        reply = _post_frames(client, path, [residuals, guest.masked_gradient()])
        guest.receive_decrypted(reply[0])
        batches += 1
        if on_batch is not None:
            on_batch(guest.epoch, batches)
        if len(reply) > 1:
            forward = reply[1]
            continue
        after = _post_frames(client, path, [guest.end_epoch()])
        if guest.done:
            return
        (forward,) = after


def train_vertical(
    client: PPSClient,
    *,
    name: str,
    purpose: str,
    customers: Sequence[str],
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    platform_features: Sequence[str],
    vendor_key: Any,
    config: VerticalLRConfig | None = None,
    key_bits: int = 2048,
    measurements: Iterable[bytes] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> VerticalTrainingResult:
    """Train a vertical LR model: ``features``/``labels`` are the bank's rows for ``customers`` (USCCs)."""
    import time

    from protocols import vertical_lr as vl

    t0 = time.perf_counter()
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] != len(customers) or y.shape != (len(customers),):
        raise errors.InvalidInput("features must be one row per customer and labels one per customer")
    if len(set(customers)) != len(customers):
        raise errors.InvalidInput("each customer once")
    config = config or vl.VerticalLRConfig()
    # 1. alignment: which of my customers consented to training with me, for this purpose
    psi = client.psi(customers, purpose=purpose, operation="train")
    assert psi.intersection is not None
    aligned = [c for c in customers if c in psi.intersection]
    started = start_vertical(
        client,
        name=name,
        purpose=purpose,
        subjects=aligned,
        platform_features=platform_features,
        vendor_key=vendor_key,
        key_bits=key_bits,
        measurements=measurements,
    )
    rows = started["subjects"]
    position = {c: i for i, c in enumerate(customers)}
    idx = [position[c] for c in rows]
    guest = vl.Guest(x[idx], y[idx])
    path = f"/v1/training/vertical/{started['id']}"
    run_guest(client, started, guest, config, on_batch=on_batch)
    model = client.request("POST", f"{path}/finish")
    return VerticalTrainingResult(
        model=model,
        guest_model=guest.model(),
        subjects=list(rows),
        excluded=dict(started["excluded"]),
        losses=list(guest.losses),
        epochs=guest.epoch + 1,
        stopped_early=guest.stopped_early,
        psi={"customers": len(customers), "aligned": len(aligned), "used": len(rows)},
        seconds=time.perf_counter() - t0,
    )


def vertical_scores(
    client: PPSClient,
    model_id: str,
    guest_model: GuestModel,
    *,
    purpose: str,
    subjects: Sequence[str],
    features: np.ndarray,
    key_bits: int = 2048,
) -> tuple[list[str], np.ndarray]:
    """Probabilities of default for consented ``subjects`` (``features``: the bank's rows for them).

    Returns the subjects scored (those the platform could: consent for ``score``, a registry record) and
    their probabilities, in that order."""
    from protocols import paillier_fast as pf
    from protocols import vertical_lr as vl

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(subjects):
        raise errors.InvalidInput("features must be one row per subject")
    public, private = pf.generate_keypair(key_bits)
    got = client.request(
        "POST",
        f"/v1/models/{model_id}/contributions",
        json={
            "purpose": purpose,
            "subjects": list(subjects),
            "public_key": base64.b64encode(public.to_bytes()).decode(),
        },
    )
    position = {s: i for i, s in enumerate(subjects)}
    scored = list(got["subjects"])
    if not scored:
        return [], np.zeros(0)
    rows = x[[position[s] for s in scored]]
    return scored, vl.guest_score(guest_model, rows, base64.b64decode(got["contribution"]), private)
