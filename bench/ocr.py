"""OCR candidates on real receipts, and what words cost the rasterizer.

``quality``: the 40 real receipt scans of ``../shared/corpora/sroie-dev`` (half are phone-size slips of
~1 Mpx, half are A4 scans at 600 dpi, 35 Mpx, with the slip in the middle).  Each candidate reads
the page image the pipeline already has (``rasterize_bytes`` with the default settings, ~1 Mpx) and,
as ``@2000``, the same scan decoded with its longest side at 2000 px (RapidOCR's own working limit).
Per candidate:

- word recall: the printed lines of ``box/*.csv`` split into words, each word upper-cased with
  accents, punctuation and spaces removed; the share of them (as a multiset) among the OCR words;
- key recall: ``key/*.json``'s company / date / total, normalised the same way, found in the OCR
  text of the page (all words joined in reading order, normalised);
- box agreement: of the truth words found, the share whose OCR word (the nearest with that text)
  has its centre inside the truth line's box (padded by a quarter of the line height);
- CPU seconds per page (this process and its children, e.g. the tesseract binary) and wall seconds,
  one thread (``OMP_NUM_THREADS=1``, onnxruntime intra-op threads = 1); pages/s on one core = 1 / CPU s.

Candidates: ``rapidocr`` (package rapidocr 3.x, PP-OCRv6 small models in the wheel, through
``pipeline.ocr``), ``rapidocr-v4`` (the older package rapidocr-onnxruntime 1.4.4, PP-OCRv4 models;
only when importable, e.g. ``pip install --no-deps --target DIR rapidocr-onnxruntime==1.4.4`` and
``--v4-path DIR``), ``tesseract`` (Debian's tesseract-ocr 5 through pytesseract, ``--psm 4`` and ``--psm 3``).

``cost``: CPU seconds per page of ``rasterize_bytes`` with words off vs on (``ocr = "auto"``), on
synthetic digital PDFs (text layer words), real PDFs of ``../shared/corpora/pdf-dev`` and the receipt
scans (OCR); rounds alternate off/on.

    .venv/bin/python bench/ocr.py [--only quality|cost] [--quick] [--v4-path DIR] [--psm3] [--hires-all]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # tesseract

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import REPO, corpus, documents, machine_line, table  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.rasterize import RasterSettings, rasterize_bytes  # noqa: E402
from pipeline.records import Word, WordSource  # noqa: E402

SROIE = REPO.parent / "shared" / "corpora" / "sroie-dev"
PDF_DEV = REPO.parent / "shared" / "corpora" / "pdf-dev"
HIRES = 2000

OcrFunc = Callable[[Image.Image], list[Word]]


def norm(s: str) -> str:
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if c.isalnum() and not unicodedata.combining(c)).upper()


def cpu_now() -> float:
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


# --------------------------------------------------------------------------- candidates


def rapidocr_func() -> OcrFunc:
    from pipeline.ocr import RapidOcr

    return RapidOcr(threads=1).words


def rapidocr_v4_func(path: str) -> OcrFunc | None:
    sys.path.insert(0, path)
    try:
        from rapidocr_onnxruntime import RapidOCR  # type: ignore[import-not-found]
    except ImportError as e:
        print(f"[bench] rapidocr-v4 skipped: {e}", file=sys.stderr)
        return None
    from pipeline.ocr import _rect, to_words

    eng = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)

    def run(img: Image.Image) -> list[Word]:
        import numpy as np

        res, _ = eng(np.asarray(img)[:, :, ::-1])
        pieces = [[(t, float(s), _rect(q)) for t in str(text).split()] for q, text, s in (res or [])]
        return to_words([p for p in pieces if p], img.width, img.height)

    return run


def tesseract_func(psm: int) -> OcrFunc | None:
    try:
        import pytesseract  # type: ignore[import-untyped]

        pytesseract.get_tesseract_version()
    except Exception as e:  # noqa: BLE001
        print(f"[bench] tesseract skipped: {e}", file=sys.stderr)
        return None

    def run(img: Image.Image) -> list[Word]:
        d = pytesseract.image_to_data(img, config=f"--psm {psm}", output_type=pytesseract.Output.DICT)
        out, lines = [], {}
        for i, text in enumerate(d["text"]):
            if not text.strip() or float(d["conf"][i]) < 0:
                continue
            key = (d["block_num"][i], d["par_num"][i], d["line_num"][i])
            lid = lines.setdefault(key, len(lines))
            x, y, w, h = d["left"][i], d["top"][i], d["width"][i], d["height"][i]
            out.append(Word(text, x / img.width, y / img.height, (x + w) / img.width, (y + h) / img.height, lid,
                            WordSource.OCR, float(d["conf"][i]) / 100))
        return out

    return run


# --------------------------------------------------------------------------- quality


def load_receipt(stem: str) -> tuple[bytes, list[tuple[str, tuple[float, float, float, float]]], dict[str, str]]:
    data = (SROIE / "img" / f"{stem}.jpg").read_bytes()
    w, h = Image.open(SROIE / "img" / f"{stem}.jpg").size
    lines = []
    with open(SROIE / "box" / f"{stem}.csv", encoding="utf-8", errors="replace") as f:
        for row in csv.reader(f):
            if len(row) < 9:
                continue
            xs, ys = [float(v) for v in row[0:8:2]], [float(v) for v in row[1:8:2]]
            lines.append((",".join(row[8:]), (min(xs) / w, min(ys) / h, max(xs) / w, max(ys) / h)))
    key = json.loads((SROIE / "key" / f"{stem}.json").read_text(encoding="utf-8", errors="replace"))
    return data, lines, key


def hires(data: bytes, longest: int = HIRES) -> Image.Image:
    import io

    from PIL import ImageOps

    img = Image.open(io.BytesIO(data))
    scale = longest / max(img.size)
    if scale < 1:
        img.draft("RGB", (round(img.width * scale), round(img.height * scale)))
    img = ImageOps.exif_transpose(img).convert("RGB")
    if max(img.size) > longest:
        img.thumbnail((longest, longest), Image.Resampling.BICUBIC)
    return img


def score(words: list[Word], lines: list[tuple[str, tuple[float, float, float, float]]], key: dict[str, str]) -> dict[str, float]:
    ocr = [(norm(w.text), w) for w in words]
    ocr = [(t, w) for t, w in ocr if t]
    have = Counter(t for t, _ in ocr)
    truth = Counter(t for text, _ in lines for t in map(norm, text.split()) if t)
    found = sum((truth & have).values())
    joined = "".join(t for t, _ in ocr)
    keys = {k: float(bool(norm(key.get(k, ""))) and norm(key.get(k, "")) in joined) for k in ("company", "date", "total")}
    inside = matched = 0
    by_text: dict[str, list[Word]] = {}
    for t, w in ocr:
        by_text.setdefault(t, []).append(w)
    for text, (x0, y0, x1, y1) in lines:
        pad = (y1 - y0) / 4
        for t in filter(None, map(norm, text.split())):
            cands = by_text.get(t)
            if not cands:
                continue
            cy = (y0 + y1) / 2
            best = min(cands, key=lambda w: abs((w.y0 + w.y1) / 2 - cy) + max(0.0, x0 - (w.x0 + w.x1) / 2, (w.x0 + w.x1) / 2 - x1))
            matched += 1
            mx, my = (best.x0 + best.x1) / 2, (best.y0 + best.y1) / 2
            inside += x0 - pad <= mx <= x1 + pad and y0 - pad <= my <= y1 + pad
    return {"truth": sum(truth.values()), "found": found, "matched": matched, "inside": inside, **keys}


def quality(args: argparse.Namespace) -> None:
    stems = sorted(p.stem for p in (SROIE / "img").glob("*.jpg"))
    if args.quick:
        stems = stems[:3] + stems[-3:]
    cands: dict[str, OcrFunc] = {}
    cands["rapidocr"] = rapidocr_func()
    if args.v4_path and (f := rapidocr_v4_func(args.v4_path)):
        cands["rapidocr-v4"] = f
    for psm in (4, 3) if args.psm3 else (4,):
        if f := tesseract_func(psm):
            cands[f"tesseract-psm{psm}"] = f
    variants = [(name, size) for name in cands for size in ("pipeline", "@2000")]
    if not args.hires_all:
        variants = [v for v in variants if v[1] == "pipeline" or v[0] in ("rapidocr", "tesseract-psm4")]
    from pipeline.records import DocKind, Document

    totals: dict[tuple[str, str], Counter[str]] = {v: Counter() for v in variants}
    cpu: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    wall: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    for n, stem in enumerate(stems):
        data, lines, key = load_receipt(stem)
        page = rasterize_bytes(Document("x", stem, DocKind.JPEG, len(data)), data, RasterSettings()).pages[0]
        big = hires(data)
        order = variants[n % len(variants):] + variants[: n % len(variants)]  # rotate who goes first
        for name, size in order:
            img = page.image if size == "pipeline" else big
            c0, w0 = cpu_now(), time.perf_counter()
            words = cands[name](img)
            cpu[(name, size)].append(cpu_now() - c0)
            wall[(name, size)].append(time.perf_counter() - w0)
            totals[(name, size)].update(score(words, lines, key))
        print(f"[bench] {stem} ({page.image.size[0]}x{page.image.size[1]} / {big.size[0]}x{big.size[1]}) done", file=sys.stderr)
    rows = []
    for v in variants:
        t = totals[v]
        k = len(stems)
        rows.append([f"{v[0]} {v[1]}", f"{t['found'] / t['truth']:.1%}", f"{t['company'] / k:.0%}", f"{t['date'] / k:.0%}",
                     f"{t['total'] / k:.0%}", f"{t['inside'] / max(t['matched'], 1):.1%}", sum(cpu[v]) / k,
                     statistics.median(cpu[v]), k / sum(cpu[v]), sum(wall[v]) / k])
    print(machine_line())
    print(f"{len(stems)} receipts, {sum(totals[variants[0]]['truth'] for _ in [0])} truth words")
    print(table(rows, ["candidate / image", "word recall", "company", "date", "total", "box agree",
                       "CPU s/page", "median CPU s", "pages/s/core", "wall s/page"]))


# --------------------------------------------------------------------------- cost


def cost(args: argparse.Namespace) -> None:
    """CPU s per page, words off vs on, alternating rounds, on three sets: digital PDFs (text layer only: the
    real ones are the pdf-dev files whose every kept page is printed text), scans (OCR on every page)."""
    import pymupdf

    from pipeline.words import text_layer

    synth = corpus(24 if args.quick else 60, seed=7, mix={"pdf-digital": 1.0}, name="digital")
    real = []
    for p in sorted(PDF_DEV.glob("*.pdf")):
        try:
            pdf = pymupdf.open(p)
            if not pdf.needs_pass and all(text_layer(pdf[i]).usable for i in range(min(pdf.page_count, 8))):
                real.append(p)
        except Exception:  # noqa: BLE001 - the empty file
            continue
    scans = sorted((SROIE / "img").glob("*.jpg"))
    scans = scans[:3] + scans[20:23] if args.quick else scans[:6] + scans[20:26]  # slips and A4 scans alike
    sets = {"synth digital PDFs": [d.path for d in synth], "real digital PDFs (pdf-dev)": real, "receipt scans (jpg)": scans}
    rounds = 2 if args.quick else 3
    from pipeline.ocr import engine

    engine().words(Image.new("RGB", (200, 100), "white"))  # model load: once per worker process, not per page
    settings = {"off": RasterSettings(), "on": RasterSettings(words=True, ocr="auto")}
    rows = []
    for label, paths in sets.items():
        docs = [(d, Path(d.path).read_bytes()) for d in documents(paths)]
        res: dict[str, list[float]] = {"off": [], "on": []}
        pages = ocr_pages = 0
        for r in range(rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                c0 = cpu_now()
                n = o = 0
                for d, data in docs:
                    out = rasterize_bytes(d, data, settings[mode])
                    n += len(out.pages)
                    o += sum(1 for p in out.pages if p.words and p.words[0].source is WordSource.OCR)
                res[mode].append((cpu_now() - c0) / max(n, 1))
                if mode == "on":
                    pages, ocr_pages = n, o
            print(f"[bench] {label}: round {r + 1} done", file=sys.stderr)
        a, b = statistics.median(res["off"]), statistics.median(res["on"])
        rows.append([label, len(docs), pages, ocr_pages, a * 1000, b * 1000, (b - a) * 1000, b / a])
    print(machine_line())
    print(table(rows, ["set", "docs", "pages", "OCR pages", "off ms/page", "on ms/page", "added ms/page", "on/off"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["quality", "cost"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--v4-path", help="a folder holding rapidocr_onnxruntime (pip install --no-deps --target)")
    ap.add_argument("--psm3", action="store_true", help="tesseract --psm 3 as well")
    ap.add_argument("--hires-all", action="store_true", help="every candidate on the 2000 px image too")
    args = ap.parse_args()
    if args.only in (None, "quality"):
        quality(args)
    if args.only in (None, "cost"):
        cost(args)


if __name__ == "__main__":
    main()
