"""Tests for the synthetic invoice / receipt generator (pipeline/synth/)."""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pymupdf
import pytest
from PIL import Image

from pipeline import synth
from pipeline.synth import tables
from schemas import Invoice, Receipt

ALL_VARIANTS = set(synth.VARIANTS)
SEED = 3


def _file_pages(path: Path) -> int:
    """Pages counted independently of synth: PDF pages, TIFF frames, 1 for PNG/JPEG."""
    if path.suffix == ".pdf":
        with pymupdf.open(path) as doc:
            return doc.page_count
    with Image.open(path) as im:
        im.load()
        return getattr(im, "n_frames", 1)


def _line_digits(text: str) -> set[str]:
    """Digits of each text line ("1.234,56 €" -> "123456"), to find amounts whatever the format."""
    return {re.sub(r"\D", "", ln) for ln in text.splitlines()}


def _digits(amount: str) -> str:
    return re.sub(r"\D", "", str(abs(Decimal(amount))))


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[synth.SynthDoc]]:
    out = tmp_path_factory.mktemp("batch")
    return out, synth.generate(out, 40, seed=SEED)


# --------------------------------------------------------------------------- planning


def test_plan_default_mix_covers_every_variant_and_favours_scans() -> None:
    plan = synth.plan_variants(40, 0, ("invoice", "receipt"), None)
    c = Counter(plan)
    assert len(plan) == 40
    assert set(c) == ALL_VARIANTS
    kinds = Counter(synth.VARIANTS[v] for v in plan)
    assert 16 <= kinds["invoice"] <= 24 and 16 <= kinds["receipt"] <= 24
    assert c["pdf-scan"] + c["tiff-scan"] + c["jpeg-scan"] > c["pdf-digital"]


def test_plan_respects_kinds_and_mix() -> None:
    assert set(synth.plan_variants(10, 0, ("receipt",), None)) == {"png-receipt", "jpeg-photo-receipt"}
    assert synth.plan_variants(5, 0, ("invoice", "receipt"), {"tiff-scan": 1.0}) == ["tiff-scan"] * 5
    c = Counter(synth.plan_variants(100, 0, ("invoice", "receipt"), {"invoice": 1, "receipt": 3}))
    assert sum(v for k, v in c.items() if synth.VARIANTS[k] == "receipt") == 75
    with pytest.raises(ValueError):
        synth.plan_variants(3, 0, ("invoice",), {"docx": 1.0})
    with pytest.raises(ValueError):
        synth.plan_variants(3, 0, ("invoice",), {"png-receipt": 1.0})


# --------------------------------------------------------------------------- formats


def test_number_and_date_formats() -> None:
    d = Decimal("1234.56")
    assert synth.NumFmt(".", ",").num(d) == "1,234.56"
    assert synth.NumFmt(",", ".").num(d) == "1.234,56"
    assert synth.NumFmt(",", " ").num(-d) == "-1 234,56"
    assert synth.NumFmt(".", "'", "CHF", True, True).money(d) == "CHF 1'234.56"
    assert synth.NumFmt(",", ".", "€", False, True).money(d) == "1.234,56 €"
    assert synth.NumFmt(",", ".").qty(Decimal("2.500")) == "2,5"
    assert synth.NumFmt(",", ".").qty(Decimal("1000")) == "1.000"
    day = dt.date(2024, 3, 5)
    assert synth.fmt_date(day, "iso", "en") == "2024-03-05"
    assert synth.fmt_date(day, "dmy/", "fr") == "05/03/2024"
    assert synth.fmt_date(day, "d mon y", "en") == "5 Mar 2024"
    assert synth.fmt_date(day, "d mon y", "de") == "5. März 2024"
    assert synth.fmt_date(day, "d mon y", "fr") == "5 mars 2024"
    assert synth.fmt_date(day, "zh", "zh") == "2024年3月5日"


# --------------------------------------------------------------------------- the batch


def test_batch_has_every_variant_and_files(batch) -> None:
    out, docs = batch
    assert len(docs) == 40
    assert {d.variant for d in docs} == ALL_VARIANTS
    for d in docs:
        assert d.path.is_file() and d.path.stat().st_size > 1000
        assert d.path.suffix == synth.EXTENSIONS[d.variant]
        assert d.kind == synth.VARIANTS[d.variant]
        side = d.path.with_name(d.path.stem + ".truth.json")
        assert json.loads(side.read_text(encoding="utf-8")) == {"schema": d.kind, "truth": d.truth, "boxes": d.boxes}
    rows = [json.loads(x) for x in (out / "truth.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["file"] for r in rows] == [d.path.name for d in docs]
    assert all(r["schema"] == d.kind and r["truth"] == d.truth for r, d in zip(rows, docs))


def test_truth_validates_and_adds_up_exactly(batch) -> None:
    _, docs = batch
    cents = Decimal("0.01")
    for d in docs:
        if d.kind == "invoice":
            m = Invoice.model_validate(d.truth)
            assert m.rule_violations() == []
            assert m.line_items, d.path
            assert sum(li.amount for li in m.line_items) == m.subtotal
            assert m.subtotal + m.tax == m.total
            assert m.due_date is None or m.due_date >= m.issue_date
            assert all(li.amount == li.amount.quantize(cents) for li in m.line_items)
            assert m.total > 0 and m.tax >= 0
        else:
            m = Receipt.model_validate(d.truth)
            assert m.rule_violations() == []
            assert m.items, d.path
            items = sum(i.amount for i in m.items)
            if m.subtotal is not None:
                assert items == m.subtotal
                assert m.subtotal + (m.tax or 0) + (m.tip or 0) == m.total
            else:  # VAT-inclusive till slip: the items are the total
                assert items == m.total
            assert m.currency is not None and re.fullmatch(r"[A-Z]{3}", m.currency)
        assert (m.total == m.total.quantize(cents)) and m.total > 0


def test_page_counts_match_files(batch) -> None:
    _, docs = batch
    for d in docs:
        assert _file_pages(d.path) == d.pages, d.path
        if d.kind == "receipt" or d.variant == "jpeg-scan":
            assert d.pages == 1
        else:
            assert 1 <= d.pages <= 3
            assert d.meta["items_per_page"] and len(d.meta["items_per_page"]) == d.pages
            assert sum(d.meta["items_per_page"]) == len(d.truth["line_items"])


def test_image_properties(batch) -> None:
    _, docs = batch
    for d in docs:
        if d.variant == "png-receipt":
            with Image.open(d.path) as im:
                assert im.format == "PNG" and im.width in (384, 512, 576) and im.height > im.width
        elif d.variant == "jpeg-photo-receipt":
            with Image.open(d.path) as im:
                assert im.format == "JPEG" and im.mode == "RGB" and im.height > im.width
        elif d.variant == "jpeg-scan":
            with Image.open(d.path) as im:
                assert im.format == "JPEG"
                dpi = im.info["dpi"][0]
                assert 100 <= dpi <= 150 and abs(im.width / dpi * 72 - (612 if im.width / dpi > 8.4 else 595)) < 3
        elif d.variant == "tiff-scan":
            with Image.open(d.path) as im:
                assert im.format == "TIFF" and im.info.get("compression") == "jpeg"
        elif d.variant == "pdf-scan":
            with pymupdf.open(d.path) as doc:
                for page in doc:
                    assert page.get_text().strip() == ""  # image only
                    assert len(page.get_images()) == 1


def test_digital_pdfs_print_the_truth(batch) -> None:
    _, docs = batch
    digital = [d for d in docs if d.variant == "pdf-digital"]
    assert digital
    for d in digital:
        with pymupdf.open(d.path) as doc:
            text = "\n".join(p.get_text() for p in doc)
        t = d.truth
        lang = synth.LOCALES[d.meta["locale"]].lang
        assert synth.LABELS[lang]["title"].lower() in text.lower()
        assert t["invoice_number"] in text
        assert t["vendor"]["name"] in text.replace("\n", " ")
        assert t["customer"]["name"] in text
        digits = _line_digits(text)
        assert _digits(t["total"]) in digits
        assert _digits(t["subtotal"]) in digits
        for li in t["line_items"]:
            assert _digits(li["amount"]) in digits, (d.path, li)


def test_locales_and_languages_vary(batch) -> None:
    _, docs = batch
    locs = {d.meta["locale"] for d in docs}
    assert {"de-DE", "fr-FR", "zh-CN"} <= locs and locs & {"en-US", "en-GB"}
    currencies = {d.truth["currency"] for d in docs}
    assert {"EUR", "CNY"} <= currencies and currencies & {"USD", "GBP"}


# --------------------------------------------------------------------------- multi-page


def test_multipage_invoices_span_items_across_pages(tmp_path: Path) -> None:
    docs = synth.generate(tmp_path, 10, seed=8, mix={"pdf-digital": 1.0})
    multi = [d for d in docs if d.pages > 1]
    assert multi, [d.pages for d in docs]
    assert any(d.pages == 3 for d in docs)
    for d in multi:
        per_page = d.meta["items_per_page"]
        assert len(per_page) == d.pages and all(n > 0 for n in per_page)
        items = d.truth["line_items"]
        assert sum(per_page) == len(items)
        with pymupdf.open(d.path) as doc:
            page_digits = [_line_digits(p.get_text()) for p in doc]
        start = 0
        for k, n in enumerate(per_page):
            # the first and last line of this page's slice are printed on this page
            for li in (items[start], items[start + n - 1]):
                assert _digits(li["amount"]) in page_digits[k], (d.path, k, li)
            start += n
        # the total appears on the last page only
        assert _digits(d.truth["total"]) in page_digits[-1]


# --------------------------------------------------------------------------- determinism


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_same_seed_same_files(tmp_path: Path) -> None:
    mix = {v: 1.0 for v in synth.VARIANTS}
    a = synth.generate(tmp_path / "a", 8, seed=11, mix=mix)
    b = synth.generate(tmp_path / "b", 8, seed=11, mix=mix, workers=2)  # workers do not change output
    c = synth.generate(tmp_path / "c", 8, seed=12, mix=mix)
    assert [d.truth for d in a] == [d.truth for d in b]
    assert [(d.path.name, d.variant, d.pages) for d in a] == [(d.path.name, d.variant, d.pages) for d in b]
    sa, sb = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    assert sa.keys() == sb.keys()
    different = [k for k in sa if sa[k] != sb[k]]
    assert different == []  # PDFs (no IDs, fixed dates), PNG, JPEG and TIFF are byte-identical
    assert [d.truth for d in a] != [d.truth for d in c]


def test_write_samples_covers_every_variant(tmp_path: Path) -> None:
    (tmp_path / "00099-invoice-pdf-digital.pdf").write_bytes(b"old")  # stale sample: replaced
    (tmp_path / "README.md").write_text("keep")
    docs = synth.write_samples(tmp_path)
    assert len(docs) == 12
    assert {d.variant for d in docs} == ALL_VARIANTS
    assert all(d.path.parent == tmp_path / ("invoices" if d.kind == "invoice" else "receipts") for d in docs)
    assert not (tmp_path / "00099-invoice-pdf-digital.pdf").exists()
    assert (tmp_path / "README.md").read_text() == "keep"
    assert {(d.variant, d.pages) for d in docs} >= {("pdf-digital", 3), ("pdf-scan", 3), ("tiff-scan", 2)}
    assert {d.meta["locale"] for d in docs if d.kind == "invoice"} == set(synth.LOCALES)
    size = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert size < 3 * 1024 * 1024


# --------------------------------------------------------------------------- package


def test_data_files_load_into_consistent_tables() -> None:
    for name in tables.DATA_FILES:
        assert isinstance(tables.load(name), dict) and tables.load(name)  # parsed once, cached
        assert tables.load(name) is tables.load(name)
    with pytest.raises(ValueError, match="unknown synth data file"):
        tables.load("../pyproject.toml")
    langs = {loc.lang for loc in synth.LOCALES.values()}
    assert langs == set(synth.LANG_IDX) == set(synth.LABELS) == set(synth.RECEIPT_LABELS) == {"en", "de", "fr", "zh"}
    assert set(synth.INV_LOCALE_WEIGHTS) == set(synth.REC_LOCALE_WEIGHTS) == set(synth.LOCALES) == set(synth.CITIES)
    assert all(isinstance(loc.rates, tuple) and loc.rates for loc in synth.LOCALES.values())
    assert all(set(labels) == set(synth.LABELS["en"]) for labels in synth.LABELS.values())
    for rows in synth.CATALOG.values():
        assert all(len(r) == 7 and r[4] in synth.UNITS and 0 < r[5] < r[6] for r in rows)
    for store, rows in synth.RECEIPT_ITEMS.items():
        assert all(len(r) == 7 and 0 < r[4] < r[5] and isinstance(r[6], bool) for r in rows)
        assert all(synth.STORE_NAMES[lang][store] for lang in langs)
    assert len(synth.ACCENTS) == 8 and all(len(a) == 3 for a in synth.ACCENTS)
    assert "München" in {c[0] for c in synth.CITIES["de-DE"]}
    assert "München & Söhne".lower().translate(synth.TRANSLIT) == "muenchen  soehne"


def test_synth_has_no_command_line_of_its_own() -> None:
    """``docextract synth`` is the one CLI: no ``python -m pipeline.synth``, no argparse, no ``main``."""
    pkg = Path(synth.__file__).parent
    assert not (pkg / "__main__.py").exists() and not hasattr(synth, "main")
    for src in pkg.glob("*.py"):
        tree = ast.parse(src.read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "argparse" not in imported, src
        assert not any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body), src
    r = subprocess.run([sys.executable, "-m", "pipeline.synth", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "cannot be directly executed" in r.stderr


@pytest.mark.slow
def test_wheel_ships_the_data_files(tmp_path: Path) -> None:
    """The vocabulary is package data: a built wheel (not only this checkout) has every data file."""
    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    for d in ("pipeline", "schemas"):
        shutil.copytree(root / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(root / f, src / f)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w",
           str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"pipeline/synth/data/{f}" for f in tables.DATA_FILES} <= names
