"""Rasterizing throughput: ours (PyMuPDF + direct JPEG scans) vs pypdfium2 vs poppler's pdftoppm (olmOCR's way).

Same PDF pages, same output size for every method (ours computes it with ``fit_to_grid``; the baselines
are handed exactly that size, longest side 1288 px on A4), every page ends as a PIL RGB image in the
calling process (ours' pool passes pixels through shared memory, pypdfium2's ``Pool`` pickles them).
Process-pool start-up is inside the timings of both ours and the baselines, except the "warm" variants:
their pool is started and every worker has rendered once before the clock starts (steady state).

    .venv/bin/python bench/raster.py [--quick]
"""

from __future__ import annotations

import math
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import PDF_VARIANTS, CorpusDoc, corpus, documents, machine_line, quick_flag, table
from PIL import Image

from pipeline.rasterize import RasterSettings, fit_to_grid, rasterize
from pipeline.records import Document
from pipeline.workers import RasterPool, default_memory_limit, rasterize_stream

LONGEST = 1288
DPI = 150
Size = tuple[int, int]


def settings_for_longest(longest: int = LONGEST, dpi: int = DPI, page_pt: Size = (595, 842)) -> RasterSettings:
    """The smallest ``max_pixels`` for which an A4 page comes out with its longest side = ``longest``."""
    w, h = page_pt[0] * dpi / 72, page_pt[1] * dpi / 72
    mp_ = math.ceil(longest**2 * w / h)
    while max(fit_to_grid(w, h, 3136, mp_)) < longest:
        mp_ += 100
    return RasterSettings(dpi=dpi, max_pixels=mp_)


def page_targets(paths: Sequence[Path], s: RasterSettings) -> dict[str, list[Size]]:
    """Per PDF, the (width, height) ours produces for each kept page (computed the way ours does)."""
    import pymupdf

    out: dict[str, list[Size]] = {}
    for p in paths:
        with pymupdf.open(p) as pdf:
            sizes = []
            for i in range(min(pdf.page_count, s.max_pages)):
                r = pdf.load_page(i).rect
                sizes.append(fit_to_grid(r.width * s.dpi / 72, r.height * s.dpi / 72, s.min_pixels, s.max_pixels))
            out[str(p)] = sizes
    return out


# --------------------------------------------------------------------------- ours


def ours_loop(docs: Sequence[Document], s: RasterSettings) -> list[list[Size]]:
    return [[pg.image.size for pg in rasterize(d, s).pages] for d in docs]


def ours_stream(docs: Sequence[Document], s: RasterSettings, workers: int) -> list[list[Size]]:
    got: dict[str, list[Size]] = {}  # the pool yields in completion order
    for doc, r in rasterize_stream(docs, s, workers=workers, memory_limit_bytes=default_memory_limit()):
        assert not isinstance(r, Exception), r
        got[doc.doc_id] = [pg.image.size for pg in r.pages]
    return [got[d.doc_id] for d in docs]


def ours_pool1(docs: Sequence[Document], s: RasterSettings) -> list[list[Size]]:
    """One worker process (``rasterize_stream(workers=1)`` runs in-process; this isolates the IPC cost)."""
    return ours_pool(docs, s, 1, warm=False)


def ours_pool(docs: Sequence[Document], s: RasterSettings, workers: int, warm: bool) -> list[list[Size]]:
    """``RasterPool`` with ``workers`` processes.  ``warm``: the pool is started and every worker has
    rendered one page (so imported PyMuPDF, ~0.6 s) before the clock starts: steady-state scaling, as in
    a long run, where the pool starts while the model loads."""
    got: dict[str, list[Size]] = {}
    with RasterPool(s, workers, memory_limit_bytes=default_memory_limit()) as pool:
        t0 = time.perf_counter()
        if warm:
            list(pool.imap(list(docs[:1]) * (workers * 2)))
            WARMUP.append(time.perf_counter() - t0)
        for doc, r in pool.imap(docs):
            assert not isinstance(r, Exception), r
            got[doc.doc_id] = [pg.image.size for pg in r.pages]
    return [got[d.doc_id] for d in docs]


WARMUP: list[float] = []  # seconds spent warming pools, subtracted from their timings


# --------------------------------------------------------------------------- pypdfium2


def pdfium_doc(job: tuple[str, list[Size]]) -> list[Image.Image]:
    """Render each page straight to its target size (non-uniform scale, like ours) -> PIL RGB."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as c

    path, sizes = job
    pdf = pdfium.PdfDocument(path)
    try:
        out = []
        for i, (tw, th) in enumerate(sizes):
            page = pdf[i]
            bm = pdfium.PdfBitmap.new_native(tw, th, c.FPDFBitmap_BGR, rev_byteorder=True)
            bm.fill_rect((255, 255, 255, 255), 0, 0, tw, th)
            c.FPDF_RenderPageBitmap(bm, page, 0, 0, tw, th, 0, c.FPDF_ANNOT | c.FPDF_REVERSE_BYTE_ORDER)
            img = bm.to_pil()
            out.append(img.convert("RGB") if img.mode != "RGB" else img.copy())
            page.close()
        return out
    finally:
        pdf.close()


def pdfium_run(jobs: list[tuple[str, list[Size]]], procs: int, warm: bool = False) -> list[list[Size]]:
    if procs <= 1:
        return [[im.size for im in pdfium_doc(j)] for j in jobs]
    with mp.get_context("forkserver").Pool(procs) as pool:
        if warm:
            t0 = time.perf_counter()
            pool.map(pdfium_doc, jobs[:1] * (procs * 2), chunksize=1)
            WARMUP.append(time.perf_counter() - t0)
        return [[im.size for im in ims] for ims in pool.imap(pdfium_doc, jobs)]


# --------------------------------------------------------------------------- pdftoppm


def pdftoppm_page(job: tuple[str, int, Size], tmp: str, fmt: str = "png") -> Image.Image:
    """olmOCR's call (``pdftoppm -png -scale-to 1288 -f N -l N file out``) with the short side pinned to ours.

    ``fmt="ppm"`` drops ``-png`` (raw PPM output): shows how much of poppler's time is PNG encoding.
    """
    path, i, (tw, th) = job
    root = f"{tmp}/{uuid.uuid4().hex}"
    cmd = ["pdftoppm", *(["-png"] if fmt == "png" else []), "-scale-to-x", str(tw), "-scale-to-y", str(th), "-f", str(i + 1), "-l", str(i + 1),
           "-singlefile", path, root]
    subprocess.run(cmd, check=True, capture_output=True)
    png = Path(root + "." + fmt)
    with Image.open(png) as im:
        img = im.convert("RGB")
    png.unlink()
    return img


def pdftoppm_run(jobs: list[tuple[str, list[Size]]], procs: int, fmt: str = "png") -> list[list[Size]]:
    pages = [(p, i, sz) for p, sizes in jobs for i, sz in enumerate(sizes)]
    tmp = tempfile.mkdtemp(prefix="bench-pdftoppm-")
    try:
        if procs <= 1:
            sizes = [pdftoppm_page(j, tmp, fmt).size for j in pages]
        else:
            with ThreadPoolExecutor(procs) as ex:
                sizes = [im.size for im in ex.map(lambda j: pdftoppm_page(j, tmp, fmt), pages)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out, k = [], 0
    for _, s in jobs:
        out.append(sizes[k : k + len(s)])
        k += len(s)
    return out


# --------------------------------------------------------------------------- driver


def timed(fn: Callable[[], list[list[Size]]], expect: list[list[Size]] | None) -> tuple[float, int]:
    WARMUP.clear()
    t0 = time.perf_counter()
    got = fn()
    dt = time.perf_counter() - t0 - sum(WARMUP)
    if expect is not None and got != expect:
        bad = next(i for i, (a, b) in enumerate(zip(got, expect)) if a != b)
        raise AssertionError(f"output sizes differ from ours at document {bad}: {got[bad]} vs {expect[bad]}")
    return dt, sum(len(x) for x in got)


def main() -> None:
    args = quick_flag(__doc__ or "")
    s = settings_for_longest()
    docs_all = corpus(640)
    pdfs: dict[str, list[CorpusDoc]] = {v: [d for d in docs_all if d.variant == v] for v in PDF_VARIANTS}
    if args.quick:
        pdfs = {v: ds[:20] for v, ds in pdfs.items()}
    label = {"pdf-digital": "digital", "pdf-scan": "scanned"}
    print(machine_line())
    print(f"settings: dpi={s.dpi} max_pixels={s.max_pixels:,} -> A4 {fit_to_grid(595*s.dpi/72, 842*s.dpi/72, 3136, s.max_pixels)}, "
          f"Letter {fit_to_grid(612*s.dpi/72, 792*s.dpi/72, 3136, s.max_pixels)} (w, h)")

    sub = 8 if args.quick else 60  # pdftoppm is slow on scans (~1.8 s/page): it gets a leading subset of pages
    Fn = Callable[[list[Document], list[tuple[str, list[Size]]]], list[list[Size]]]
    methods: list[tuple[str, Fn, int | None]] = [
        ("ours rasterize() loop, in-process", lambda d, j: ours_loop(d, s), None),
        ("ours rasterize_stream w=1 (in-process)", lambda d, j: ours_stream(d, s, 1), None),
        ("ours RasterPool 1 worker process", lambda d, j: ours_pool1(d, s), None),
        ("ours rasterize_stream w=2 (2 procs)", lambda d, j: ours_stream(d, s, 2), None),
        ("ours RasterPool 1 worker, warm", lambda d, j: ours_pool(d, s, 1, warm=True), None),
        ("ours RasterPool 2 workers, warm", lambda d, j: ours_pool(d, s, 2, warm=True), None),
        ("pypdfium2 1 proc", lambda d, j: pdfium_run(j, 1), None),
        ("pypdfium2 2 procs", lambda d, j: pdfium_run(j, 2), None),
        ("pypdfium2 2 procs, warm", lambda d, j: pdfium_run(j, 2, warm=True), None),
        ("pdftoppm 1 at a time", lambda d, j: pdftoppm_run(j, 1), sub),
        ("pdftoppm 2 concurrent", lambda d, j: pdftoppm_run(j, 2), sub),
        ("pdftoppm -ppm (no PNG) 1 at a time", lambda d, j: pdftoppm_run(j, 1, "ppm"), sub),
    ]
    results: dict[tuple[str, str], tuple[float, int]] = {}
    full_pages: dict[str, int] = {}
    for variant, cds in pdfs.items():
        paths = [d.path for d in cds]
        docs = documents(paths)
        targets = page_targets(paths, s)
        jobs = [(str(p), targets[str(p)]) for p in paths]
        expect = [targets[str(p)] for p in paths]
        full_pages[variant] = sum(len(e) for e in expect)
        ours_loop(docs[:2], s), pdfium_run(jobs[:2], 1), pdftoppm_run(jobs[:1], 1)  # warm imports and caches
        for name, fn, limit in methods:
            k = len(docs)
            if limit is not None:
                k = next((i + 1 for i in range(len(expect)) if sum(len(e) for e in expect[: i + 1]) >= limit), len(docs))
            results[(name, variant)] = timed(lambda: fn(docs[:k], jobs[:k]), expect[:k])
            dt, n = results[(name, variant)]
            print(f"  [{label[variant]:7}] {name:40} {n:4d} pages {dt:7.2f}s {n / dt:7.1f} pages/s", file=sys.stderr)

    def pps(name: str, variant: str | None = None) -> float:
        """Pages/s of one kind; overall = all pages / (sum over kinds of pages_k / rate_k)."""
        if variant:
            return results[(name, variant)][1] / results[(name, variant)][0]
        return sum(full_pages.values()) / sum(full_pages[v] / pps(name, v) for v in pdfs)

    kinds = [*pdfs, None]
    rows = [[name, *(round(pps(name, v), 1) for v in kinds), "all" if lim is None else f"first {lim}/kind"]
            for name, _, lim in methods]
    print(f"\nPDF pages/s (pages: digital {full_pages['pdf-digital']}, scanned {full_pages['pdf-scan']}; "
          "overall = all pages / time estimated from the per-kind rates)")
    print(table(rows, ["method", "digital", "scanned", "overall", "pages timed"]))

    ratio_defs = [
        ("ours/pypdfium2, 1 proc", "ours rasterize() loop, in-process", "pypdfium2 1 proc"),
        ("ours/pypdfium2, 2 procs", "ours rasterize_stream w=2 (2 procs)", "pypdfium2 2 procs"),
        ("ours/pdftoppm, 1 proc", "ours rasterize() loop, in-process", "pdftoppm 1 at a time"),
        ("ours/pdftoppm, 2 procs", "ours rasterize_stream w=2 (2 procs)", "pdftoppm 2 concurrent"),
        ("ours 2-proc / in-process", "ours rasterize_stream w=2 (2 procs)", "ours rasterize_stream w=1 (in-process)"),
        ("ours 2-proc / 1 worker process", "ours rasterize_stream w=2 (2 procs)", "ours RasterPool 1 worker process"),
        ("ours 1 worker process / in-process", "ours RasterPool 1 worker process", "ours rasterize_stream w=1 (in-process)"),
        ("warm: ours 2 workers / 1 worker", "ours RasterPool 2 workers, warm", "ours RasterPool 1 worker, warm"),
        ("warm: ours 2 workers / in-process", "ours RasterPool 2 workers, warm", "ours rasterize_stream w=1 (in-process)"),
        ("warm: ours/pypdfium2, 2 procs", "ours RasterPool 2 workers, warm", "pypdfium2 2 procs, warm"),
    ]
    print("\nratios (pages/s over pages/s)")
    print(table([[lbl, *(round(pps(a, v) / pps(b, v), 2) for v in kinds)] for lbl, a, b in ratio_defs],
                ["ratio", "digital", "scanned", "overall"]))

    # Images (ours only): TIFF/JPEG scans, PNG receipts, JPEG phone photos.
    img_rows = []
    for variant in ("tiff-scan", "jpeg-scan", "png-receipt", "jpeg-photo-receipt"):
        cds = [d for d in docs_all if d.variant == variant][: 12 if args.quick else None]
        docs = documents([d.path for d in cds])
        ours_loop(docs[:1], s)
        dt, n = timed(lambda: ours_loop(docs, s), None)
        img_rows.append([variant, n, round(dt, 2), round(n / dt, 1)])
    print("\nimages, ours only (rasterize() loop, in-process, same settings)")
    print(table(img_rows, ["variant", "pages", "seconds", "pages/s"]))


if __name__ == "__main__":
    main()
