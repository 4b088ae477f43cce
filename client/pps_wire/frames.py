"""The binary bodies of the API: PSI and scoring job results, and vertical-training exchanges.

* a PSI job's result (``application/vnd.pps.psi-result``)::

      "PPSR" | len(SETUP) u32 | SETUP | RESPONSE            (the two server messages of protocols.psi)

* a scoring job's result (``application/vnd.pps.score-result``)::

      "PPSS" | len(header) u32 | header (canonical JSON) | RESULT     (RESULT: a protocols.he_scoring frame)

  the header names the subjects scored, in the order of the scores, those not scored and why, and those with
  open objections on an input the model read;

* a vertical-training exchange, both ways (``application/vnd.pps.vlr-frames``)::

      "PPVB" | count u32 | (len u32 | frame)*               (at most MAX_FRAMES frames of protocols.vertical_lr)

Integers are big-endian. Each ``unpack_*`` refuses what is not its format with
:class:`~pps_wire.errors.InvalidInput`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from pps_wire.errors import InvalidInput

# --- PSI ------------------------------------------------------------------------------------------------------

PSI_RESULT_MAGIC = b"PPSR"
PSI_RESULT_MEDIA_TYPE = "application/vnd.pps.psi-result"
_PSI_HEAD = struct.Struct("!4sI")


def pack_psi_result(setup: bytes, response: bytes) -> bytes:
    """``"PPSR" | len(SETUP) u32 | SETUP | RESPONSE`` — the two server messages the client needs."""
    return _PSI_HEAD.pack(PSI_RESULT_MAGIC, len(setup)) + setup + response


def unpack_psi_result(data: bytes) -> tuple[bytes, bytes]:
    """``(SETUP, RESPONSE)`` of a PSI job's result."""
    if len(data) < _PSI_HEAD.size:
        raise InvalidInput("not a PSI result: too short")
    magic, n = _PSI_HEAD.unpack_from(data)
    if magic != PSI_RESULT_MAGIC or _PSI_HEAD.size + n > len(data):
        raise InvalidInput("not a PSI result")
    return data[_PSI_HEAD.size : _PSI_HEAD.size + n], data[_PSI_HEAD.size + n :]


# --- scoring --------------------------------------------------------------------------------------------------

SCORE_RESULT_MAGIC = b"PPSS"
SCORE_RESULT_MEDIA_TYPE = "application/vnd.pps.score-result"
_SCORE_HEAD = struct.Struct("!4sI")


def canonical_json(value: object) -> bytes:
    """Sorted, compact JSON, UTF-8 (the scoring result header)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pack_score_result(header: Mapping[str, Any], result: bytes) -> bytes:
    body = canonical_json(header)
    return _SCORE_HEAD.pack(SCORE_RESULT_MAGIC, len(body)) + body + result


def unpack_score_result(data: bytes) -> tuple[dict[str, Any], bytes]:
    """``(header, RESULT bytes)`` of a scoring job's result."""
    if len(data) < _SCORE_HEAD.size:
        raise InvalidInput("not a scoring result: too short")
    magic, n = _SCORE_HEAD.unpack_from(data)
    if magic != SCORE_RESULT_MAGIC or _SCORE_HEAD.size + n > len(data):
        raise InvalidInput("not a scoring result")
    try:
        header = json.loads(data[_SCORE_HEAD.size : _SCORE_HEAD.size + n])
    except ValueError:
        raise InvalidInput("the scoring result header is not JSON") from None
    if not isinstance(header, dict):
        raise InvalidInput("the scoring result header is not a JSON object")
    return header, data[_SCORE_HEAD.size + n :]


# --- vertical training ----------------------------------------------------------------------------------------

VLR_FRAMES_MAGIC = b"PPVB"
VLR_FRAMES_MEDIA_TYPE = "application/vnd.pps.vlr-frames"
MAX_FRAMES = 4
_COUNT = struct.Struct(">4sI")
_LEN = struct.Struct(">I")


def pack_frames(frames: Sequence[bytes]) -> bytes:
    """``"PPVB" | count u32 | (len u32 | frame)*``: the body of an exchange, both ways."""
    return _COUNT.pack(VLR_FRAMES_MAGIC, len(frames)) + b"".join(_LEN.pack(len(f)) + f for f in frames)


def unpack_frames(data: bytes) -> list[bytes]:
    if len(data) < _COUNT.size:
        raise InvalidInput("not a frame batch: too short")
    magic, count = _COUNT.unpack_from(data)
    if magic != VLR_FRAMES_MAGIC or count > MAX_FRAMES:
        raise InvalidInput(f"not a frame batch (magic PPVB, at most {MAX_FRAMES} frames)")
    out, at = [], _COUNT.size
    for _ in range(count):
        if at + _LEN.size > len(data):
            raise InvalidInput("frame batch truncated")
        (n,) = _LEN.unpack_from(data, at)
        at += _LEN.size
        if at + n > len(data):
            raise InvalidInput("frame batch truncated")
        out.append(data[at : at + n])
        at += n
    if at != len(data):
        raise InvalidInput("trailing bytes after the frames")
    return out
