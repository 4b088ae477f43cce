"""What guest and host share: the key, the session, the batch schedule, the weights, the masks, the
obfuscators and the timings of one side of the training."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from gmpy2 import mpz

from protocols import paillier_fast as pf
from protocols.errors import InvalidMessage, ProtocolStateError
from protocols.paillier_fast import PublicKey
from protocols.parallel import ChunkMapper
from protocols.vertical_lr.inputs import VerticalLRConfig, batches_for, check_features
from protocols.vertical_lr.messages import Message, MessageType, Party, Stage, decode_message, key_id_of


class _Trainer(ABC):
    """What guest and host share: key, session, schedule, weights, masks, obfuscators, timings."""

    party: Party
    executor: ChunkMapper | None = None
    """Where gradient row blocks and obfuscators are computed (a :class:`~protocols.parallel.ChunkMapper`); None: this
    process."""

    def __init__(self, features: Any, name: str) -> None:
        self.x = check_features(features, name)
        self.n_rows, self.n_features = int(self.x.shape[0]), int(self.x.shape[1])
        self.stage = Stage.AWAITING_KEY
        self.public_key: PublicKey | None = None
        self.config: VerticalLRConfig | None = None
        self.session = b""
        self.pool: pf.ObfuscatorPool | None = None
        self.weights = np.zeros(self.n_features)
        self.epoch = 0
        self.batch = 0
        self._batches: list[np.ndarray] = []
        self._xq = np.zeros((0, 0), dtype=np.int64)
        self._masks: list[mpz] = []
        self.seconds: dict[str, float] = {}

    # plumbing
    def _expect(self, data: bytes, kind: MessageType, sender: Party, *stages: Stage) -> Message:
        msg = decode_message(data, self.public_key)
        if self.stage not in stages:
            raise ProtocolStateError(
                f"{self.party.name.lower()}: got {kind.name} while {self.stage.value} (out of order)"
            )
        if msg.type is not kind or msg.sender is not sender:
            raise ProtocolStateError(
                f"{self.party.name.lower()}: expected {kind.name} from {sender.name.lower()}, "
                f"got {msg.type.name} from {msg.sender.name.lower()}"
            )
        if (
            kind is not MessageType.PUBLIC_KEY
            and kind is not MessageType.SETUP
            and msg.session != self.session
        ):
            raise ProtocolStateError(f"{self.party.name.lower()}: {kind.name} from another session")
        if kind in (MessageType.FORWARD, MessageType.RESIDUALS, MessageType.DECRYPTED) and (
            msg.epoch != self.epoch or msg.batch != self.batch
        ):
            raise ProtocolStateError(
                f"{self.party.name.lower()}: {kind.name} for epoch {msg.epoch} batch {msg.batch}, "
                f"expected epoch {self.epoch} batch {self.batch}"
            )
        return msg

    def _message(
        self, kind: MessageType, values: list[mpz] | None = None, flags: int = 0, body: bytes = b""
    ) -> bytes:
        assert self.public_key is not None
        return Message(
            kind,
            self.party,
            self.session,
            key_id_of(self.public_key),
            self.epoch,
            self.batch,
            flags,
            body,
            tuple(values or ()),
        ).to_bytes(self.public_key)

    def _time(self, name: str, start: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def receive_public_key(self, data: bytes) -> None:
        msg = self._expect(data, MessageType.PUBLIC_KEY, Party.COORDINATOR, Stage.AWAITING_KEY)
        try:
            key = PublicKey.from_bytes(msg.body)
        except pf.PaillierError as exc:
            raise InvalidMessage(f"PUBLIC_KEY: {exc}") from exc
        if msg.key_id != key_id_of(key):
            raise InvalidMessage("PUBLIC_KEY: key_id does not match the key")
        self.public_key = key
        self.stage = Stage.AWAITING_SETUP

    def _start(self, config: VerticalLRConfig) -> None:
        assert self.public_key is not None
        self.config = config
        self.pool = pf.ObfuscatorPool(self.public_key, config.obfuscators)
        self._xq = pf.quantize(self.x, config.feature_frac_bits)
        self._batches = batches_for(config, self.n_rows, 0)

    @abstractmethod
    def obfuscators_per_epoch(self) -> int:
        """Obfuscators this party uses per epoch (what :meth:`prefill_obfuscators` computes ahead)."""

    def obfuscators_missing(self, epochs: int = 1) -> int:
        """How many obfuscators :meth:`prefill_obfuscators` would compute for ``epochs`` epochs."""
        if self.pool is None:
            raise ProtocolStateError("obfuscators: set up the session first")
        return max(0, self.obfuscators_per_epoch() * epochs - len(self.pool))

    def prefill_obfuscators(self, epochs: int = 1, workers: int = 1) -> int:
        """Compute the obfuscators for ``epochs`` epochs ahead of training (in ``workers`` processes, or on
        this party's executor if it has one)."""
        count = self.obfuscators_missing(epochs)
        assert self.pool is not None
        self.pool.fill(count, workers, executor=self.executor)
        return count

    def _masked(self, values: list[mpz]) -> list[mpz]:
        """Add a fresh uniform mask to each encrypted value and re-randomise; remember the masks."""
        assert self.public_key is not None
        assert self.pool is not None
        self._masks = pf.random_masks(self.public_key, len(values))
        return pf.rerandomise(self.public_key, pf.add_plain(self.public_key, values, self._masks), self.pool)

    def _unmask(self, msg: Message) -> list[mpz]:
        assert self.public_key is not None
        if len(msg.values) != len(self._masks):
            raise InvalidMessage(f"DECRYPTED: {len(msg.values)} values, expected {len(self._masks)}")
        n = self.public_key.n
        out = [(v - m) % n for v, m in zip(msg.values, self._masks, strict=True)]
        self._masks = []
        return out

    def _advance(self) -> bool:
        """Next batch; True if the epoch is over."""
        self.batch += 1
        return self.batch >= len(self._batches)

    def _next_epoch(self) -> None:
        assert self.config is not None
        self.epoch += 1
        self.batch = 0
        self._batches = batches_for(self.config, self.n_rows, self.epoch)
