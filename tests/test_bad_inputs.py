"""The bad-input corpus (generated here): every file ends as exactly one row with a precise outcome,
through the real worker pool, and the run finishes."""

import io
import os
import struct
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pymupdf
import pytest
from PIL import Image

from pipeline.runner import run_job
from tests.helpers import invoice_truth, small_config, write_encrypted_pdf, write_image, write_pdf, write_truncated_pdf
from tests.scripted_engine import ScriptedEngine


def _png_chunk(t: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))


def build_corpus(d: Path) -> dict[str, str | None]:
    """file name -> expected error_type (None = a legitimate result)."""
    d.mkdir()
    exp: dict[str, str | None] = {}
    (d / "zero.pdf").write_bytes(b"")
    exp["zero.pdf"] = "empty_file"
    (d / "text.pdf").write_text("Dear customer, please find attached...\n")
    exp["text.pdf"] = "unsupported_type"
    write_truncated_pdf(d / "truncated.pdf")
    exp["truncated.pdf"] = "corrupt"
    p = write_pdf(d / "broken_xref.pdf", pages=2)
    data = p.read_bytes()
    p.write_bytes(data[: data.rfind(b"startxref")] + b"startxref\n123456\n%%EOF\n")
    exp["broken_xref.pdf"] = None  # repaired, with a warning
    write_encrypted_pdf(d / "encrypted.pdf")
    exp["encrypted.pdf"] = "encrypted"
    (d / "zero_pages.pdf").write_bytes(
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
    exp["zero_pages.pdf"] = "no_pages"
    doc = pymupdf.open()
    for _i in range(3000):
        doc.new_page(width=300, height=400)
    doc.save(d / "thousands.pdf")
    exp["thousands.pdf"] = None  # first max_pages kept, warning
    write_pdf(d / "absurd_box.pdf", size=(14400, 14400))
    exp["absurd_box.pdf"] = None
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 200000, 200000, 8, 2, 0, 0, 0))
    (d / "bomb.png").write_bytes(png + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))
    exp["bomb.png"] = "too_large"
    buf = io.BytesIO()
    Image.new("RGB", (400, 400), "white").save(buf, "JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[:300])
    exp["truncated.jpg"] = "corrupt"
    write_image(d / "cmyk.jpg", "JPEG", mode="CMYK")
    exp["cmyk.jpg"] = None
    Image.fromarray((np.arange(300 * 200).reshape(300, 200) * 3).astype(np.uint16)).save(d / "deep16.png")
    exp["deep16.png"] = None
    pal = Image.new("P", (200, 300), 1)
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    pal.save(d / "palette_alpha.png", transparency=0)
    exp["palette_alpha.png"] = None
    frames = [Image.new("RGB", (120, 160), c) for c in ("red", "green")]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:])
    exp["animated.gif"] = None
    (d / "loop").mkdir()
    (d / "loop" / "again").symlink_to(d, target_is_directory=True)
    (d / "dangling.pdf").symlink_to(d / "nowhere.pdf")
    exp["dangling.pdf"] = "unreadable"
    raw = os.path.join(os.fsencode(d), b"r\xe9sum\xe9.pdf")
    write_pdf(d / "tmp_name.pdf", text="latin-1 name")
    os.rename(d / "tmp_name.pdf", raw)
    exp["r\ufffdsum\ufffd.pdf"] = None
    # issue 17
    os.mkfifo(d / "pipe.pdf")  # nobody writes to it: reading it used to block the run forever
    exp["pipe.pdf"] = "unsupported_type"
    (d / "devzero.pdf").symlink_to("/dev/zero")  # endless bytes, and outside the input folder
    exp["devzero.pdf"] = "refused_symlink"
    secret = d.parent / "etc" / "shadow"  # a file the job must not read, outside the input folder
    secret.parent.mkdir(exist_ok=True)
    secret.write_bytes(SECRET)
    (d / "shadow.pdf").symlink_to(secret)  # its first bytes used to be written into the message
    exp["shadow.pdf"] = "refused_symlink"
    (d / "bmw.pdf").write_text("BMW owners' club: spring newsletter. Dear members, ...\n")
    exp["bmw.pdf"] = "unsupported_type"  # was a BMP, then `corrupt`
    (d / "cover.pdf").write_text("Dear customer, the invoice (%PDF-1.4) follows in a second mail.\n")
    exp["cover.pdf"] = "unsupported_type"  # was a PDF, then `corrupt`
    (d / "about.gif").write_text("GIF89a is the 1989 version of the format; this note is text.\n")
    exp["about.gif"] = "unsupported_type"
    old = d / "extracted-last-year"  # another docextract output in the inputs: skipped, no rows
    (old / "_state").mkdir(parents=True)
    (old / "_state" / "identities.parquet").write_bytes(b"PAR1 not read PAR1")
    (old / "run.json").write_text('{"status": "completed"}')
    (old / "results").mkdir()
    write_pdf(old / "results" / "never-read.pdf")
    return exp


SECRET = b"root:$6$saltsalt$0123456789abcdef:19000:0:99999:7:::\n"


def _no_secret(text: str) -> bool:
    flat = text.replace(" ", "").lower()
    return "saltsalt" not in text and SECRET[:8].hex() not in flat and SECRET[:4].hex() not in flat


@pytest.mark.timeout(300, method="thread")  # a read that blocks (FIFO) must fail the session, not hang it
def test_bad_input_corpus_each_file_one_precise_row(tmp_path):
    exp = build_corpus(tmp_path / "in")
    out = tmp_path / "out"
    cfg = small_config(**{"rasterize.workers": 2, "rasterize.max_pages": 3})
    s = run_job([str(tmp_path / "in")], out, cfg, engine=ScriptedEngine(callback=lambda r: invoice_truth()))
    assert s.inputs == len(exp)
    got = {}
    for path, et, msg in duckdb.sql(f"SELECT source_path, error_type, message FROM '{out}/failures/*.parquet'").fetchall():
        got[Path(path).name] = et
        assert msg and len(msg) > 10
        assert _no_secret(msg), msg
    warnings = {}
    for path, w in duckdb.sql(f"SELECT source_path, warnings FROM '{out}/results/*.parquet'").fetchall():
        got[Path(path).name] = None
        warnings[Path(path).name] = w
    assert got == exp
    assert any("3 of 3000" in w for w in warnings["thousands.pdf"])
    assert any("repaired" in w for w in warnings["broken_xref.pdf"])
    assert any("first of 2" in w for w in warnings["animated.gif"])
    assert any("loop" in w for w in s.warnings)
    assert any("extracted-last-year" in w and "docextract output" in w for w in s.warnings)
    assert not any(p.endswith("never-read.pdf") for p in q_paths(out))


def q_paths(out: Path) -> list[str]:
    sql = f"SELECT source_path FROM '{out}/results/*.parquet' "
    sql += f"UNION ALL SELECT source_path FROM '{out}/failures/*.parquet'"
    return [r[0] for r in duckdb.sql(sql).fetchall()]
