"""OCR (the real RapidOCR engine) on scanned pages and images, its failures, and a run with words on."""

from __future__ import annotations

import hashlib
import io
import json
import re

import duckdb
import pytest
from PIL import Image, ImageDraw, ImageFont

from pipeline.ocr import RapidOcr, engine, group_lines
from pipeline.rasterize import RasterSettings, rasterize, rasterize_bytes
from pipeline.records import DocKind, Document, WordSource
from pipeline.runner import run_job
from tests.conftest import REPO, small_config
from tests.scripted_engine import ScriptedEngine, truth_answers

SROIE = REPO.parent / "shared" / "corpora" / "sroie-dev"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
WORDS = RasterSettings(words=True)


def digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def doc_of(data: bytes, kind: DocKind, name: str = "x") -> Document:
    return Document(hashlib.sha256(data).hexdigest(), name, kind, len(data))


@pytest.fixture(scope="module")
def ocr() -> RapidOcr:
    return RapidOcr(threads=1)


def test_words_lines_and_boxes_on_a_drawn_page(ocr):
    img = Image.new("RGB", (1000, 600), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, 36)
    d.text((60, 80), "INVOICE NO 4711", fill="black", font=font)
    d.text((60, 300), "TOTAL", fill="black", font=font)
    d.text((760, 300), "98.40", fill="black", font=font)
    words = ocr.words(img)
    by = {w.text: w for w in words}
    assert {"INVOICE", "4711", "TOTAL", "98.40"} <= by.keys()
    assert all(w.source is WordSource.OCR and 0 < w.conf <= 1 for w in words)  # type: ignore[operator]
    total, amount = by["TOTAL"], by["98.40"]
    assert total.line == amount.line != by["INVOICE"].line  # far apart, one printed line
    assert by["INVOICE"].line < total.line  # reading order
    assert abs(amount.x0 - 0.76) < 0.03 and abs(amount.y0 - 0.5) < 0.04  # fractions of the image
    assert [w.text for w in words].index("TOTAL") < [w.text for w in words].index("98.40")


def test_group_lines_keeps_stacked_lines_apart_and_joins_one_row():
    boxes = [(0.6, 0.10, 0.9, 0.15), (0.0, 0.11, 0.3, 0.16), (0.0, 0.16, 0.3, 0.21), (0.5, 0.5, 0.6, 0.55)]
    assert group_lines(boxes) == [[1, 0], [2], [3]]
    assert group_lines([]) == []


def test_a_scanned_pdf_page_is_ocred_and_holds_the_printed_total(tmp_path):
    from pipeline.synth import generate

    [sd] = generate(tmp_path, 1, seed=21, mix={"pdf-scan": 1.0})
    out = rasterize(Document(hashlib.sha256(sd.path.read_bytes()).hexdigest(), str(sd.path), DocKind.PDF,
                             sd.path.stat().st_size), WORDS)
    words = [w for p in out.pages for w in p.words or []]
    assert words and all(w.source is WordSource.OCR for w in words)
    text = "".join(digits(w.text) for w in words)
    assert digits(sd.truth["total"]) in text
    assert sd.truth["invoice_number"].replace(" ", "") in "".join(w.text for w in words)


@pytest.mark.skipif(not SROIE.is_dir(), reason="../shared/corpora/sroie-dev is not here")
@pytest.mark.parametrize("stem", ["500", "525"])  # a phone-size slip and an A4 scan at 600 dpi
def test_real_receipt_total_and_date_are_found(stem):
    data = (SROIE / "img" / f"{stem}.jpg").read_bytes()
    key = json.loads((SROIE / "key" / f"{stem}.json").read_text())
    out = rasterize_bytes(doc_of(data, DocKind.JPEG), data, WORDS)
    joined = "".join(re.sub(r"\W", "", w.text).upper() for w in out.pages[0].words or [])
    assert re.sub(r"\W", "", key["total"]) in joined
    assert re.sub(r"\W", "", key["date"]) in joined


def test_an_ocr_failure_costs_the_page_its_words_not_the_document(tmp_path):
    frames = [Image.new("RGB", (300, 200), "white") for _ in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    data = buf.getvalue()
    out = rasterize_bytes(doc_of(data, DocKind.TIFF), data, RasterSettings(words=True, ocr_engine="missing"))
    assert [p.words for p in out.pages] == [[], []]
    assert len(out.warnings) == 2 and all("no words" in w and "unknown OCR engine 'missing'" in w for w in out.warnings)


def test_one_engine_per_process():
    assert engine("rapidocr", 1) is engine("rapidocr", 1)


def test_a_thin_strip_is_read_without_blowing_up(ocr):
    strip = Image.new("RGB", (3, 2000), "white")  # once a 736x490,000 detector input (the process was killed)
    assert ocr.words(strip) == []


def test_run_job_gives_the_same_results_with_words_on(corpus, tmp_path):
    answers = truth_answers(corpus["dir"])
    off = run_job([str(corpus["dir"])], tmp_path / "off", small_config(**{"words.enabled": False}), engine=ScriptedEngine(answers))
    on = run_job([str(corpus["dir"])], tmp_path / "on", small_config(**{"rasterize.workers": 2}), engine=ScriptedEngine(answers))
    assert (off.succeeded, off.failed) == (on.succeeded, on.failed) == (5, 4)
    cols = "doc_id, invoice_number, total, pages_used"
    def q(out, t):
        return sorted(duckdb.sql(f"SELECT {cols if t == 'results' else 'doc_id, error_type'} FROM '{out}/{t}/*.parquet'").fetchall())
    for t in ("results", "failures"):
        assert q(tmp_path / "off", t) == q(tmp_path / "on", t)
    keys = [json.loads((tmp_path / d / "run.json").read_text())["run_key"] for d in ("off", "on")]
    assert keys[0] != keys[1]  # words feed the evidence rows: they are part of what a run's key describes
