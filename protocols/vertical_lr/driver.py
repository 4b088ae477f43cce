"""The three parties in one process, every message passed as bytes through a :data:`Transport` (by default in
memory, counting bytes), so a network or an enclave boundary can be put between them without changing them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols import paillier_fast as pf
from protocols.vertical_lr.coordinator import Coordinator
from protocols.vertical_lr.guest import Guest
from protocols.vertical_lr.host import Host
from protocols.vertical_lr.inputs import VerticalLRConfig
from protocols.vertical_lr.messages import MessageType, Party, Stage
from protocols.vertical_lr.scoring import GuestModel, HostModel

Transport = Callable[[Party, Party, bytes], bytes]
"""``deliver(sender, recipient, data) -> data as received``: swap in a network or an enclave boundary."""


@dataclass
class InMemoryTransport:
    """Passes bytes unchanged and counts them per message type."""

    bytes_by_type: dict[str, int] = field(default_factory=dict)
    messages: int = 0

    def __call__(self, sender: Party, recipient: Party, data: bytes) -> bytes:
        kind = MessageType(data[5]).name if len(data) > 5 else "?"
        self.bytes_by_type[kind] = self.bytes_by_type.get(kind, 0) + len(data)
        self.messages += 1
        return data


@dataclass
class TrainingReport:
    """What the driver saw: epochs, the guest's losses, seconds per step, bytes per message type."""

    guest_model: GuestModel
    host_model: HostModel
    epochs: int
    losses: list[float]
    stopped_early: bool
    converged: bool
    """the loss stopped improving within ``tol`` before the epoch limit (False: under-fitted, train longer)"""
    seconds: dict[str, float]
    epoch_seconds: list[float]
    bytes_by_type: dict[str, int]
    decryptions: int
    sigmoids: int = 0
    """linear predictors the coordinator decrypted to take their sigmoid (``loss="exact"``: rows x epochs)"""


def train_vertical_lr(
    guest: Guest,
    host: Host,
    coordinator: Coordinator,
    config: VerticalLRConfig,
    *,
    transport: Transport | None = None,
    prefill_workers: int = 0,
) -> TrainingReport:
    """Run the whole protocol in-process, every message through ``transport`` as bytes.

    ``prefill_workers > 0`` computes every party's obfuscators for the whole run ahead, in that many
    processes (otherwise each is made when needed); the time is in ``seconds["obfuscator precompute"]``.
    """
    wire = transport if transport is not None else InMemoryTransport()
    g, h, c = Party.GUEST, Party.HOST, Party.COORDINATOR
    seconds: dict[str, float] = {}
    clock = time.perf_counter

    def tick(name: str, t0: float) -> float:
        now = clock()
        seconds[name] = seconds.get(name, 0.0) + now - t0
        return now

    pk_msg = coordinator.public_key_message()
    guest.receive_public_key(wire(c, g, pk_msg))
    host.receive_public_key(wire(c, h, pk_msg))
    setup = guest.setup(config)
    coordinator.receive_setup(wire(g, c, setup))
    guest.receive_setup_ack(wire(h, g, host.receive_setup(wire(g, h, setup))))
    if prefill_workers > 0:
        t = clock()
        if prefill_workers == 1 or host.executor is not None or guest.executor is not None:
            host.prefill_obfuscators(config.epochs)  # on each side's executor, if it has one
            guest.prefill_obfuscators(config.epochs)
        else:  # one process pool for both sides (in a deployment each side fills its own)
            assert host.pool is not None
            assert guest.pool is not None
            pf.fill_pools(
                [
                    (host.pool, host.obfuscators_missing(config.epochs)),
                    (guest.pool, guest.obfuscators_missing(config.epochs)),
                ],
                prefill_workers,
            )
        tick("obfuscator precompute", t)
    epoch_seconds: list[float] = []
    while not guest.done:
        t_epoch = clock()
        while guest.stage is Stage.AWAITING_FORWARD:
            t = clock()
            fwd = host.forward()
            t = tick("host: encrypt partial predictions", t)
            res = guest.receive_forward(wire(h, g, fwd))
            if config.loss == "exact":  # the coordinator takes the sigmoid
                t = tick("guest: linear predictor", t)
                probs = coordinator.sigmoid(wire(g, c, res))
                t = tick("coordinator: decrypt + sigmoid + encrypt", t)
                res = guest.receive_probabilities(wire(c, g, probs))
            t = tick("guest: residuals + own gradient", t)
            host_grad = host.receive_residuals(wire(g, h, res))
            t = tick("host: gradient + mask", t)
            guest_grad = guest.masked_gradient()
            t = tick("guest: mask", t)
            host_plain = coordinator.decrypt(wire(h, c, host_grad))
            guest_plain = coordinator.decrypt(wire(g, c, guest_grad))
            t = tick("coordinator: decrypt", t)
            host.receive_decrypted(wire(c, h, host_plain))
            guest.receive_decrypted(wire(c, g, guest_plain))
            tick("updates", t)
        end = guest.end_epoch()
        host.receive_epoch_end(wire(g, h, end))
        coordinator.receive_epoch_end(wire(g, c, end))
        epoch_seconds.append(time.perf_counter() - t_epoch)
    return TrainingReport(
        guest_model=guest.model(),
        host_model=host.model(),
        epochs=len(epoch_seconds),
        losses=list(guest.losses),
        stopped_early=guest.stopped_early,
        converged=guest.converged,
        seconds=seconds,
        epoch_seconds=epoch_seconds,
        bytes_by_type=dict(wire.bytes_by_type) if isinstance(wire, InMemoryTransport) else {},
        decryptions=coordinator.decryptions,
        sigmoids=int(getattr(coordinator, "sigmoids", 0)),
    )
