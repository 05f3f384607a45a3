"""Fixtures: documents made here (PyMuPDF, Pillow), never committed binaries; a tiny model for vLLM."""

from __future__ import annotations

import io
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from PIL import Image, ImageDraw

from pipeline.config import JobConfig, load_config

REPO = Path(__file__).resolve().parent.parent


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


@pytest.fixture
def cfg() -> JobConfig:
    return small_config()


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Any]:
    """A mixed folder: good PDFs and images with truth, plus the four bad inputs the v1 issue names."""
    d = tmp_path / "in"
    d.mkdir()
    truth: dict[str, dict[str, Any]] = {}
    files = {
        "inv1.pdf": write_pdf(d / "inv1.pdf", pages=1, text="Invoice 1"),
        "inv2_multi.pdf": write_pdf(d / "inv2_multi.pdf", pages=3, text="Invoice 2"),
        "scan.tiff": write_tiff(d / "scan.tiff", frames=2),
        "photo.jpg": write_image(d / "photo.jpg", "JPEG", quality=85),
        "receipt.png": write_image(d / "receipt.png", "PNG"),
    }
    for i, (name, p) in enumerate(files.items()):
        t = invoice_truth(i + 1)
        truth[name] = t
        (d / (p.stem + ".truth.json")).write_text(json.dumps({"schema": "invoice", "truth": t}))
    bad = {
        "truncated.pdf": write_truncated_pdf(d / "truncated.pdf"),
        "encrypted.pdf": write_encrypted_pdf(d / "encrypted.pdf"),
        "empty.pdf": (d / "empty.pdf"),
        "notes.pdf": (d / "notes.pdf"),
    }
    bad["empty.pdf"].write_bytes(b"")
    bad["notes.pdf"].write_text("this is a text file, not a PDF\n")
    return {"dir": d, "good": files, "bad": bad, "truth": truth}


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
