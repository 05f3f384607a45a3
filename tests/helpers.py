"""Helpers shared by test modules: document builders, config builders, the CLI runner and output readers.

Fixtures live in conftest.py (they use these). Import from here, e.g.
``from tests.helpers import run_cli, small_config, write_pdf``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pymupdf
from PIL import Image, ImageDraw

from pipeline.config import JobConfig, load_config

REPO = Path(__file__).resolve().parent.parent

SCRIPTED = "tests.scripted_engine:from_truth"  # --engine value: answers with the truth files next to the documents

CORPUS_FAILURES = {  # the bad inputs of the ``corpus`` fixture: file name -> (stage, error_type)
    "truncated.pdf": ("rasterize", "corrupt"),
    "encrypted.pdf": ("rasterize", "encrypted"),
    "empty.pdf": ("discover", "empty_file"),
    "notes.pdf": ("discover", "unsupported_type"),
}


# ----------------------------------------------------------------------------- documents


def invoice_truth(n: int = 1, lines: int = 2) -> dict[str, Any]:
    items = []
    subtotal = Decimal(0)
    for i in range(lines):
        qty = Decimal(i + 1)
        price = Decimal("10.50") + n
        amount = qty * price
        subtotal += amount
        items.append(
            {"description": f"Widget {n}-{i}", "quantity": str(qty), "unit_price": str(price), "amount": str(amount)}
        )
    tax = (subtotal * Decimal("0.19")).quantize(Decimal("0.01"))
    return {
        "invoice_number": f"INV-{n:04d}",
        "issue_date": "2024-03-05",
        "due_date": "2024-04-04",
        "currency": "EUR",
        "vendor": {"name": f"Vendor {n} GmbH", "address": "Hauptstr. 1, Berlin", "tax_id": "DE123456789"},
        "customer": {"name": "Customer AG", "address": None, "tax_id": None},
        "line_items": items,
        "subtotal": str(subtotal),
        "tax": str(tax),
        "total": str(subtotal + tax),
    }


def write_pdf(path: Path, pages: int = 1, text: str = "Invoice", size: tuple[float, float] = (595, 842)) -> Path:
    doc = pymupdf.open()
    for i in range(pages):
        page = doc.new_page(width=size[0], height=size[1])
        page.insert_text((72, 72), f"{text} page {i + 1}", fontsize=14)
        page.draw_rect(pymupdf.Rect(72, 100, 300, 160), color=(0, 0, 1), fill=(0.8, 0.8, 1))
    doc.save(path)
    doc.close()
    return path


def write_image(path: Path, fmt: str = "PNG", size: tuple[int, int] = (600, 900), mode: str = "RGB", **save: Any) -> Path:
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.rectangle([20, 20, size[0] - 20, 80], outline="black", width=3)
    d.text((30, 40), "RECEIPT 12.34", fill="black")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt, **save)
    return path


def write_tiff(path: Path, frames: int = 3, size: tuple[int, int] = (400, 560)) -> Path:
    imgs = []
    for i in range(frames):
        im = Image.new("RGB", size, (255, 255 - 40 * i, 255))
        ImageDraw.Draw(im).text((20, 20), f"frame {i}", fill="black")
        imgs.append(im)
    imgs[0].save(path, format="TIFF", save_all=True, append_images=imgs[1:], compression="tiff_deflate")
    return path


def write_encrypted_pdf(path: Path) -> Path:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret")
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner", user_pw="user")
    doc.close()
    return path


def write_truncated_pdf(path: Path) -> Path:
    src = io.BytesIO()
    doc = pymupdf.open()
    for i in range(3):
        doc.new_page().insert_text((72, 72), f"page {i}" * 20)
    doc.save(src)
    data = src.getvalue()
    path.write_bytes(data[: len(data) // 3])
    return path


def make_docs(d: Path, n: int, start: int = 0, name: str = "doc{:03d}.pdf", text: str = "Invoice number {}",
              pages_cycle: int = 1) -> list[Path]:
    """``n`` PDFs in ``d`` (made if missing), numbered from ``start``; document i has 1 + i % pages_cycle pages."""
    d.mkdir(parents=True, exist_ok=True)
    return [write_pdf(d / name.format(i), pages=1 + i % pages_cycle, text=text.format(i)) for i in range(start, start + n)]


def write_invoices(d: Path, n: int, start: int = 0, pages_cycle: int = 1) -> Path:
    """``n`` invoices ``inv<i>.pdf`` in ``d`` with their ``inv<i>.truth.json`` (what ``SCRIPTED`` answers)."""
    for p in make_docs(d, n, start, name="inv{}.pdf", text="Invoice {}", pages_cycle=pages_cycle):
        i = int(p.stem[3:])
        (d / f"inv{i}.truth.json").write_text(json.dumps({"schema": "invoice", "truth": invoice_truth(i + 1)}))
    return d


# ----------------------------------------------------------------------------- configuration


def small_config(**over: Any) -> JobConfig:
    """Small images and in-process rasterizing: fast tests."""
    base = {
        "rasterize.dpi": 72,
        "rasterize.min_pixels": 28 * 28 * 4,
        "rasterize.max_pixels": 28 * 28 * 64,
        "rasterize.workers": 1,
        "run.batch_size": 8,
        "run.progress": False,
    }
    base.update(over)
    return load_config(None, base)


def scripted_config(truth_dir: Path, **over: Any) -> JobConfig:
    """``small_config`` with the scripted engine answering with the truth files under ``truth_dir``."""
    return small_config(**{"engine.name": SCRIPTED, "engine.options": {"truth_dir": str(truth_dir)}, **over})


TINY_PIXELS = {"rasterize.min_pixels": 3136, "rasterize.max_pixels": 12544, "rasterize.dpi": 72}


def tiny_config(model_dir: Path | str, **over: Any) -> JobConfig:
    """A config for the real vLLM engine on the tiny model of ``tiny_model`` (conftest.py)."""
    base = {
        **TINY_PIXELS,
        "engine.model": str(model_dir),  # profile auto (cpu here) and max_model_len from the checkpoint (4096)
        "engine.dtype": "float32",
        "rasterize.max_pages": 4,
        "rasterize.workers": 1,
        "run.batch_size": 16,
        "run.progress": False,
        "sampling.max_tokens": 64,
    }
    base.update(over)
    return load_config(None, base)


# ----------------------------------------------------------------------------- the command line


def cli_command(*args: object) -> list[str]:
    """The argv of ``docextract ARGS...`` (for ``subprocess.Popen``)."""
    exe = Path(sys.executable).parent / "docextract"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]
    return [*cmd, *map(str, args)]


def run_cli(
    *args: object, env: dict[str, str | None] | None = None, cwd: Path = REPO, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``docextract ARGS...`` as a subprocess, as a user would; stdout and stderr captured apart.

    ``env`` is added to this process's environment (a value of None removes the variable). Nothing is
    asserted: the caller checks the exit code and both streams."""
    full = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return subprocess.run(cli_command(*args), cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------- reading an output


def q(sql: str) -> list[tuple[Any, ...]]:
    """All rows of a DuckDB query (e.g. over ``'{out}/results/*.parquet'``)."""
    return duckdb.sql(sql).fetchall()


def all_rows(out: Path | str) -> list[tuple[Any, ...]]:
    """(doc_id, 'r' for a result or 'f' for a failure) of every row of an output."""
    return q(f"SELECT doc_id, 'r' FROM '{out}/results/*.parquet' UNION ALL SELECT doc_id, 'f' FROM '{out}/failures/*.parquet'")


def doc_ids(out: Path | str) -> list[str]:
    """The doc_id of every row of an output, results then failures."""
    return [d for d, _ in all_rows(out)]


def toml_file(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    """A config file holding ``text`` in ``tmp_path``."""
    p = tmp_path / name
    p.write_text(text)
    return p


def add_invoices(d: Path, start: int, n: int, **truth: object) -> None:
    """``n`` one-page invoice PDFs ``inv<i>.pdf`` with ``<stem>.truth.json`` for the scripted engine
    (``truth`` overrides fields of every answer)."""
    import json

    from tests.conftest import invoice_truth, write_pdf

    d.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        write_pdf(d / f"inv{i}.pdf", pages=1, text=f"Invoice {i}")
        answer = {**invoice_truth(i + 1), **truth}
        (d / f"inv{i}.truth.json").write_text(json.dumps({"schema": "invoice", "truth": answer}))
