"""What runs inside the enclave: its keys, the data provisioned to it, and the message handler.

The host reaches the enclave only through :meth:`EnclaveCore.handle`, one request frame in, one reply frame
out, both canonical JSON (never pickle: the host is not trusted, and unpickling its bytes would run its code
in here). The operations::

    hello                                    -> measurement, isv_svn, debug, enclave_key
    quote     nonce                          -> quote (signed by the platform)
    provision handle, job, slot, quote_hash, ciphertext  -> receipt (slot, bytes, sha256, public output policy)
    supply    handle, slot, data             -> receipt (the host's own plaintext input)
    step      handle, params, message        -> message (interactive jobs)
    run       handle, params, output         -> release (the job's outputs under its output policy)
    drop      handle                         -> forget a handle's inputs
    seal      label, data                    -> blob;    unseal label, blob -> data
    he_*                                     -> sealed datasets' CKKS keys (:mod:`enclave_sim.sealed`); a
                                                bank's score request is provisioned under a quote, as above

Bytes travel base64-encoded. A failure replies ``{"ok": false, "code", "message"}`` and changes nothing but
the failing handle (which is dropped).

What leaves: quotes, receipts (sizes and digests), sealed blobs (only this build on this platform opens them)
and releases (:func:`pps_wire.provision.pack_release`) holding only the outputs the owner's output policy
names — never the provisioned plaintext, never the enclave's private key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enclave_sim.crypto import seal, unseal
from enclave_sim.errors import EnclaveError, EnclaveProtocolError, OutputPolicyViolation, ProvisioningError
from enclave_sim.jobs import JOBS, EnclaveJob
from enclave_sim.sealed import SealedHE
from pps_wire.provision import OutputPolicy, Provisioned, canonical, decrypt_provisioned, pack_release
from pps_wire.quote import NONCE_BYTES

MAX_HANDLES = 32
"""Jobs with data provisioned but not yet run; the oldest is dropped beyond this."""
MAX_QUOTES = 4096
"""Quote hashes remembered for provisioning; a party provisions right after verifying its quote."""
MAX_HANDLE = 64
SIGNING_INFO = b"PPS-ENCLAVE-SIGNING-v1"
"""HKDF info of the enclave's signing key (derived from the seal key: the same build on the same platform
signs with the same key across restarts, and no other build can)."""


def signed_bytes(job: str, output: str, value: Any) -> bytes:
    """What the enclave signs for a signed output: ``"PPS-ENCLAVE-SIGNED-v1" 0x00 job 0x00 output 0x00
    canonical JSON of the value without its ``signature`` key``."""
    body = {k: v for k, v in value.items() if k != "signature"} if isinstance(value, dict) else value
    return b"\x00".join([b"PPS-ENCLAVE-SIGNED-v1", job.encode(), output.encode(), canonical(body)])


class Platform(Protocol):
    """What the (simulated) hardware gives the enclave's code: its identity, its seal key, quoting."""

    measurement: bytes
    isv_svn: int
    debug: bool
    seal_key: bytes

    def quote(self, enclave_key: bytes, nonce: bytes) -> bytes: ...


@dataclass
class _Handle:
    job: type[EnclaveJob]
    party: dict[str, bytes] = field(default_factory=dict)
    host: dict[str, bytes] = field(default_factory=dict)
    output: OutputPolicy | None = None
    quote_hash: bytes | None = None
    instance: EnclaveJob | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bytes(msg: dict[str, Any], name: str) -> bytes:
    value = msg.get(name)
    if not isinstance(value, str):
        raise EnclaveProtocolError(f"{name} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise EnclaveProtocolError(f"{name} must be base64") from None


def _text(msg: dict[str, Any], name: str, limit: int = MAX_HANDLE) -> str:
    value = msg.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise EnclaveProtocolError(f"{name} must be a string of 1-{limit} characters")
    return value


def _params(msg: dict[str, Any]) -> dict[str, Any]:
    value = msg.get("params", {})
    if not isinstance(value, dict):
        raise EnclaveProtocolError("params must be an object")
    return value


def _json_safe(value: Any, where: str) -> None:
    """Outputs must be plain JSON (no NaN or infinity): what leaves must be canonical."""
    if isinstance(value, float) and not math.isfinite(value):
        raise OutputPolicyViolation(f"{where} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _json_safe(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _json_safe(v, f"{where}[{i}]")


class EnclaveCore:
    def __init__(self, platform: Platform, jobs: dict[str, type[EnclaveJob]] | None = None) -> None:
        self.platform = platform
        self.jobs = dict(JOBS if jobs is None else jobs)
        self._key = X25519PrivateKey.generate()
        self.enclave_key = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._signing = Ed25519PrivateKey.from_private_bytes(
            HKDF(algorithm=hashes.SHA256(), length=32, salt=platform.measurement, info=SIGNING_INFO).derive(
                platform.seal_key
            )
        )
        self.signing_key = self._signing.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._quotes: OrderedDict[bytes, None] = OrderedDict()
        self._handles: OrderedDict[str, _Handle] = OrderedDict()
        self._ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "hello": self._hello,
            "quote": self._quote,
            "provision": self._provision,
            "supply": self._supply,
            "step": self._step,
            "run": self._run,
            "drop": self._drop,
            "seal": self._seal,
            "unseal": self._unseal,
        }
        # sealed datasets' CKKS keys; a bank's score request arrives provisioned like a job's rows
        self._ops.update(SealedHE(platform, self._issue_quote, self._open_once).ops())

    # --- the one entry point ---------------------------------------------------------------------------------

    def handle(self, frame: bytes) -> bytes:
        handle: str | None = None
        try:
            try:
                msg = json.loads(frame)
            except ValueError:
                raise EnclaveProtocolError("a request must be a JSON object") from None
            if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
                raise EnclaveProtocolError("a request must be a JSON object with an op")
            op = self._ops.get(msg["op"])
            if op is None:
                raise EnclaveProtocolError(f"unknown op {msg['op']!r}")
            handle = msg.get("handle") if isinstance(msg.get("handle"), str) else None
            reply = {"ok": True, **op(msg)}
        except EnclaveError as exc:
            if handle is not None and msg.get("op") not in ("provision", "supply"):
                self._handles.pop(handle, None)  # a failed run or step forgets its data
            reply = {"ok": False, "code": exc.code, "message": exc.message}
        except Exception as exc:  # a bug in a job: report it as a job failure, keep serving
            if handle is not None:
                self._handles.pop(handle, None)
            reply = {
                "ok": False,
                "code": "enclave_job_failed",
                "message": f"the job failed: {type(exc).__name__}",
            }
        return canonical(reply)

    # --- operations ------------------------------------------------------------------------------------------

    def _hello(self, msg: dict[str, Any]) -> dict[str, Any]:
        p = self.platform
        return {
            "measurement": p.measurement.hex(),
            "isv_svn": p.isv_svn,
            "debug": p.debug,
            "enclave_key": self.enclave_key.hex(),
            "signing_key": self.signing_key.hex(),
            "jobs": sorted(self.jobs),
        }

    def _issue_quote(self, nonce: bytes) -> bytes:
        """A quote over ``nonce`` (the report data), remembered so that parties can provision to it."""
        quote = self.platform.quote(self.enclave_key, nonce)
        self._quotes[hashlib.sha256(quote).digest()] = None
        while len(self._quotes) > MAX_QUOTES:
            self._quotes.popitem(last=False)
        return quote

    def _quote(self, msg: dict[str, Any]) -> dict[str, Any]:
        nonce = _bytes(msg, "nonce")
        if len(nonce) != NONCE_BYTES:
            raise EnclaveProtocolError(f"a nonce is {NONCE_BYTES} bytes")
        return {"quote": _b64(self._issue_quote(nonce))}

    def _open_once(self, quote_hash: bytes, ciphertext: bytes, job: str, slot: str) -> Provisioned:
        """Open a party's ciphertext provisioned for ``job`` and ``slot`` under a quote this instance issued;
        the quote is then forgotten, so the same provisioning cannot be used twice."""
        if quote_hash not in self._quotes:
            raise ProvisioningError(
                "the quote this data was encrypted for was not issued by this enclave instance, or was used "
                "already (it restarted, or the quote is too old): fetch a new quote and provision again"
            )
        got = decrypt_provisioned(ciphertext, self._key, quote_hash=quote_hash, slot=slot)
        if got.job != job:
            raise ProvisioningError(f"the data was provisioned for job {got.job!r}, not {job!r}")
        self._quotes.pop(quote_hash, None)
        return got

    def _slot_for(self, msg: dict[str, Any], *, party: bool) -> tuple[str, _Handle, str]:
        handle = _text(msg, "handle")
        kind = _text(msg, "job")
        job = self.jobs.get(kind)
        if job is None:
            raise EnclaveProtocolError(f"this enclave runs no job {kind!r}")
        slot = _text(msg, "slot")
        slots = job.party_slots if party else job.host_slots
        if slot not in slots:
            who = "a party" if party else "the host"
            raise EnclaveProtocolError(f"job {kind} has no slot {slot!r} for {who} (it has {list(slots)})")
        h = self._handles.get(handle)
        if h is None:
            h = self._handles[handle] = _Handle(job)
            while len(self._handles) > MAX_HANDLES:
                self._handles.popitem(last=False)
        elif h.job is not job:
            raise EnclaveProtocolError(f"handle {handle} belongs to job {h.job.kind}")
        if h.instance is not None:
            raise EnclaveProtocolError(f"handle {handle} has started; it takes no more inputs")
        return handle, h, slot

    def _provision(self, msg: dict[str, Any]) -> dict[str, Any]:
        handle, h, slot = self._slot_for(msg, party=True)
        try:
            quote_hash = bytes.fromhex(_text(msg, "quote_hash"))
        except ValueError:
            raise EnclaveProtocolError("quote_hash must be hex") from None
        if quote_hash not in self._quotes:
            raise ProvisioningError(
                "the quote this data was encrypted for was not issued by this enclave instance "
                "(it restarted, or the quote is too old): fetch a new quote and provision again"
            )
        got = decrypt_provisioned(_bytes(msg, "ciphertext"), self._key, quote_hash=quote_hash, slot=slot)
        if got.job != h.job.kind:
            raise ProvisioningError(f"the data was provisioned for job {got.job!r}, not {h.job.kind!r}")
        if slot == h.job.owner_slot:
            policy = got.output
            if policy is None:
                raise ProvisioningError(
                    f"slot {slot!r} owns the job: its header must carry the output policy"
                )
            unknown = sorted(set(policy.release) - h.job.outputs)
            if unknown:
                raise ProvisioningError(f"job {h.job.kind} has no output(s) {', '.join(unknown)}")
            if set(policy.release) - h.job.plain_outputs and policy.recipient_key is None:
                raise ProvisioningError(
                    "outputs other than plain ones need a recipient key to be encrypted to"
                )
            h.output, h.quote_hash = policy, quote_hash
        elif got.output is not None:
            raise ProvisioningError(f"only slot {h.job.owner_slot!r} states the output policy")
        h.party[slot] = got.body
        return {
            "handle": handle,
            "slot": slot,
            "bytes": len(got.body),
            "sha256": hashlib.sha256(got.body).hexdigest(),
            "output": got.output.public() if got.output is not None else None,
        }

    def _supply(self, msg: dict[str, Any]) -> dict[str, Any]:
        handle, h, slot = self._slot_for(msg, party=False)
        data = _bytes(msg, "data")
        label = h.job.sealed_slots.get(slot)
        if label is not None:  # a JSON list of blobs this build sealed: opened here, never by the host
            try:
                blobs = json.loads(data)
            except ValueError:
                raise EnclaveProtocolError(f"slot {slot!r} takes a JSON list of sealed blobs") from None
            if not isinstance(blobs, list) or not all(isinstance(b, str) for b in blobs):
                raise EnclaveProtocolError(f"slot {slot!r} takes a JSON list of sealed blobs")
            p = self.platform
            opened = [
                json.loads(unseal(p.seal_key, p.measurement, label, _bytes({"b": b}, "b"))) for b in blobs
            ]
            data = canonical(opened)
        h.host[slot] = data
        return {
            "handle": handle,
            "slot": slot,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    def _started(self, msg: dict[str, Any]) -> tuple[str, _Handle, EnclaveJob]:
        handle = _text(msg, "handle")
        h = self._handles.get(handle)
        if h is None:
            raise EnclaveProtocolError(
                f"no inputs for handle {handle} (never provisioned, already run, dropped, or the enclave restarted)"
            )
        if h.instance is None:
            required = h.job.party_slots if h.job.required_party_slots is None else h.job.required_party_slots
            missing = [s for s in required if s not in h.party] + [
                s for s in h.job.host_slots if s not in h.host
            ]
            if missing:
                raise EnclaveProtocolError(f"job {h.job.kind} still needs input(s): {', '.join(missing)}")
            h.instance = h.job({**h.party, **h.host}, _params(msg))
        return handle, h, h.instance

    def _step(self, msg: dict[str, Any]) -> dict[str, Any]:
        _, _, job = self._started(msg)
        return {"message": _b64(job.step(_bytes(msg, "message")))}

    def _run(self, msg: dict[str, Any]) -> dict[str, Any]:
        handle, h, job = self._started(msg)
        policy = h.output
        assert policy is not None  # the owner slot was provisioned
        assert h.quote_hash is not None
        declared = msg.get("output")
        if declared != policy.public():
            raise OutputPolicyViolation(
                "the output policy the host declared is not the one the owner provisioned; nothing was run"
            )
        try:
            candidates = job.finish()
        finally:
            self._handles.pop(handle, None)  # the plaintext inputs are gone after this run, whatever happens
        extra = sorted(set(candidates) - h.job.outputs)
        if extra:
            raise OutputPolicyViolation(
                f"job {h.job.kind} produced undeclared output(s) {', '.join(extra)}; nothing was released"
            )
        released = {k: candidates[k] for k in sorted(policy.release) if k in candidates}
        _json_safe(released, "output")
        p = self.platform
        for name, label in h.job.sealed_outputs.items():  # only this build opens them again
            if name in released:
                released[name] = _b64(seal(p.seal_key, p.measurement, label, canonical(released[name])))
        for name in h.job.signed_outputs:
            value = released.get(name)
            if isinstance(value, dict):
                signature = self._signing.sign(signed_bytes(h.job.kind, name, value))
                released[name] = {**value, "signature": signature.hex()}
        plain = {k: v for k, v in released.items() if k in h.job.plain_outputs}
        secret = {k: v for k, v in released.items() if k not in h.job.plain_outputs}
        if secret and policy.recipient_key is None:
            raise OutputPolicyViolation("non-plain outputs leave only encrypted to the owner's key")
        release = pack_release(
            job=h.job.kind,
            measurement=self.platform.measurement,
            quote_hash=h.quote_hash,
            policy=policy,
            plain=plain,
            secret=secret or None,
        )
        return {"release": _b64(release), "plain": plain, "released": sorted(released)}

    def _drop(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"dropped": self._handles.pop(_text(msg, "handle"), None) is not None}

    def _seal(self, msg: dict[str, Any]) -> dict[str, Any]:
        label = _text(msg, "label", 255)
        p = self.platform
        return {"blob": _b64(seal(p.seal_key, p.measurement, label, _bytes(msg, "data")))}

    def _unseal(self, msg: dict[str, Any]) -> dict[str, Any]:
        label = _text(msg, "label", 255)
        p = self.platform
        return {"data": _b64(unseal(p.seal_key, p.measurement, label, _bytes(msg, "blob")))}
