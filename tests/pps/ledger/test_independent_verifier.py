"""docs/audit.md is enough to verify the ledger: an auditor's verifier written only from that document.

The first half of this module is the verifier. It uses ``hashlib``, ``base64``, ``json`` and an Ed25519 public
key from ``cryptography``, and nothing from the ``pps`` package. The second half uses PPS only to *produce*
what an auditor receives: a ledger, two ``pps audit export`` files (through the real CLI) and a consistency
proof. The verifier must accept all of it and must reject a tampered entry, a tampered proof and a
checkpoint signed with another key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# =====================================================================================================
# The independent verifier (docs/audit.md §2 entries, §3 tree, §4 inclusion, §5 consistency,
# §6 checkpoints and keys, §8 export files)
# =====================================================================================================


class Rejected(Exception):
    """The verifier refuses what it was given."""


SIGNATURE_PREFIX = "\u2014 "  # U+2014 EM DASH, then one space (§6.2)
ENTRY_FIELDS = frozenset(
    {
        "v",
        "index",
        "time",
        "actor",
        "action",
        "objects",
        "subjects",
        "purpose",
        "consent_ids",
        "released",
        "request_id",
        "detail",
    }
)
EXPORT_FORMAT = "pps-audit-export/1"


def sha256(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def b64d(text: str) -> bytes:
    """Standard base64 with padding (§1)."""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise Rejected(f"not base64: {text!r}") from exc


def hash32(value: bytes, what: str) -> bytes:
    if len(value) != 32:
        raise Rejected(f"{what} must be 32 bytes, got {len(value)}")
    return value


def leaf_hash(entry: bytes) -> bytes:
    return sha256(b"\x00", entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01", left, right)


# --- §6.3 verifier key, §6.4 signed note, §6.1 checkpoint body ---------------------------------------


@dataclass(frozen=True)
class VerifierKey:
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey


def note_key_id(name: str, public_raw: bytes) -> bytes:
    return sha256(name.encode(), b"\x0a", b"\x01", public_raw)[:4]


def parse_verifier_key(text: str) -> VerifierKey:
    parts = text.split("+", 2)  # only the first two '+': the base64 may contain '+'
    if len(parts) != 3:
        raise Rejected("a verifier key is <name>+<key id hex>+<base64>")
    name, hex_id, blob = parts
    if not name or any(c.isspace() for c in name):
        raise Rejected("bad key name")
    raw = b64d(blob)
    if len(raw) != 33 or raw[0] != 0x01:
        raise Rejected("not an Ed25519 (0x01) verifier key")
    if len(hex_id) != 8 or hex_id != note_key_id(name, raw[1:]).hex():
        raise Rejected("the key id does not match the name and the public key")
    return VerifierKey(name, bytes.fromhex(hex_id), Ed25519PublicKey.from_public_bytes(raw[1:]))


def open_note(note: str, key: VerifierKey) -> str:
    """Return the signed body if the note carries a valid signature by ``key``."""
    if len(note.encode()) > 1_000_000 or not note.endswith("\n"):
        raise Rejected("a note is at most 1 MB and ends with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise Rejected("no empty line before the signatures")
    body, block = note[: cut + 1], note[cut + 2 :]
    if not block:
        raise Rejected("no signature lines")
    matched = False
    for line in block[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise Rejected(f"malformed signature line {line!r}")
        name, space, blob = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not space or " " in blob:
            raise Rejected(f"malformed signature line {line!r}")
        sig = b64d(blob)
        if name != key.name or sig[:4] != key.key_id:
            continue  # another signer (a witness, say): not ours to judge
        if len(sig) != 68:
            raise Rejected("an Ed25519 signature line carries 4 + 64 bytes")
        try:
            key.public_key.verify(sig[4:], body.encode())
        except InvalidSignature:
            raise Rejected("the signature does not verify") from None
        matched = True
    if not matched:
        raise Rejected(f"no signature by {key.name}+{key.key_id.hex()}")
    return body


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def verify_checkpoint(note: str, key: VerifierKey) -> Checkpoint:
    lines = open_note(note, key).split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise Rejected("a checkpoint body has three newline-terminated lines")
    origin, size_text, root_text = lines[:3]  # further lines would be extensions: ignored
    if origin != key.name:
        raise Rejected(f"checkpoint of log {origin!r}, expected {key.name!r}")
    leading_zero = len(size_text) > 1 and size_text[0] == "0"
    if not size_text or any(c not in "0123456789" for c in size_text) or leading_zero:
        raise Rejected(f"tree size {size_text!r} is not a decimal number")
    size, root = int(size_text), hash32(b64d(root_text), "root")
    if size == 0 and root != sha256(b""):
        raise Rejected("a checkpoint of size 0 must carry the empty tree's root")
    return Checkpoint(origin, size, root)


# --- §4 inclusion, §5 consistency (RFC 9162 §2.1.3.2 and §2.1.4.2) ------------------------------------


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    if not 0 <= index < size:
        raise Rejected("index outside the tree")
    fn, sn, r = index, size - 1, hash32(leaf, "leaf")
    for p in proof:
        hash32(p, "proof hash")
        if sn == 0:
            raise Rejected("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Rejected("inclusion proof too short")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> None:
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise Rejected(f"inclusion proof of {index} does not lead to the root of size {size}")


def verify_consistency(first: int, second: int, root1: bytes, root2: bytes, proof: list[bytes]) -> None:
    if first == 0 or first > second:
        raise Rejected("a consistency proof needs 1 <= first <= second")
    if first == second:
        if proof or root1 != root2:
            raise Rejected("equal sizes need an empty proof and equal roots")
        return
    if not proof:
        raise Rejected("empty consistency proof")
    path = [hash32(p, "proof hash") for p in proof]
    if first & (first - 1) == 0:
        path.insert(0, root1)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise Rejected("consistency proof too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != root1 or sr != root2:
        raise Rejected(f"trees of size {first} and {second} are not consistent")


# --- §2 entries -------------------------------------------------------------------------------------


def _no_floats(value: Any) -> None:
    if isinstance(value, float):
        raise Rejected("floats are not allowed in entries")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**53) < value < 2**53:
        raise Rejected("integer outside ±2**53")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        _no_floats(child)


def check_entry(data: bytes, index: int) -> dict[str, Any]:
    """The entry's bytes are canonical JSON with the twelve version-1 fields, at ``index`` (§2.5)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise Rejected("entry is not UTF-8 JSON") from exc
    if not isinstance(doc, dict) or set(doc) != ENTRY_FIELDS:
        raise Rejected("an entry has exactly the twelve fields of §2.2")
    _no_floats(doc)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if canonical != data:
        raise Rejected("entry bytes are not canonical JSON")
    if doc["v"] != 1 or doc["index"] != index or isinstance(doc["index"], bool):
        raise Rejected(f"entry says v={doc['v']}, index={doc['index']}; expected v=1, index={index}")
    t = doc["time"]
    if not (isinstance(t, str) and len(t) == 27 and t[10] == "T" and t[19] == "." and t[-1] == "Z"):
        raise Rejected(f"time {t!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    if set(doc["actor"]) != {"org", "role", "via", "token"} or doc["actor"]["via"] not in (
        "api",
        "web",
        "cli",
        "job",
    ):
        raise Rejected("malformed actor")
    for name in ("subjects", "consent_ids"):
        if doc[name] != sorted(set(doc[name])):
            raise Rejected(f"{name} must be sorted and unique")
    return doc


# --- §8 export files --------------------------------------------------------------------------------


def verify_export(text: str, pinned_key: str) -> tuple[Checkpoint, dict[int, dict[str, Any]]]:
    """Verify a whole export file; return its checkpoint and the entries by index."""
    lines = text.split("\n")
    if lines[-1] != "":
        raise Rejected("every line ends with a newline")
    header = json.loads(lines[0])
    if header.get("format") != EXPORT_FORMAT:
        raise Rejected("not a pps-audit-export/1 file")
    if header["verifier_key"] != pinned_key:
        raise Rejected("the file names another verifier key than the pinned one")
    key = parse_verifier_key(pinned_key)
    cp = verify_checkpoint(header["checkpoint"], key)
    if header["origin"] != cp.origin:
        raise Rejected("header origin differs from the checkpoint's")
    entries: dict[int, dict[str, Any]] = {}
    last = -1
    for line in lines[1:-1]:
        item = json.loads(line)
        index = item["index"]
        if not isinstance(index, int) or index <= last:
            raise Rejected("indices must strictly increase")
        if item["tree_size"] != cp.size:
            raise Rejected("a proof for another tree size than the checkpoint's")
        data = b64d(item["entry_b64"])
        leaf = leaf_hash(data)
        if b64d(item["leaf_hash"]) != leaf:
            raise Rejected(f"entry {index}: bytes do not hash to the given leaf hash")
        entries[index] = check_entry(data, index)
        verify_inclusion(index, cp.size, leaf, [b64d(p) for p in item["inclusion_proof"]], cp.root)
        last = index
    return cp, entries


# =====================================================================================================
# Producing the data with PPS (as the operator would), then checking it with the verifier above
# =====================================================================================================


SUBJECT_NAME = "苏州微件有限公司 (Suzhou Widgets Co)"  # non-ASCII: entries are UTF-8, not \u-escaped


@dataclass(frozen=True)
class Produced:
    pinned_key: str  # what the auditor pinned out of band
    first_export: str
    second_export: str
    first_size: int
    second_size: int
    consistency_proof: list[str]  # as GET /v1/audit/consistency returns it (base64)
    subject_uscc: str
    revoked_token_id: str


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> Produced:
    from typer.testing import CliRunner

    from pps.cli import app
    from pps.infra.settings import Settings, get_settings
    from pps.infra.storage.tables import Role
    from pps.ledger.entry import OPERATOR
    from pps.runtime import Runtime
    from tests.helpers import first_token, uscc_for

    tmp = tmp_path_factory.mktemp("ledger")
    db_url = f"sqlite:///{(tmp / 'pps.db').as_posix()}"
    uscc = uscc_for(7)
    runner = CliRunner()

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PPS_DATA_DIR", str(tmp))
        mp.setenv("PPS_DATABASE_URL", db_url)  # beats any .env file in the working directory
        mp.setenv("PPS_KEY_DIR", str(tmp / "keys"))
        mp.delenv("PPS_LEDGER_ORIGIN", raising=False)
        get_settings.cache_clear()
        rt = Runtime.build(Settings(data_dir=tmp, database_url=db_url, checkpoint_interval_seconds=0))
        try:

            def onboard(name: str, role: Role, org_uscc: str | None = None) -> str:
                with rt.db.transaction() as session:
                    org = rt.identity.create_org(session, name=name, role=role, uscc=org_uscc, actor=OPERATOR)
                    issued = first_token(rt, session, org)
                return issued.token.id

            def export(name: str) -> tuple[str, int]:
                with rt.db.transaction(write=False) as session:
                    size = rt.ledger.size(session)  # the export checkpoints exactly this size
                out = tmp / name
                get_settings.cache_clear()
                result = runner.invoke(app, ["audit", "export", "--out", str(out)])
                get_settings.cache_clear()
                assert result.exit_code == 0, result.output
                return out.read_text(encoding="utf-8"), size

            onboard("Provincial audit office", Role.auditor)
            onboard("Bank of Suzhou", Role.bank)
            subject_token = onboard(SUBJECT_NAME, Role.subject, uscc)
            with rt.db.transaction() as session:
                rt.identity.revoke_token(
                    session, rt.identity.get_token(session, subject_token), actor=OPERATOR
                )
            first_export, first_size = export("first.jsonl")

            onboard("Data provider: tax bureau", Role.data_provider)
            onboard("Bank of Wuxi", Role.bank)
            second_export, second_size = export("second.jsonl")

            with rt.db.transaction(write=False) as session:  # what GET /v1/audit/consistency serves
                proof = rt.ledger.consistency_proof(session, first_size, second_size)
            pinned = rt.ledger.signer.verifier_key
        finally:
            rt.close()
            get_settings.cache_clear()

    return Produced(
        pinned_key=pinned,
        first_export=first_export,
        second_export=second_export,
        first_size=first_size,
        second_size=second_size,
        consistency_proof=[base64.b64encode(p).decode() for p in proof],
        subject_uscc=uscc,
        revoked_token_id=subject_token,
    )


def _lines(export: str) -> list[str]:
    return export.split("\n")


def _join(lines: list[str]) -> str:
    return "\n".join(lines)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ONBOARDING = ["org.create", "org.enrolment_code", "org.enrol", "token.issue"]
"""The entries of one organisation's onboarding (issue 24): the operator creates it and issues a one-time
enrolment code; the organisation redeems it for its own first token."""


# --- acceptance ---------------------------------------------------------------------------------------


def test_every_exported_entry_verifies(produced: Produced) -> None:
    cp, entries = verify_export(produced.first_export, produced.pinned_key)

    # 3 organisations x (org.create, the operator's enrolment code, its redemption, the first token) + 1 revoke
    assert cp.size == produced.first_size == 13
    assert sorted(entries) == list(range(cp.size))  # an unfiltered export holds every index below N
    actions = [entries[i]["action"] for i in range(cp.size)]
    assert actions == ONBOARDING * 3 + ["token.revoke"]
    assert all(
        e["actor"] == {"org": None, "role": "operator", "via": "cli", "token": None}
        for e in entries.values()
        if e["action"] in ("org.create", "org.enrolment_code", "token.revoke")
    )
    subject_create = entries[2 * len(ONBOARDING)]
    assert subject_create["subjects"] == [produced.subject_uscc]
    assert subject_create["detail"] == {"name": SUBJECT_NAME, "role": "subject"}
    revoke = entries[cp.size - 1]
    assert {"kind": "token", "id": produced.revoked_token_id} in revoke["objects"]


def test_later_checkpoint_is_consistent_and_records_the_first_export(produced: Produced) -> None:
    cp1, entries1 = verify_export(produced.first_export, produced.pinned_key)
    cp2, entries2 = verify_export(produced.second_export, produced.pinned_key)
    proof = [b64d(p) for p in produced.consistency_proof]

    assert (cp1.size, cp2.size) == (produced.first_size, produced.second_size)
    verify_consistency(cp1.size, cp2.size, cp1.root, cp2.root, proof)
    # append-only as seen in the files, too: the old entries are still there, byte for byte
    old_lines = {
        json.loads(x)["index"]: json.loads(x)["entry_b64"] for x in _lines(produced.first_export)[1:-1]
    }
    new_lines = {
        json.loads(x)["index"]: json.loads(x)["entry_b64"] for x in _lines(produced.second_export)[1:-1]
    }
    assert all(new_lines[i] == old_lines[i] for i in old_lines)
    # the first export left its own entry right after the checkpoint it exported (§8)
    record = entries2[cp1.size]
    assert record["action"] == "audit.export"
    assert record["detail"]["entries"] == len(entries1)
    assert record["detail"]["tree_size"] == cp1.size

    with pytest.raises(Rejected):
        verify_consistency(cp1.size, cp2.size, cp2.root, cp1.root, proof)
    with pytest.raises(Rejected):
        verify_consistency(cp1.size, cp2.size, cp1.root, cp2.root, [*proof[:-1], bytes(32)])
    with pytest.raises(Rejected):
        verify_consistency(cp1.size - 1, cp2.size, cp1.root, cp2.root, proof)


# --- rejection -----------------------------------------------------------------------------------------


def test_rejects_a_tampered_entry(produced: Produced) -> None:
    lines = _lines(produced.first_export)
    target = 2 * len(ONBOARDING) + 1  # line 1 + i is entry i: the subject's org.create
    item = json.loads(lines[target])
    original = b64d(item["entry_b64"])
    forged = original.replace(b"Widgets", b"Gadgets")
    assert forged != original

    def with_item(**changes: Any) -> str:
        copy = list(lines)
        copy[target] = json.dumps({**item, **changes})
        return _join(copy)

    # edited bytes, old leaf hash: the bytes no longer hash to it
    with pytest.raises(Rejected, match="leaf hash"):
        verify_export(with_item(entry_b64=_b64(forged)), produced.pinned_key)
    # edited bytes with a recomputed leaf hash: the proof no longer reaches the signed root
    with pytest.raises(Rejected, match="inclusion proof"):
        verify_export(
            with_item(entry_b64=_b64(forged), leaf_hash=_b64(leaf_hash(forged))), produced.pinned_key
        )
    # the same document, serialised differently: not canonical
    loose = json.dumps(json.loads(original), indent=1).encode()
    with pytest.raises(Rejected, match="canonical"):
        check_entry(loose, 4)
    with pytest.raises(Rejected):
        verify_export(with_item(entry_b64=_b64(loose), leaf_hash=_b64(leaf_hash(loose))), produced.pinned_key)
    # a genuine entry presented at another index
    with pytest.raises(Rejected, match="expected v=1, index=5"):
        check_entry(original, 5)
    cp, _ = verify_export(produced.first_export, produced.pinned_key)
    proof = [b64d(p) for p in item["inclusion_proof"]]
    with pytest.raises(Rejected, match="does not lead"):
        verify_inclusion(5, cp.size, leaf_hash(original), proof, cp.root)
    # a float smuggled into the detail, canonically serialised
    doc = json.loads(original)
    doc["detail"]["score"] = 0.5
    with pytest.raises(Rejected, match="float"):
        check_entry(json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(), 4)


def test_rejects_a_tampered_proof(produced: Produced) -> None:
    lines = _lines(produced.first_export)
    target = 3
    item = json.loads(lines[target])
    proof = [b64d(p) for p in item["inclusion_proof"]]
    assert len(proof) >= 2

    flipped = bytearray(proof[1])
    flipped[0] ^= 0x01
    variants = {
        "a flipped bit": [proof[0], bytes(flipped), *proof[2:]],
        "a missing hash": proof[:-1],
        "an extra hash": [*proof, proof[0]],
        "swapped hashes": [proof[1], proof[0], *proof[2:]],
        "a short hash": [proof[0][:31], *proof[1:]],
    }
    accepted = []
    for name, bad in variants.items():
        copy = list(lines)
        copy[target] = json.dumps({**item, "inclusion_proof": [_b64(p) for p in bad]})
        try:
            verify_export(_join(copy), produced.pinned_key)
        except Rejected:
            continue
        accepted.append(name)
    assert not accepted, f"accepted proofs with {accepted}"

    # the genuine proof claimed for another tree size
    copy = list(lines)
    copy[target] = json.dumps({**item, "tree_size": item["tree_size"] + 1})
    with pytest.raises(Rejected, match="tree size"):
        verify_export(_join(copy), produced.pinned_key)
    # the genuine proof claimed for a neighbouring index
    cp, _ = verify_export(produced.first_export, produced.pinned_key)
    with pytest.raises(Rejected, match="does not lead"):
        verify_inclusion(item["index"] + 1, cp.size, b64d(item["leaf_hash"]), proof, cp.root)


def _sign_note(body: str, name: str, key: Ed25519PrivateKey, key_id: bytes) -> str:
    return f"{body}\n{SIGNATURE_PREFIX}{name} {_b64(key_id + key.sign(body.encode()))}\n"


def _verifier_key_string(name: str, key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    blob = _b64(bytes([0x01]) + raw)
    return f"{name}+{note_key_id(name, raw).hex()}+{blob}"


def test_rejects_a_checkpoint_signed_with_another_key(produced: Produced) -> None:
    pinned = parse_verifier_key(produced.pinned_key)
    header = json.loads(_lines(produced.first_export)[0])
    genuine = header["checkpoint"]
    body = open_note(genuine, pinned)
    assert verify_checkpoint(genuine, pinned).size == produced.first_size

    other = Ed25519PrivateKey.generate()
    other_vkey = _verifier_key_string(pinned.name, other)
    other_id = parse_verifier_key(other_vkey).key_id

    # the same body signed by another key under the log's name: no signature by the pinned key
    forged = _sign_note(body, pinned.name, other, other_id)
    with pytest.raises(Rejected, match="no signature by"):
        verify_checkpoint(forged, pinned)
    # another key's signature passed off under the pinned key id
    with pytest.raises(Rejected, match="does not verify"):
        verify_checkpoint(_sign_note(body, pinned.name, other, pinned.key_id), pinned)
    # a different tree size under the genuine signature line
    sig_line = genuine[len(body) + 1 :]
    grown = body.replace(f"\n{produced.first_size}\n", f"\n{produced.first_size + 1}\n")
    with pytest.raises(Rejected, match="does not verify"):
        verify_checkpoint(f"{grown}\n{sig_line}", pinned)

    # a whole export re-signed by another key is internally consistent...
    lines = _lines(produced.first_export)
    lines[0] = json.dumps({**header, "verifier_key": other_vkey, "checkpoint": forged}, ensure_ascii=False)
    cp, _ = verify_export(_join(lines), other_vkey)
    assert cp.size == produced.first_size
    # ...and only the pinned key exposes it, whichever key the header names
    with pytest.raises(Rejected, match="another verifier key"):
        verify_export(_join(lines), produced.pinned_key)
    lines[0] = json.dumps({**header, "checkpoint": forged}, ensure_ascii=False)
    with pytest.raises(Rejected, match="no signature by"):
        verify_export(_join(lines), produced.pinned_key)


def test_size_zero_checkpoint_must_carry_the_empty_root() -> None:
    """§6.1: the empty tree's root is SHA-256(""); a signed size-0 checkpoint with another root is refused."""
    key = Ed25519PrivateKey.generate()
    vkey = parse_verifier_key(_verifier_key_string("pps.local/ledger", key))
    empty = f"pps.local/ledger\n0\n{_b64(sha256(b''))}\n"
    assert verify_checkpoint(_sign_note(empty, vkey.name, key, vkey.key_id), vkey).size == 0
    other = f"pps.local/ledger\n0\n{_b64(sha256(b'x'))}\n"
    with pytest.raises(Rejected, match="empty tree"):
        verify_checkpoint(_sign_note(other, vkey.name, key, vkey.key_id), vkey)


# --- the verifier against external references (docs/audit.md §10) ------------------------------------

GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_go_sumdb_note_reference_vector() -> None:
    """The golang.org/x/mod/sumdb/note example: our verifier opens it, and PPS's signer reproduces it."""
    from pps_wire.checkpoint import NoteSigner

    key = parse_verifier_key(GO_VERIFIER_KEY)
    assert open_note(GO_NOTE, key) == GO_TEXT
    with pytest.raises(Rejected):
        open_note(GO_NOTE.replace("cryptography", "Cryptography"), key)

    seed = base64.b64decode(GO_SIGNER_KEY.split("+", 4)[4])
    assert seed[0] == 0x01
    signer = NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed[1:]))
    assert signer.verifier_key == GO_VERIFIER_KEY
    assert signer.sign(GO_TEXT) == GO_NOTE


VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "merkle"


def test_transparency_dev_proof_vectors() -> None:
    """Our RFC 9162 verifiers accept every wantErr=false vector and reject every wantErr=true one."""
    if not VECTORS.is_dir():
        pytest.fail(f"the transparency-dev vectors are not at {VECTORS} (vendored in tests/vectors)")

    def hashes(values: list[str] | None) -> list[bytes]:
        return [base64.b64decode(v) for v in values or []]

    def one(value: str | None) -> bytes:
        return base64.b64decode(value) if value else b""

    checked = 0
    for kind in ("inclusion", "consistency"):
        for path in sorted((VECTORS / kind).rglob("*.json")):
            case = json.loads(path.read_text())
            try:
                if kind == "inclusion":
                    verify_inclusion(
                        case["leafIdx"],
                        case["treeSize"],
                        one(case["leafHash"]),
                        hashes(case["proof"]),
                        one(case["root"]),
                    )
                else:
                    verify_consistency(
                        case["size1"],
                        case["size2"],
                        one(case["root1"]),
                        one(case["root2"]),
                        hashes(case["proof"]),
                    )
                accepted = True
            except Rejected:
                accepted = False
            assert accepted is not case["wantErr"], f"{path.relative_to(VECTORS)}: wantErr={case['wantErr']}"
            checked += 1
    assert checked > 100
