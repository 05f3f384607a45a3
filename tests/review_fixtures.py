"""Trust-layer data for review tests and the README screenshot, written the way the contract says the
evidence and flagging stages will write it (until they land, we write it ourselves):

- ``OUT/evidence/part-*.parquet``: one row per leaf value (doc_id, field, value, page, x0..y1 as
  fractions of the upright page, source, grounded, confidence, run_id, run_key, schema_name);
- ``needs_review`` (bool) and ``review_reasons`` (list<string>, ``"<field path>: <why>"``) on results.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.fields import leaf_values

EVIDENCE_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("field", pa.string(), nullable=False),
    pa.field("value", pa.string()),
    pa.field("page", pa.int32()),
    pa.field("x0", pa.float64()),
    pa.field("y0", pa.float64()),
    pa.field("x1", pa.float64()),
    pa.field("y1", pa.float64()),
    pa.field("source", pa.string()),
    pa.field("grounded", pa.bool_()),
    pa.field("confidence", pa.float64()),
    pa.field("run_id", pa.string()),
    pa.field("run_key", pa.string()),
    pa.field("schema_name", pa.string()),
])
META = {"doc_id", "source_path", "doc_kind", "page_count", "pages_used", "raw_json", "warnings", "attempts",
        "prompt_tokens", "output_tokens", "schema_name", "model", "run_key", "run_id", "extracted_at",
        "needs_review", "review_reasons"}


def result_rows(out: Path) -> list[dict[str, Any]]:
    """Every results row of an output (all parts)."""
    rows: list[dict[str, Any]] = []
    for part in sorted((out / "results").glob("part-*.parquet")):
        rows.extend(pq.read_table(part).to_pylist())
    return rows


def leaves(row: dict[str, Any]) -> list[tuple[str, Any]]:
    return leaf_values({k: v for k, v in row.items() if k not in META})


def evidence(row: dict[str, Any], field: str, page: int | None = None, box: Iterable[float] | None = None,
             grounded: bool | None = None, confidence: float = 0.95, source: str | None = "text_layer") -> dict[str, Any]:
    """One evidence row for ``field`` of results row ``row`` (no page or box: not found on the page)."""
    value = dict(leaves(row)).get(field)
    x0, y0, x1, y1 = box if box is not None else (None, None, None, None)
    found = page is not None and box is not None
    return {"doc_id": row["doc_id"], "field": field, "value": None if value is None else str(value), "page": page,
            "x0": x0, "y0": y0, "x1": x1, "y1": y1, "source": source if found else None,
            "grounded": found if grounded is None else grounded, "confidence": confidence,
            "run_id": row["run_id"], "run_key": row["run_key"], "schema_name": row["schema_name"]}


def write_evidence(out: Path, rows: list[dict[str, Any]], name: str | None = None) -> Path:
    """``rows`` as one evidence part (named after the first row's run_id unless ``name`` is given)."""
    path = out / "evidence" / (name or f"part-{rows[0]['run_id']}-00000.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=EVIDENCE_SCHEMA), path)
    return path


def add_review_columns(out: Path, reasons: dict[str, list[str]]) -> None:
    """Rewrite every results part with ``needs_review`` / ``review_reasons`` (doc_id -> its reasons)."""
    for part in sorted((out / "results").glob("part-*.parquet")):
        t = pq.read_table(part)
        ids = t.column("doc_id").to_pylist()
        for name, col in (("needs_review", pa.array([bool(reasons.get(d)) for d in ids], pa.bool_())),
                          ("review_reasons", pa.array([reasons.get(d, []) for d in ids], pa.list_(pa.string())))):
            i = t.schema.get_field_index(name)
            t = t.append_column(name, col) if i < 0 else t.set_column(i, name, col)
        pq.write_table(t, part)


# --------------------------------------------------------------------------- locating values on a PDF page


def _spellings(value: Any) -> list[str]:
    """How a value may be printed: as is, and for amounts and dates the usual locale forms."""
    if isinstance(value, Decimal):
        plain = value.normalize()
        plain = plain.quantize(Decimal(1)) if isinstance(plain.as_tuple().exponent, int) and plain.as_tuple().exponent > 0 else plain
        cents = [value.quantize(Decimal("0.01"))] if value == value.quantize(Decimal("0.01")) else []
        forms = []
        for q in [*cents, plain]:
            us = f"{q:,}"
            forms += [us, us.replace(",", "_").replace(".", ",").replace("_", "."), us.replace(",", "'"), f"{q}"]
        return list(dict.fromkeys(forms))
    if isinstance(value, dt.date):
        return [value.isoformat(), value.strftime("%d.%m.%Y"), value.strftime("%d/%m/%Y"), value.strftime("%m/%d/%Y"),
                f"{value.day} {value.strftime('%b %Y')}", f"{value.strftime('%B')} {value.day}, {value.year}",
                f"{value.day} {value.strftime('%B %Y')}", f"{value.year}年{value.month}月{value.day}日"]
    return [str(value)]


def _find_words(words: list[tuple[Any, ...]], text: str) -> tuple[float, float, float, float] | None:
    """Box (points) of the first run of consecutive words equal to ``text``'s words (edge punctuation aside)."""
    want = [t.strip(",;:") for t in text.split()]
    got = [str(w[4]).strip(",;:") for w in words]
    for i in range(len(got) - len(want) + 1):
        if got[i:i + len(want)] == want:
            run = words[i:i + len(want)]
            return min(w[0] for w in run), min(w[1] for w in run), max(w[2] for w in run), max(w[3] for w in run)
    return None


def locate_in_pdf(pdf: Path, values: list[tuple[str, Any]], pages: int) -> dict[str, tuple[int, tuple[float, ...]]]:
    """field -> (page, box as page fractions) for each value found as whole words in the PDF's text
    layer (first hit; a crude stand-in for the evidence stage, enough for a picture)."""
    import pymupdf

    found: dict[str, tuple[int, tuple[float, ...]]] = {}
    with pymupdf.open(pdf) as doc:
        page_words = [doc[n].get_text("words") for n in range(min(pages, doc.page_count))]
        sizes = [(doc[n].rect.width, doc[n].rect.height) for n in range(len(page_words))]
    for field, value in values:
        if value is None or (isinstance(value, str) and not re.search(r"\w", value)):
            continue
        hit = next(((n, r) for s in _spellings(value) for n, words in enumerate(page_words)
                    if (r := _find_words(words, s)) is not None), None)
        if hit is not None:
            n, (x0, y0, x1, y1) = hit
            w, h = sizes[n]
            found[field] = (n + 1, (x0 / w, y0 / h, x1 / w, y1 / h))
    return found


def ground_pdf_results(out: Path, low: dict[str, float] | None = None) -> dict[str, list[str]]:
    """Evidence for every results row whose source is a PDF with a text layer, found by searching the
    text for each value; values not found are flagged ``not found on the page``, and fields in ``low``
    get that confidence and a ``low confidence`` flag.  Writes the evidence part and the review columns;
    returns the reasons by doc_id."""
    rows, reasons = [], {}
    for row in result_rows(out):
        values = leaves(row)
        path = Path(row["source_path"])
        located = locate_in_pdf(path, values, row["pages_used"] or 1) if path.suffix == ".pdf" else {}
        if not located:  # no text layer (a scan): nothing to ground against here
            continue
        why = []
        for field, value in values:
            if value is None:  # not stated: nothing to find
                continue
            conf = (low or {}).get(field, 0.97)
            hit = located.get(field)
            rows.append(evidence(row, field, *(hit or (None, None)), confidence=conf if hit else 0.62))
            if hit is None:
                why.append(f"{field}: not found on the page")
            elif conf < 0.5:
                why.append(f"{field}: low confidence {conf:.2f}")
        reasons[row["doc_id"]] = why
    if rows:
        write_evidence(out, rows)
    add_review_columns(out, reasons)
    return reasons


# --------------------------------------------------------------------------- a small reviewed output

XSS = "<script>document.title='pwned'</script><img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
PAGE_COLOUR = (255, 244, 190)  # the fixture page's background: easy to find in a screenshot
INVOICE_BOX = (0.10, 0.05, 0.40, 0.10)  # where invoice_number is printed on the fixture page
TOTAL_BOX = (0.55, 0.80, 0.90, 0.86)  # where total is printed
CLEAN_BOX = (0.12, 0.07, 0.5, 0.1)  # invoice_number of clean.pdf, on its second page
REASONS = ["total: low confidence 0.41", "vendor.name: not found on the page",
           "line_items[1]: quantity times unit price is not the amount", "document: two pages look alike"]


@dataclass
class Sample:
    inputs: Path
    out: Path
    ids: dict[str, str]  # file name -> doc_id
    answers: dict[str, Any]  # doc_id -> scripted answer


def _page_png(path: Path) -> Path:
    from PIL import Image, ImageDraw

    w, h = 600, 800
    img = Image.new("RGB", (w, h), PAGE_COLOUR)
    d = ImageDraw.Draw(img)
    for x0, y0, x1, y1 in (INVOICE_BOX, TOTAL_BOX):  # dark bars where the values are "printed"
        d.rectangle([x0 * w + 6, y0 * h + 6, x1 * w - 6, y1 * h - 6], fill=(60, 60, 60))
    img.save(path, "PNG")
    return path


def NO_EVIDENCE() -> Any:  # noqa: N802
    from tests.helpers import small_config

    return small_config(**{"evidence.enabled": False})


def make_sample(root: Path) -> Sample:
    """An output with one flagged result (a PNG page, evidence boxes, a value holding markup), one
    clean result (a PDF), a validate failure with raw output and a discover failure; run with the
    scripted engine, then given evidence rows and review columns as the trust layer will write them."""
    from pipeline.runner import run_job
    from tests.conftest import invoice_truth, write_pdf
    from tests.scripted_engine import ScriptedEngine

    inputs, out = root / "in", root / "out"
    inputs.mkdir(parents=True)
    flagged = invoice_truth(1)
    flagged["vendor"]["name"] = XSS
    files = {"flagged.png": _page_png(inputs / "flagged.png"), "clean.pdf": write_pdf(inputs / "clean.pdf", pages=2, text="Clean"),
             "garbled.png": _page_png(inputs / "garbled.png")}
    files["garbled.png"].write_bytes(files["garbled.png"].read_bytes() + b"\0")  # other bytes, another doc_id
    (inputs / "notes.pdf").write_text("a text file, not a PDF\n")
    ids = {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in files.items()}
    answers: dict[str, Any] = {ids["flagged.png"]: flagged, ids["clean.pdf"]: invoice_truth(2),
                               ids["garbled.png"]: "{\"invoice_number\": <b>oops</b>"}
    # the run's own evidence stage off: this fixture writes evidence rows it controls exactly
    run_job([str(inputs)], out, NO_EVIDENCE(), engine=ScriptedEngine(answers))
    rows = {r["doc_id"]: r for r in result_rows(out)}
    f, c = rows[ids["flagged.png"]], rows[ids["clean.pdf"]]
    write_evidence(out, [
        evidence(f, "invoice_number", 1, INVOICE_BOX, confidence=0.98),
        evidence(f, "total", 1, TOTAL_BOX, confidence=0.41, source="ocr"),
        evidence(f, "vendor.name", confidence=0.3),
        evidence(c, "invoice_number", 2, CLEAN_BOX),
        evidence(c, "vendor.name", 5, (0.1, 0.1, 0.2, 0.2)),  # a page that is not rendered: said, not drawn
    ])
    add_review_columns(out, {ids["flagged.png"]: REASONS})
    return Sample(inputs, out, ids, answers)
