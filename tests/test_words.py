"""Words with positions for every page: PDF text layers, the scanned-page decision, transport and stage."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pymupdf
import pytest
from PIL import Image, ImageDraw, ImageFont

from pipeline.config import load_config
from pipeline.rasterize import RasterSettings, rasterize, rasterize_bytes
from pipeline.records import DocKind, Document, Word, WordSource
from pipeline.runner import run_key_for
from pipeline.words import bad_char_share, pack_words, text_layer, unpack_words
from pipeline.workers import decode_result, encode_result, rasterize_stream
from tests.conftest import REPO, write_image

PDF_DEV = REPO.parent / "shared" / "corpora" / "pdf-dev"
WORDS = RasterSettings(words=True)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def doc_for(path: Path) -> Document:
    data = path.read_bytes()
    kind = DocKind.PDF if data.startswith(b"%PDF") else DocKind.PNG
    return Document(hashlib.sha256(data).hexdigest(), str(path), kind, len(data))


def ink(img: Image.Image, w: Word) -> float:
    """Share of dark pixels inside a word's box on the rendered page."""
    a = np.asarray(img.convert("L"))
    h, wd = a.shape
    box = a[int(w.y0 * h) : max(int(w.y1 * h), int(w.y0 * h) + 1), int(w.x0 * wd) : max(int(w.x1 * wd), int(w.x0 * wd) + 1)]
    return float((box < 128).mean()) if box.size else 0.0


def find(words: list[Word], text: str) -> Word:
    return next(w for w in words if w.text == text)


def text_image(lines: list[tuple[str, tuple[int, int]]], size=(900, 700), font_size=34) -> Image.Image:
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, font_size)
    for text, xy in lines:
        d.text(xy, text, fill="black", font=font)
    return img


# --------------------------------------------------------------------------- text layer


def test_digital_pdf_words_hold_the_invoice_number_where_it_is_drawn(tmp_path):
    from pipeline.synth import generate

    [sd] = generate(tmp_path, 1, seed=11, mix={"pdf-digital": 1.0})
    out = rasterize(doc_for(sd.path), WORDS)
    page = out.pages[0]
    assert page.words and all(w.source is WordSource.TEXT_LAYER and w.conf is None for w in page.words)
    number = sd.truth["invoice_number"]
    w = find(page.words, number)
    assert 0 <= w.x0 < w.x1 <= 1 and 0 <= w.y0 < w.y1 <= 1
    assert ink(page.image, w) > 0.05  # the box sits on the printed digits
    # PyMuPDF's own search puts the value at the same place
    pdf = pymupdf.open(sd.path)
    [hit] = [r for r in pdf[0].search_for(number) if abs(r.x0 / pdf[0].rect.width - w.x0) < 0.02]
    assert abs(hit.y0 / pdf[0].rect.height - w.y0) < 0.02
    # words of one printed line share a line id, and line ids run in reading order
    assert [x.line for x in page.words] == sorted(x.line for x in page.words)
    assert page.words[0].y0 < 0.5


def test_rotated_page_gives_boxes_on_the_upright_image(tmp_path):
    pdf = pymupdf.open()
    p = pdf.new_page(width=400, height=600)
    p.insert_text((60, 100), "ROTATED", fontsize=24)
    p.insert_text((60, 500), "BOTTOM", fontsize=24)
    p.set_rotation(90)
    path = tmp_path / "rot.pdf"
    pdf.save(path)
    out = rasterize(doc_for(path), WORDS)
    page = out.pages[0]
    assert page.width > page.height  # rendered upright: the 400x600 page turned is 600 wide
    w = find(page.words, "ROTATED")
    assert w.y1 - w.y0 > w.x1 - w.x0  # the line now runs down the image
    assert ink(page.image, w) > 0.05
    # /Rotate 90 turns the page clockwise: the top of the unrotated page is now its right edge
    assert w.x0 > 0.7 and find(page.words, "BOTTOM").x1 < 0.3


def test_hidden_under_image_garbage_invisible_and_empty_verdicts(tmp_path):
    scan = text_image([("PRINTED TOTAL 42.50", (40, 40))], size=(600, 200))
    buf = io.BytesIO()
    scan.save(buf, "PNG")
    pdf = pymupdf.open()
    # 1: text drawn first, then a full-page image over it
    p = pdf.new_page(width=600, height=200)
    p.insert_text((50, 100), "SECRETWORD under the picture", fontsize=14)
    p.insert_image(p.rect, stream=buf.getvalue())
    # 2: an invisible OCR layer over a scan: a scan (OCRed under "auto"), its layer kept for "never"
    p = pdf.new_page(width=600, height=200)
    p.insert_image(p.rect, stream=buf.getvalue())
    p.insert_text((40, 80), "PRINTED TOTAL 42.50", fontsize=20, render_mode=3)
    # 3: unmapped glyphs (no ToUnicode for them): garbage
    p = pdf.new_page(width=600, height=200)
    p.insert_font(fontname="F0", fontbuffer=pymupdf.Font("cjk").buffer)
    p.insert_text((50, 100), "\ue000\ue001\ue002\ue003 \ue004\ue005\ue006 ok", fontsize=14, fontname="F0")
    # 4: no text at all
    p = pdf.new_page(width=600, height=200)
    p.insert_image(p.rect, stream=buf.getvalue())
    # 5: invisible text over no image: not printed, dropped; the visible word stays
    p = pdf.new_page(width=600, height=200)
    p.insert_text((50, 60), "VISIBLE", fontsize=14)
    p.insert_text((50, 120), "STUFFED keywords", fontsize=14, render_mode=3)
    path = tmp_path / "layers.pdf"
    pdf.save(path)
    doc = pymupdf.open(path)
    layers = [text_layer(doc[i]) for i in range(doc.page_count)]
    assert [t.verdict for t in layers] == ["hidden", "ocr_layer", "garbage", "empty", "text"]
    assert [w.text for w in layers[1].words] == ["PRINTED", "TOTAL", "42.50"]
    assert [w.text for w in layers[4].words] == ["VISIBLE"]
    assert [t.usable for t in layers] == [False, False, False, False, True]


def test_text_hidden_under_a_full_page_image_is_ocred_not_trusted(tmp_path):
    scan = text_image([("PRINTED TOTAL 42.50", (40, 40))], size=(600, 200))
    buf = io.BytesIO()
    scan.save(buf, "PNG")
    pdf = pymupdf.open()
    p = pdf.new_page(width=600, height=200)
    p.insert_text((50, 100), "SECRETWORD", fontsize=14)
    p.insert_image(p.rect, stream=buf.getvalue())
    path = tmp_path / "hidden.pdf"
    pdf.save(path)
    [page] = rasterize(doc_for(path), RasterSettings(words=True, max_pixels=1_003_520)).pages
    texts = [w.text for w in page.words]
    assert "42.50" in texts and "SECRETWORD" not in texts
    assert all(w.source is WordSource.OCR for w in page.words)


def test_bad_char_share():
    assert bad_char_share("Invoice 2024-001 Total 12,50 €") == 0
    assert bad_char_share("\ufffd\ufffd\ufffd ab") == 0.6
    assert bad_char_share("\ue000\ue001 x") == pytest.approx(2 / 3)
    assert bad_char_share("   ") == 0


# The scanned-page decision on the real PDFs: every file's first pages, with the exceptions named.
EXPECTED = {
    "issue-203-decimalize.pdf": {"empty"},  # a scanned Chinese notice: images only -> OCR
    "issue-297-example.pdf": {"empty"},  # a page with nothing on it
    "chelsea_pdta.pdf": {"text", "empty"},  # a report whose page 1 is a cover picture
    "pr-136-example.pdf": {"ocr_layer"},  # JPEG scans with an invisible OCR layer over them: OCRed again
    # issue-192: anonymised text ("Aabaaab") printed in a font whose glyphs really show that: text
}


@pytest.mark.skipif(not PDF_DEV.is_dir(), reason="../shared/corpora/pdf-dev is not here")
def test_scanned_page_decision_on_real_pdfs():
    seen = {}
    for path in sorted(PDF_DEV.glob("*.pdf")):
        try:
            pdf = pymupdf.open(path)
        except Exception:  # noqa: BLE001 - the empty file
            continue
        if pdf.needs_pass:
            continue
        seen[path.name] = {text_layer(pdf[i]).verdict for i in range(min(pdf.page_count, 8))}
    assert len(seen) >= 45
    for name, verdicts in seen.items():
        assert verdicts == EXPECTED.get(name, {"text"}), name


# --------------------------------------------------------------------------- settings, transport, stage


def test_words_off_is_none_and_imports_no_ocr(tmp_path):
    img = write_image(tmp_path / "scan.png", "PNG")
    code = (
        "import sys, hashlib; from pathlib import Path\n"
        "from pipeline.rasterize import RasterSettings, rasterize\n"
        "from pipeline.records import Document, DocKind\n"
        f"p = Path({str(img)!r}); d = p.read_bytes()\n"
        "out = rasterize(Document(hashlib.sha256(d).hexdigest(), str(p), DocKind.PNG, len(d)), RasterSettings())\n"
        "assert out.pages[0].words is None\n"
        "print(sorted(m for m in sys.modules if m.startswith(('rapidocr', 'onnxruntime', 'pipeline.ocr', 'cv2'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_digital_pages_need_no_ocr(tmp_path):
    from pipeline.synth import generate

    [sd] = generate(tmp_path, 1, seed=5, mix={"pdf-digital": 1.0})
    code = (
        "import sys, hashlib; from pathlib import Path\n"
        "from pipeline.rasterize import RasterSettings, rasterize\n"
        "from pipeline.records import Document, DocKind\n"
        f"p = Path({str(sd.path)!r}); d = p.read_bytes()\n"
        "out = rasterize(Document(hashlib.sha256(d).hexdigest(), str(p), DocKind.PDF, len(d)), RasterSettings(words=True))\n"
        "assert all(pg.words for pg in out.pages)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('rapidocr', 'onnxruntime', 'pipeline.ocr'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_ocr_never_gives_scans_no_words_and_ocr_layers_their_own(tmp_path):
    img = text_image([("TOTAL 42.50", (40, 40))], size=(600, 200))
    img.save(tmp_path / "s.png")
    never = RasterSettings(words=True, ocr="never")
    [page] = rasterize(doc_for(tmp_path / "s.png"), never).pages
    assert page.words == []
    pdf = pymupdf.open()
    p = pdf.new_page(width=600, height=200)
    p.insert_image(p.rect, filename=str(tmp_path / "s.png"))
    p.insert_text((40, 80), "TOTAL 42.5O", fontsize=20, render_mode=3)  # the scanner's OCR misread a digit
    pdf.save(tmp_path / "layered.pdf")
    [page] = rasterize(doc_for(tmp_path / "layered.pdf"), never).pages
    assert [w.text for w in page.words or []] == ["TOTAL", "42.5O"]
    assert all(w.source is WordSource.TEXT_LAYER for w in page.words or [])
    [page] = rasterize(doc_for(tmp_path / "layered.pdf"), RasterSettings(words=True, max_pixels=1_003_520)).pages
    texts = [w.text for w in page.words or []]
    assert "42.50" in texts and "42.5O" not in texts  # "auto": a scan with an OCR layer is OCRed again


def test_config_words_section_and_run_key():
    from schemas import REGISTRY

    model = REGISTRY["invoice"]
    base = load_config(None, {})
    assert base.words.enabled and base.words.ocr == "auto" and base.words.ocr_threads == 1
    s = RasterSettings.from_config(base.rasterize, base.words)
    assert (s.words, s.ocr, s.ocr_engine, s.ocr_threads) == (True, "auto", "rapidocr", 1)
    assert RasterSettings.from_config(base.rasterize).words is False
    key = run_key_for(base, model)
    assert run_key_for(load_config(None, {"words.ocr_threads": 2}), model) == key  # speed only
    assert run_key_for(load_config(None, {"words.ocr": "never"}), model) != key
    assert run_key_for(load_config(None, {"words.enabled": False}), model) != key
    from pipeline.errors import ConfigError

    for bad in ({"words.ocr": "sometimes"}, {"words.ocr_threads": 0}, {"words.ocr_engine": "nope"}, {"words.colour": 1}):
        with pytest.raises(ConfigError):
            load_config(None, bad)
    assert load_config(None, environ={"DOCEXTRACT_WORDS__OCR": "always"}).words.ocr == "always"


def test_packed_words_round_trip():
    words = [
        Word("Total", 0.1, 0.2, 0.3, 0.25, 0, WordSource.TEXT_LAYER),
        Word("12,50\u00a0€", 0.7, 0.2, 0.9, 0.25, 0, WordSource.OCR, 0.93),
        Word("ü", 0.0, 0.99, 1.0, 1.0, 7, WordSource.OCR, None),
    ]
    assert unpack_words(pack_words(words)) == words
    assert unpack_words(pack_words([])) == []


def test_words_cross_the_worker_boundary_and_the_pool(tmp_path):
    from pipeline.synth import generate

    docs = generate(tmp_path / "in", 2, seed=2, mix={"pdf-digital": 1.0})
    direct = {d.path.name: rasterize(doc_for(d.path), WORDS) for d in docs}
    for out in direct.values():
        again = decode_result(encode_result(rasterize(doc_for(Path(out.document.path)), WORDS)))
        assert [p.words for p in again.pages] == [p.words for p in out.pages]  # type: ignore[union-attr]
    pooled = dict(rasterize_stream([doc_for(d.path) for d in docs], WORDS, workers=2))
    for doc, out in pooled.items():
        assert [p.words for p in out.pages] == [p.words for p in direct[Path(doc.path).name].pages]  # type: ignore[union-attr]


def test_stage_keeps_the_words_and_refuses_other_word_settings(tmp_path):
    from pipeline.errors import StageError
    from pipeline.stage import check_settings, read_stage, stage_items, write_stage
    from pipeline.synth import generate

    generate(tmp_path / "in", 2, seed=4, mix={"pdf-digital": 1.0})
    write_image(tmp_path / "in" / "blank.png", "PNG")
    s = RasterSettings(words=True, ocr="never")  # no OCR: this is about the format
    write_stage([str(tmp_path / "in")], tmp_path / "stage", s, workers=1, timeout_s=60)
    found, rows = read_stage(tmp_path / "stage")
    back = {Path(d.path).name: out for d, out in stage_items(tmp_path / "stage", found.documents, rows)}
    for name, out in back.items():
        fresh = rasterize(doc_for(tmp_path / "in" / name), s)
        assert [p.words for p in out.pages] == [p.words for p in fresh.pages], name  # type: ignore[union-attr]
    assert back["blank.png"].pages[0].words == []  # type: ignore[union-attr]
    assert any(p.words for out in back.values() for p in out.pages)  # type: ignore[union-attr]
    check_settings(tmp_path / "stage", s)
    with pytest.raises(StageError, match="ocr: stage 'never', config 'auto'"):
        check_settings(tmp_path / "stage", RasterSettings(words=True))
    # a stage without words reads back as None
    write_stage([str(tmp_path / "in")], tmp_path / "stage2", RasterSettings(), workers=1, timeout_s=60)
    found, rows = read_stage(tmp_path / "stage2")
    assert all(p.words is None for _, out in stage_items(tmp_path / "stage2", found.documents, rows) for p in out.pages)  # type: ignore[union-attr]
    assert json.loads(json.dumps(rows[found.documents[0].doc_id]["warnings"])) == []


def test_image_pages_always_ocr_even_with_a_text_layer_pdf_beside(tmp_path):
    img = text_image([("INVOICE 7788", (40, 40)), ("TOTAL 42.50", (40, 140))])
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    data = buf.getvalue()
    out = rasterize_bytes(Document(hashlib.sha256(data).hexdigest(), "x.jpg", DocKind.JPEG, len(data)), data, WORDS)
    texts = [w.text for w in out.pages[0].words or []]
    assert "7788" in texts and "42.50" in texts
