"""Evidence files a subject attaches to an objection: PDF, PNG or JPEG, checked before anything is stored.

:func:`check_evidence` decides the type from the file's own bytes (magic numbers), refuses a file whose
declared type differs, then walks the format's structure:

* **PNG**: the signature, then chunks with valid lengths, ASCII-letter types and CRC-32s; ``IHDR`` first, at
  least one ``IDAT``, and ``IEND`` as the very last bytes (nothing appended).
* **JPEG**: ``SOI``, marker segments with valid lengths, entropy-coded data after each ``SOS``, and ``EOI`` as
  the very last bytes.
* **PDF**: the ``%PDF-x.y`` header at byte 0 and ``%%EOF`` at the end (only whitespace after it); no active or
  hidden content — JavaScript, launch actions, embedded files, rich media, XFA forms, form submission, remote
  go-to actions — in the file or in any Flate-compressed stream (names are read with their ``#xx`` escapes
  decoded); no encryption (an encrypted PDF cannot be inspected).

In every type, bytes that a browser would run as markup (``<script``, ``<html``) are refused, so a polyglot
cannot be served back as a page. This is a gate, not a sanitiser: a well-formed file can still exploit a
viewer's bugs, which is why the evidence route serves files as attachments with ``nosniff`` and a sandboxing
content security policy (see ``docs/security.md``).
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Final

from pps.errors import EvidenceRejected, PayloadTooLarge

PDF: Final = "application/pdf"
PNG: Final = "image/png"
JPEG: Final = "image/jpeg"
MEDIA_TYPES: Final = (PDF, PNG, JPEG)

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
MAX_PNG_SIDE: Final = 100_000
MAX_INFLATED: Final = 32 << 20
"""Most bytes the Flate streams of one PDF may inflate to while it is inspected (a zip bomb stops here)."""

_MARKUP = re.compile(rb"<\s*(script|html)\b", re.IGNORECASE)
_PDF_HEADER = re.compile(rb"^%PDF-[12]\.\d")
_PDF_NAME = re.compile(rb"/([^\s/<>\[\]()\{\}%]+)")
_PDF_STREAM = re.compile(rb"(?<!end)stream\r?\n")
_ACTIVE_PDF_NAMES: Final = frozenset(
    {
        b"JavaScript",
        b"JS",
        b"Launch",
        b"EmbeddedFile",
        b"EmbeddedFiles",
        b"RichMedia",
        b"XFA",
        b"SubmitForm",
        b"ImportData",
        b"GoToR",
        b"GoToE",
        b"Encrypt",
    }
)


def sniff(data: bytes) -> str | None:
    """The media type the bytes say they are (by magic number), or None."""
    if data.startswith(PNG_SIGNATURE):
        return PNG
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"%PDF-"):
        return PDF
    return None


def check_evidence(data: bytes, declared: str, *, max_bytes: int) -> str:
    """Check an evidence file; return its media type or raise :class:`EvidenceRejected` saying why."""
    if declared not in MEDIA_TYPES:
        raise EvidenceRejected(f"evidence must be one of {', '.join(MEDIA_TYPES)}, not {declared!r}")
    if not data:
        raise EvidenceRejected("the evidence file is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"the evidence file has {len(data):,} bytes; at most {max_bytes:,} are accepted"
        )
    actual = sniff(data)
    if actual is None:
        raise EvidenceRejected(
            f"the file is not a PDF, PNG or JPEG (its first bytes match none); declared {declared}"
        )
    if actual != declared:
        raise EvidenceRejected(f"the file is declared {declared} but its bytes are {actual}")
    if actual == PNG:
        _check_png(data)
    elif actual == JPEG:
        _check_jpeg(data)
    else:
        _check_pdf(data)
    if _MARKUP.search(data):
        raise EvidenceRejected("the file holds markup a browser would run (<script or <html): refused")
    return actual


def _check_png(data: bytes) -> None:
    pos, first, idat, n = len(PNG_SIGNATURE), True, False, len(data)
    while pos < n:
        if pos + 12 > n:
            raise EvidenceRejected(f"PNG: truncated chunk at byte {pos}")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if length > 2**31 - 1 or end > n:
            raise EvidenceRejected(f"PNG: chunk at byte {pos} runs past the end of the file")
        if not ctype.isalpha() or not ctype.isascii():
            raise EvidenceRejected(f"PNG: invalid chunk type at byte {pos}")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise EvidenceRejected(f"PNG: the {ctype.decode()} chunk at byte {pos} fails its CRC")
        if first:
            if ctype != b"IHDR" or length != 13:
                raise EvidenceRejected("PNG: the first chunk must be IHDR")
            width, height = struct.unpack_from(">II", data, pos + 8)
            if not (0 < width <= MAX_PNG_SIDE and 0 < height <= MAX_PNG_SIDE):
                raise EvidenceRejected(f"PNG: image size {width}x{height} is out of range")
            first = False
        elif ctype == b"IHDR":
            raise EvidenceRejected("PNG: a second IHDR chunk")
        idat |= ctype == b"IDAT"
        if ctype == b"IEND":
            if end != n:
                raise EvidenceRejected(f"PNG: {n - end} bytes follow the image end (IEND): refused")
            if not idat:
                raise EvidenceRejected("PNG: no image data (IDAT)")
            return
        pos = end
    raise EvidenceRejected("PNG: no IEND chunk (truncated)")


def _check_jpeg(data: bytes) -> None:
    n, pos = len(data), 2
    while True:
        if pos + 2 > n:
            raise EvidenceRejected("JPEG: truncated (no end-of-image marker)")
        if data[pos] != 0xFF:
            raise EvidenceRejected(f"JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            if pos + 2 != n:
                raise EvidenceRejected(f"JPEG: {n - pos - 2} bytes follow the image end (EOI): refused")
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if marker in (0x00, 0xD8):
            raise EvidenceRejected(f"JPEG: unexpected marker 0xFF{marker:02X} at byte {pos}")
        if pos + 4 > n:
            raise EvidenceRejected("JPEG: truncated segment")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > n:
            raise EvidenceRejected(f"JPEG: segment at byte {pos} runs past the end of the file")
        if marker != 0xDA:
            pos = end
            continue
        scan = end  # SOS: entropy-coded data up to the next real marker
        while True:
            i = data.find(b"\xff", scan)
            if i < 0 or i + 1 >= n:
                raise EvidenceRejected("JPEG: truncated scan data")
            following = data[i + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                scan = i + 2
            elif following == 0xFF:
                scan = i + 1
            else:
                pos = i
                break


def _pdf_names(blob: bytes) -> set[bytes]:
    out = set()
    for m in _PDF_NAME.finditer(blob):
        name = m.group(1)
        if b"#" in name:
            name = re.sub(rb"#([0-9A-Fa-f]{2})", lambda h: bytes([int(h.group(1), 16)]), name)
        out.add(name)
    return out


def _check_pdf(data: bytes) -> None:
    if not _PDF_HEADER.match(data):
        raise EvidenceRejected("PDF: the header %PDF-1.x / %PDF-2.x must start the file")
    if not data.rstrip(b" \t\r\n\x00").endswith(b"%%EOF"):
        raise EvidenceRejected("PDF: the file does not end with %%EOF (truncated, or something was appended)")
    parts = [data]
    inflated = 0
    for m in _PDF_STREAM.finditer(data):
        start = m.end()
        stop = data.find(b"endstream", start)
        if stop < 0:
            raise EvidenceRejected("PDF: a stream has no endstream")
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(data[start:stop], MAX_INFLATED - inflated + 1)
        except zlib.error:
            continue  # not Flate (an image, or raw): its bytes were scanned with the file
        inflated += len(out)
        if inflated > MAX_INFLATED or inflater.unconsumed_tail:
            raise EvidenceRejected(f"PDF: compressed streams inflate to more than {MAX_INFLATED:,} bytes")
        parts.append(out)
    active = set()
    for blob in parts:
        active |= _pdf_names(blob) & _ACTIVE_PDF_NAMES
        if _MARKUP.search(blob):
            raise EvidenceRejected("PDF: holds markup a browser would run (<script or <html): refused")
    if active:
        names = ", ".join("/" + n.decode() for n in sorted(active))
        raise EvidenceRejected(
            f"PDF: active or hidden content is not accepted ({names}); print the document to a plain PDF"
        )
