"""Evidence per field (issue 13): grounding recall and box accuracy, review flags, AUROC, cost.

    .venv/bin/python bench/evidence.py [--quick]

1. Grounding, answers = the synth truth (what the truth-answering test engine answers), on
   - digital PDFs: words from the text layer (PyMuPDF ``get_text("words")``);
   - synthetic scans (PDF/TIFF/JPEG) and receipts (PNG, phone photos): words from RapidOCR (installed into
     the bench's venv; the production OCR path is the words stage's), each OCR line split into words with a
     proportional slice of its box.
   recall = values with a true box (synth truth ``boxes``) found by ``ground`` on a box that overlaps a true box;
   box accuracy = of the values found, the share whose box overlaps a true box.
2. sroie-dev (../shared/corpora): answered with their keys, words from box/*.csv (one row per printed line, split
   into words); merchant, date and total must be found on a line that holds them.
3. Review flags: a known 30% of documents (seeded) answered with one plausible wrong value (a total not printed on
   the page, or another document's vendor/shop name); needs_review must catch them and leave the right ones alone.
   AUROC of the field confidence for right vs wrong fields.
4. Cost: CPU seconds (this process + children) of run_job over digital PDFs with ``[evidence]`` on and off, in
   alternating rounds, words supplied in both; ground() CPU per document; OCR CPU per page of scans.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
import resource
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import CACHE, machine_line, quick_flag, table  # noqa: E402
from pipeline.config import EvidenceConfig  # noqa: E402
from pipeline.evaluate.normalize import parse_amount, parse_date  # noqa: E402
from pipeline.evidence import ground  # noqa: E402
from pipeline.evidence_norm import amounts_in, dates_in, fold  # noqa: E402
from pipeline.records import Page, Word, WordSource  # noqa: E402
from pipeline.trust import assess  # noqa: E402
from schemas import Invoice, Receipt  # noqa: E402

SROIE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "sroie-dev"
if not SROIE.is_dir():
    SROIE = Path("/work/shared/corpora/sroie-dev")
SCANS = {"pdf-scan", "tiff-scan", "jpeg-scan", "png-receipt", "jpeg-photo-receipt"}


# --------------------------------------------------------------------------- corpora and words


def synth_docs(name: str, count: int, seed: int, mix: dict[str, float]) -> list[dict[str, Any]]:
    """Generated once into the bench cache; rows of truth.jsonl with the path."""
    out = CACHE / f"evidence-{name}-{seed}-{count}"
    if not (out / "truth.jsonl").exists():
        from pipeline.synth import generate

        generate(out, count, seed=seed, mix=mix, workers=2)
    rows = [json.loads(x) for x in (out / "truth.jsonl").read_text(encoding="utf-8").splitlines()]
    for r in rows:
        r["path"] = out / r["file"]
    return rows


def _page(words: list[Word], index: int) -> Page:
    from PIL import Image

    return Page("bench", index, Image.new("RGB", (1, 1)), 1, 1, words)


def pdf_words(path: Path) -> list[list[Word]]:
    import pymupdf

    out = []
    with pymupdf.open(path) as doc:
        for pg in doc:
            w, h = pg.rect.width, pg.rect.height
            lines: dict[tuple[int, int], int] = {}
            out.append([Word(t, x0 / w, y0 / h, x1 / w, y1 / h, lines.setdefault((b, ln), len(lines)), WordSource.TEXT_LAYER)
                        for x0, y0, x1, y1, t, b, ln, _ in pg.get_text("words")])
    return out


def line_words(lines: list[tuple[float, float, float, float, str, float | None]], source: WordSource) -> list[Word]:
    """Printed lines (box in fractions, text) -> words, each with its proportional slice of the line's box."""
    out: list[Word] = []
    for n, (x0, y0, x1, y1, text, conf) in enumerate(lines):
        total = max(1, len(text))
        pos = 0
        for part in text.split(" "):
            if part:
                a, b = x0 + (x1 - x0) * pos / total, x0 + (x1 - x0) * (pos + len(part)) / total
                out.append(Word(part, a, y0, b, y1, n, source, conf))
            pos += len(part) + 1
    return out


_OCR: Any = None


def ocr_words(path: Path) -> tuple[list[list[Word]], float]:
    """RapidOCR words of every page (cached in the bench cache), and the OCR's CPU seconds."""
    cache = CACHE / "evidence-ocr" / (path.parent.name + "-" + path.name + ".json")
    if cache.exists():
        data = json.loads(cache.read_text())
    else:
        global _OCR
        from rapidocr import RapidOCR

        _OCR = _OCR or RapidOCR()
        data = {"pages": [], "cpu": 0.0}
        for img in _images(path):
            import numpy as np

            t0 = time.process_time()
            r = _OCR(np.asarray(img.convert("RGB")))
            data["cpu"] += time.process_time() - t0
            w, h = img.size
            lines = []
            for quad, text, score in zip(r.boxes if r.boxes is not None else [], r.txts or (), r.scores or (), strict=False):
                xs, ys = [p[0] for p in quad], [p[1] for p in quad]
                lines.append([float(min(xs)) / w, float(min(ys)) / h, float(max(xs)) / w, float(max(ys)) / h, text, float(score)])
            data["pages"].append(lines)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(data))
    return [line_words([tuple(x) for x in lines], WordSource.OCR) for lines in data["pages"]], data["cpu"]


def _images(path: Path) -> list[Any]:
    from PIL import Image, ImageSequence

    if path.suffix == ".pdf":
        import pymupdf

        with pymupdf.open(path) as doc:
            return [Image.frombytes("RGB", (p.width, p.height), p.samples)
                    for p in (pg.get_pixmap(dpi=150, alpha=False) for pg in doc)]
    with Image.open(path) as im:
        return [f.copy() for f in ImageSequence.Iterator(im)]


def words_of(doc: dict[str, Any]) -> tuple[list[Page], float]:
    per_page, cpu = (ocr_words(doc["path"]) if doc["variant"] in SCANS else (pdf_words(doc["path"]), 0.0))
    return [_page(w, i) for i, w in enumerate(per_page)], cpu


def model_of(doc: dict[str, Any]) -> Any:
    return (Invoice if doc["schema"] == "invoice" else Receipt).model_validate(doc["truth"])


# --------------------------------------------------------------------------- 1. grounding


def _overlap(a: Any, b: Any) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def grounding(docs: list[dict[str, Any]], pages: dict[str, list[Page]]) -> dict[str, float]:
    boxed = found = overlapping = grounded_any = 0
    cpu = 0.0
    for doc in docs:
        t0 = time.process_time()
        evs = ground(model_of(doc), pages[doc["file"]])
        cpu += time.process_time() - t0
        for ev in evs:
            true = doc["boxes"].get(ev.field)
            if not true or ev.value in (None, ""):
                continue
            boxed += 1
            if ev.grounded:
                found += 1
                if any(t["page"] == ev.page and _overlap(t["box"], ev.box) for t in true):
                    overlapping += 1
            grounded_any += bool(ev.grounded)
    return {"values": boxed, "recall": overlapping / max(1, boxed), "found": found / max(1, boxed),
            "box_accuracy": overlapping / max(1, found), "ground_cpu_ms_per_doc": 1000 * cpu / max(1, len(docs))}


# --------------------------------------------------------------------------- 2. sroie-dev


def sroie(ocr: bool = False) -> tuple[list[tuple[str, Any, list[Page], list[tuple[str, list[Any]]]]], dict[str, float]]:
    """(name, answer, pages, true lines per key field) per receipt, and the grounding figures.  ``ocr``: words from
    RapidOCR on the image instead of the dataset's own line transcriptions (the true lines still come from box/)."""
    from PIL import Image

    items = []
    hits = {"merchant": [0, 0], "date": [0, 0], "total": [0, 0]}
    for key_file in sorted((SROIE / "key").glob("*.json")):
        stem = key_file.stem
        key = json.loads(key_file.read_text())
        with Image.open(SROIE / "img" / f"{stem}.jpg") as im:
            w, h = im.size
        lines = []
        with open(SROIE / "box" / f"{stem}.csv", encoding="utf-8", errors="replace") as fh:
            for row in csv.reader(fh):
                if len(row) < 9:
                    continue
                xs, ys = [float(v) for v in row[0:8:2]], [float(v) for v in row[1:8:2]]
                lines.append((min(xs) / w, min(ys) / h, max(xs) / w, max(ys) / h, ",".join(row[8:]).strip(), None))
        answer = Receipt.model_validate({"merchant": key["company"], "address": key.get("address") or None,
                                         "date": parse_date(key["date"]), "total": parse_amount(key["total"])})
        pages = ([_page(ocr_words(SROIE / "img" / f"{stem}.jpg")[0][0], 0)] if ocr
                 else [_page(line_words(lines, WordSource.OCR), 0)])
        truth_lines = {
            "merchant": [ln[:4] for ln in lines if len(fold(ln[4])) >= 4 and fold(ln[4]) in fold(key["company"])
                         or fold(key["company"]) in fold(ln[4])],  # a line holding the name or a part of it
            "date": [ln[:4] for ln in lines if answer.date in dates_in(ln[4])],
            "total": [ln[:4] for ln in lines if answer.total is not None and any(
                abs(x - answer.total) < Decimal("0.005") for x in amounts_in(ln[4].replace(" ", "")) | _amounts_words(ln[4]))],
        }
        for ev in ground(answer, pages):
            if ev.field in hits:
                hits[ev.field][1] += 1
                hits[ev.field][0] += bool(ev.grounded and any(_overlap(t, ev.box) for t in truth_lines[ev.field]))
        items.append((stem, answer, pages, list(truth_lines.items())))
    return items, {f: a / max(1, n) for f, (a, n) in hits.items()} | {"receipts": len(items)}


def _amounts_words(text: str) -> set[Decimal]:
    return {a for w in text.split() for a in amounts_in(w)}


# --------------------------------------------------------------------------- 3. review flags


def auroc(pos: list[float], neg: list[float]) -> float:
    """P(a right field's confidence > a wrong field's), ties half (Mann-Whitney)."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _wrong(answer: Any, names: list[str], name_field: str, rng: random.Random, words: list[Page]) -> tuple[Any, str]:
    """One plausible wrong value: a total that is not printed on the page, or another document's name."""
    data = answer.model_dump(mode="json")
    printed = {a for p in words for w in (p.words or []) for a in amounts_in(w.text)}
    if rng.random() < 0.5:
        total = Decimal(data["total"])
        for k in range(1, 50):
            cand = (total * Decimal(1 + 0.07 * k) + Decimal("0.30")).quantize(Decimal("0.01"))
            if cand not in printed:
                break
        data["total"] = str(cand)
        if data.get("subtotal") is not None and data.get("tax") is not None:  # keep the business rules true
            data["tax"] = str(Decimal(data["tax"]) + cand - total)
        return type(answer).model_validate(data), "total"
    mine = _get(data, name_field)
    other = rng.choice([n for n in names if fold(n) != fold(mine)])
    _set(data, name_field, other)
    return type(answer).model_validate(data), name_field


def _get(data: dict[str, Any], path: str) -> Any:
    for p in path.split("."):
        data = data[p]
    return data


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *head, last = path.split(".")
    for p in head:
        data = data[p]
    data[last] = value


def review(cases: list[tuple[Any, list[Page]]], name_field: str, names: list[str], seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    wrong_idx = set(rng.sample(range(len(cases)), max(1, round(0.3 * len(cases)))))
    caught = flagged_ok = 0
    right_conf: list[float] = []
    wrong_conf: list[float] = []
    cfg = EvidenceConfig()
    for i, (answer, pages) in enumerate(cases):
        bad_field = None
        if i in wrong_idx:
            answer, bad_field = _wrong(answer, names, name_field, rng, pages)
        a = assess(answer, pages, cfg)
        for ev in a.evidence:
            if ev.value is None:
                continue
            (wrong_conf if ev.field == bad_field else right_conf).append(ev.confidence)
        if bad_field is not None:
            caught += a.needs_review
        else:
            flagged_ok += a.needs_review
    n_wrong = len(wrong_idx)
    return {"docs": len(cases), "wrong": n_wrong, "caught": caught / n_wrong,
            "false_flags": flagged_ok / max(1, len(cases) - n_wrong), "auroc": auroc(right_conf, wrong_conf)}


# --------------------------------------------------------------------------- 4. cost


def cpu_now() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class _WordsStream:
    def __init__(self, inner: Any):
        self.inner = inner

    def __iter__(self) -> Any:
        for doc, out in self.inner:
            if hasattr(out, "pages"):
                for p, words in zip(out.pages, pdf_words(Path(doc.path)), strict=False):
                    p.words = words
            yield doc, out

    def wait_started(self) -> None:
        self.inner.wait_started()

    def close(self) -> None:
        self.inner.close()


class _WordsSource:
    """Bench-only: the local source with text-layer words put on its pages (the words stage does this in production)."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def rasterize(self, docs: Any) -> _WordsStream:
        return _WordsStream(self.inner.rasterize(docs))


def run_cost(docs: list[dict[str, Any]], rounds: int) -> dict[str, float]:
    import hashlib

    from bench._common import job_config
    from pipeline.backends import local_backend
    from pipeline.runner import run_job
    from tests.scripted_engine import ScriptedEngine

    answers = {hashlib.sha256(d["path"].read_bytes()).hexdigest(): d["truth"] for d in docs}
    inputs = sorted({str(d["path"].parent) for d in docs})
    cpu: dict[bool, list[float]] = {True: [], False: []}
    result_cpu: list[float] = []
    for r in range(rounds + 1):  # round 0 warms up (imports, caches) and is not counted
        for enabled in ((True, False) if r % 2 == 0 else (False, True)):
            cfg = job_config(**{"evidence.enabled": enabled, "run.batch_size": 32, "schema": "invoice",
                                "rasterize.workers": 1})  # in process: every CPU second is this process's
            with tempfile.TemporaryDirectory() as out:
                backend = local_backend(cfg, out, engine=ScriptedEngine(answers, record=False))
                backend.source = _WordsSource(backend.source)
                t0 = cpu_now()
                s = run_job(inputs, out, cfg, backend=backend, handle_signals=False)
                if r == 0:
                    continue
                cpu[enabled].append(cpu_now() - t0)
                if enabled:
                    result_cpu.append(s.timings.get("result_cpu", 0.0))
    on, off = sorted(cpu[True])[len(cpu[True]) // 2], sorted(cpu[False])[len(cpu[False]) // 2]
    return {"docs": len(docs), "cpu_off_s": off, "cpu_on_s": on, "added": on / off - 1,
            "result_cpu_s": sorted(result_cpu)[len(result_cpu) // 2]}


# --------------------------------------------------------------------------- main


def main() -> None:
    args = quick_flag(__doc__ or "")
    n_dig, n_scan, n_rec, rounds = (12, 4, 6, 1) if args.quick else (60, 24, 30, 3)
    print(machine_line())
    digital = synth_docs("digital", n_dig, 7, {"pdf-digital": 1})
    scans = synth_docs("scans", n_scan, 7, {"pdf-scan": 1, "tiff-scan": 1, "jpeg-scan": 1})
    receipts = synth_docs("receipts", n_rec, 7, {"png-receipt": 1, "jpeg-photo-receipt": 1})
    pages: dict[str, list[Page]] = {}
    ocr_cpu = ocr_pages = 0.0
    t0 = time.process_time()
    for d in digital:
        pages[d["file"]], _ = words_of(d)
    text_layer_cpu = time.process_time() - t0
    for d in scans + receipts:
        pages[d["file"]], c = words_of(d)
        ocr_cpu, ocr_pages = ocr_cpu + c, ocr_pages + len(pages[d["file"]])
    rows = []
    for label, docs in (("synth digital PDFs", digital), ("synth scans (pdf/tiff/jpeg)", scans),
                        ("synth receipts (png + photo)", receipts),
                        ("  of which photos", [d for d in receipts if d["variant"] == "jpeg-photo-receipt"])):
        g = grounding(docs, pages)
        rows.append([label, len(docs), g["values"], g["recall"], g["found"], g["box_accuracy"], g["ground_cpu_ms_per_doc"]])
    print("\n1. grounding of truth answers (recall: found on a box that overlaps a true box)")
    print(table(rows, ["corpus", "docs", "values", "recall", "found", "box acc", "ground ms/doc"]))
    items, hits = sroie()
    print(f"\n2. sroie-dev ({hits.pop('receipts'):.0f} receipts, key answers, words from box/*.csv lines)")
    ocr_items, ocr_hits = sroie(ocr=True)
    ocr_hits.pop("receipts")
    print(table([[f, v, ocr_hits[f]] for f, v in hits.items()], ["field", "on its line (box/ words)", "(RapidOCR words)"]))
    print("\n3. review flags (30% of documents with one wrong value)")
    inv = [(model_of(d), pages[d["file"]]) for d in digital]
    scanned = [(model_of(d), pages[d["file"]]) for d in scans]
    rec = [(model_of(d), pages[d["file"]]) for d in receipts]
    rows = []
    for label, cases, field, names in (
        ("synth digital invoices", inv, "vendor.name", [m.vendor.name for m, _ in inv + scanned]),
        ("synth scanned invoices", scanned, "vendor.name", [m.vendor.name for m, _ in inv + scanned]),
        ("synth receipts", rec, "merchant", [m.merchant for m, _ in rec]),
        ("sroie-dev (box/ words)", [(a, p) for _, a, p, _ in items], "merchant", [a.merchant for _, a, _, _ in items]),
        ("sroie-dev (RapidOCR)", [(a, p) for _, a, p, _ in ocr_items], "merchant", [a.merchant for _, a, _, _ in items]),
    ):
        r = review(cases, field, names, seed=13)
        rows.append([label, r["docs"], r["wrong"], r["caught"], r["false_flags"], r["auroc"]])
    print(table(rows, ["corpus", "docs", "wrong", "caught", "false flags", "AUROC conf"]))
    print("\n4. cost")
    c = run_cost(digital, rounds)
    print(table([["digital PDFs, run_job CPU s (median)", c["docs"], c["cpu_off_s"], c["cpu_on_s"], f"{100 * c['added']:+.1f}%"]],
                ["what", "docs", "evidence off", "evidence on", "added"]))
    print(f"   RowBuilder.result thread CPU with evidence: {c['result_cpu_s']:.2f} s; text-layer words (get_text) "
          f"{1000 * text_layer_cpu / max(1, len(digital)):.1f} ms/doc (words stage, not in either arm's difference)")
    if ocr_pages:
        print(f"   OCR (RapidOCR, 150 dpi renders): {ocr_cpu / ocr_pages:.2f} CPU s/page over {ocr_pages:.0f} pages"
              " (cached between bench runs; figure from the first run)")
    print(f"done {dt.datetime.now():%H:%M}")


if __name__ == "__main__":
    main()
