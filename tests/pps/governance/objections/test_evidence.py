"""Evidence files: accepted types by their bytes, structure checked, active content and polyglots refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pps.errors import EvidenceRejected, PayloadTooLarge
from pps.governance.evidence import JPEG, PDF, PNG, check_evidence
from tests.pps.governance.objections.files import jpeg, pdf, png

LIMIT = 2 << 20


@pytest.mark.parametrize(("data", "kind"), [(png(), PNG), (jpeg(), JPEG), (pdf(), PDF)])
def test_well_formed_files_are_accepted_by_their_bytes(data: bytes, kind: str) -> None:
    assert check_evidence(data, kind, max_bytes=LIMIT) == kind


REFUSED = {
    "declared_pdf_is_png": (png(), PDF, "declared application/pdf but its bytes are image/png"),
    "declared_png_is_jpeg": (jpeg(), PNG, "bytes are image/jpeg"),
    "unknown_type": (png(), "text/html", "must be one of"),
    "not_a_known_file": (b"MZ\x90\x00 an executable", PDF, "not a PDF, PNG or JPEG"),
    "empty": (b"", PNG, "empty"),
    "png_truncated": (png()[:-5], PNG, "PNG"),
    "png_bad_crc": (png()[:25] + bytes([png()[25] ^ 1]) + png()[26:], PNG, "CRC"),
    "png_appended_zip": (png() + b"PK\x03\x04 hidden archive", PNG, "follow the image end"),
    "png_script_polyglot": (png(text=b"<script>alert(1)</script>"), PNG, "markup"),
    "jpeg_appended": (jpeg() + b"<html>", JPEG, "follow the image end"),
    "jpeg_truncated": (jpeg()[:-2], JPEG, "JPEG"),
    "pdf_javascript": (pdf(b"<< /S /JavaScript /JS (app.alert(1)) >>"), PDF, "/JS, /JavaScript"),
    "pdf_hex_escaped_name": (pdf(b"<< /S /J#61vaScript /JS (x) >>"), PDF, "/JavaScript"),
    "pdf_launch": (pdf(b"<< /S /Launch /F (cmd.exe) >>"), PDF, "/Launch"),
    "pdf_embedded_file": (pdf(b"<< /Type /EmbeddedFile >>"), PDF, "/EmbeddedFile"),
    "pdf_js_in_compressed_stream": (
        pdf(stream=b"1 0 obj << /OpenAction << /S /JavaScript >> >>"),
        PDF,
        "JavaScript",
    ),
    "pdf_encrypted": (pdf(b"<< /Encrypt 9 0 R >>"), PDF, "/Encrypt"),
    "pdf_appended": (pdf() + b"MZ trailing executable", PDF, "%%EOF"),
    "pdf_not_at_start": (b"junk" + pdf(), PDF, "not a PDF"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_malformed_mismatched_or_active_files_are_refused(case: str) -> None:
    data, declared, says = REFUSED[case]
    with pytest.raises(EvidenceRejected) as err:
        check_evidence(data, declared, max_bytes=LIMIT)
    assert says in err.value.message


def test_oversized_evidence_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        check_evidence(png(), PNG, max_bytes=len(png()) - 1)


def test_a_flate_bomb_is_stopped() -> None:
    with pytest.raises(EvidenceRejected, match="inflate"):
        check_evidence(pdf(stream=b"\x00" * (40 << 20)), PDF, max_bytes=LIMIT)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"%PDF-1.4", b""]),
    body=st.binary(max_size=300),
    declared=st.sampled_from([PNG, JPEG, PDF]),
)
def test_random_bytes_are_refused_cleanly(prefix: bytes, body: bytes, declared: str) -> None:
    with contextlib.suppress(EvidenceRejected, PayloadTooLarge):
        check_evidence(prefix + body, declared, max_bytes=LIMIT)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=1, max_value=200), flip=st.integers(min_value=0, max_value=10_000))
def test_cut_or_flipped_valid_files_never_crash(cut: int, flip: int) -> None:
    for data, kind in ((png(), PNG), (jpeg(), JPEG), (pdf(), PDF)):
        for mutated in (data[: max(1, len(data) - cut)], _flip(data, flip % len(data))):
            with contextlib.suppress(EvidenceRejected, PayloadTooLarge):
                check_evidence(mutated, kind, max_bytes=LIMIT)


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :]
