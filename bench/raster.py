"""Rasterizing throughput: ours vs pypdfium2 vs PyMuPDF vs poppler's pdftoppm (olmOCR's way).

Two corpora.  ``real``: the 52 real-world PDFs of ``../shared/corpora/pdf-dev`` (the files ours can
rasterize: not the empty or password-protected one), first 8 pages each, default settings (~1 Mpx pages),
ours against bare pypdfium2 and bare PyMuPDF, in one process and in two; rounds alternate the methods
and the figures are each method's median round.  ``synth``: the synthetic digital and scanned PDFs
(flatters PyMuPDF: its generator writes them with PyMuPDF) against pypdfium2 and pdftoppm.

Same PDF pages, same output size for every method (ours computes it with ``fit_to_grid``; the baselines
are handed exactly that size, longest side 1288 px on A4), every page ends as a PIL RGB image in the
calling process (ours' pool passes pixels through shared memory, pypdfium2's ``Pool`` pickles them).
Process-pool start-up is inside the timings of both ours and the baselines, except the "warm" variants:
their pool is started and every worker has rendered once before the clock starts (steady state).

    .venv/bin/python bench/raster.py [--quick] [--only real|synth]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from _common import PDF_VARIANTS, REPO, CorpusDoc, corpus, documents, machine_line, table
from PIL import Image

from pipeline.rasterize import RasterError, RasterSettings, fit_to_grid, rasterize
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


def pdfium_doc_bgrx(job: tuple[str, list[Size]]) -> list[Image.Image]:
    """As ``pdfium_doc`` but PDFium draws 32-bit RGBx (its native depth; Pillow keeps RGB as 32-bit too):
    the best bare pypdfium2 we know, the format ours uses."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as c

    path, sizes = job
    pdf = pdfium.PdfDocument(path)
    try:
        out = []
        for i, (tw, th) in enumerate(sizes):
            page = pdf[i]
            bm = pdfium.PdfBitmap.new_native(tw, th, c.FPDFBitmap_BGRx, rev_byteorder=True)
            bm.fill_rect((255, 255, 255, 255), 0, 0, tw, th)
            c.FPDF_RenderPageBitmap(bm, page, 0, 0, tw, th, 0, c.FPDF_ANNOT | c.FPDF_REVERSE_BYTE_ORDER)
            out.append(Image.frombytes("RGB", (tw, th), bm.buffer, "raw", "RGBX", bm.stride, 1))
            page.close()
        return out
    finally:
        pdf.close()


def mupdf_doc(job: tuple[str, list[Size]]) -> list[Image.Image]:
    """Bare PyMuPDF: each page straight to its target size (non-uniform zoom, like ours) -> PIL RGB."""
    import pymupdf

    path, sizes = job
    with pymupdf.open(path) as pdf:
        out = []
        for i, (tw, th) in enumerate(sizes):
            page = pdf.load_page(i)
            r = page.rect
            pix = page.get_pixmap(matrix=pymupdf.Matrix(tw / r.width, th / r.height), alpha=False, annots=True)
            out.append(Image.frombytes("RGB", (pix.width, pix.height), pix.samples_mv, "raw", "RGB", pix.stride, 1))
        return out


def bare_run(fn: Callable[[tuple[str, list[Size]]], list[Image.Image]], jobs: list[tuple[str, list[Size]]],
             procs: int, warm: bool = False) -> list[list[Size]]:
    """``fn`` over the documents in this process, or in a ``procs``-process pool (images pickled back)."""
    if procs <= 1:
        return [[im.size for im in fn(j)] for j in jobs]
    with mp.get_context("forkserver").Pool(procs) as pool:
        if warm:
            t0 = time.perf_counter()
            pool.map(fn, jobs[:1] * (procs * 2), chunksize=1)
            WARMUP.append(time.perf_counter() - t0)
        return [[im.size for im in ims] for ims in pool.imap(fn, jobs)]


def pdfium_run(jobs: list[tuple[str, list[Size]]], procs: int, warm: bool = False) -> list[list[Size]]:
    return bare_run(pdfium_doc, jobs, procs, warm)


# --------------------------------------------------------------------------- pdftoppm


def pdftoppm_page(job: tuple[str, int, Size], tmp: str, fmt: str = "png") -> Image.Image:
    """olmOCR's call (``pdftoppm -png -scale-to 1288 -f N -l N file out``) with the short side pinned to ours.

    ``fmt="ppm"`` drops ``-png`` (raw PPM output): shows how much of poppler's time is PNG encoding.
    """
    path, i, (tw, th) = job
    root = f"{tmp}/{uuid.uuid4().hex}"
    cmd = ["pdftoppm", *(["-png"] if fmt == "png" else []), "-scale-to-x", str(tw), "-scale-to-y", str(th),
           "-f", str(i + 1), "-l", str(i + 1), "-singlefile", path, root]
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
        bad = next(i for i, (a, b) in enumerate(zip(got, expect, strict=True)) if a != b)
        raise AssertionError(f"output sizes differ from ours at document {bad}: {got[bad]} vs {expect[bad]}")
    return dt, sum(len(x) for x in got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke version")
    ap.add_argument("--only", choices=("real", "synth"), help="one corpus only")
    args = ap.parse_args()
    print(machine_line())
    if args.only != "synth":
        real_pdfs(args.quick)
    if args.only != "real":
        synth(args.quick)


def synth(quick: bool) -> None:
    s = settings_for_longest()
    docs_all = corpus(640)
    pdfs: dict[str, list[CorpusDoc]] = {v: [d for d in docs_all if d.variant == v] for v in PDF_VARIANTS}
    if quick:
        pdfs = {v: ds[:20] for v, ds in pdfs.items()}
    label = {"pdf-digital": "digital", "pdf-scan": "scanned"}
    a4 = fit_to_grid(595 * s.dpi / 72, 842 * s.dpi / 72, 3136, s.max_pixels)
    letter = fit_to_grid(612 * s.dpi / 72, 792 * s.dpi / 72, 3136, s.max_pixels)
    print(f"\n== synth corpus\nsettings: dpi={s.dpi} max_pixels={s.max_pixels:,} -> A4 {a4}, Letter {letter} (w, h)")

    sub = 8 if quick else 60  # pdftoppm is slow on scans (~1.8 s/page): it gets a leading subset of pages
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
    if shutil.which("pdftoppm") is None:
        print("pdftoppm (poppler-utils) not installed: its rows are left out", file=sys.stderr)
        methods = [m for m in methods if not m[0].startswith("pdftoppm")]
    results: dict[tuple[str, str], tuple[float, int]] = {}
    full_pages: dict[str, int] = {}
    for variant, cds in pdfs.items():
        paths = [d.path for d in cds]
        docs = documents(paths)
        targets = page_targets(paths, s)
        jobs = [(str(p), targets[str(p)]) for p in paths]
        expect = [targets[str(p)] for p in paths]
        full_pages[variant] = sum(len(e) for e in expect)
        ours_loop(docs[:2], s), pdfium_run(jobs[:2], 1)  # warm imports and caches
        if shutil.which("pdftoppm"):
            pdftoppm_run(jobs[:1], 1)
        for name, fn, limit in methods:
            k = len(docs)
            if limit is not None:
                k = next((i + 1 for i in range(len(expect)) if sum(len(e) for e in expect[: i + 1]) >= limit),
                         len(docs))
            results[(name, variant)] = timed(partial(fn, docs[:k], jobs[:k]), expect[:k])
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
        ("ours 1 worker process / in-process", "ours RasterPool 1 worker process",
         "ours rasterize_stream w=1 (in-process)"),
        ("warm: ours 2 workers / 1 worker", "ours RasterPool 2 workers, warm", "ours RasterPool 1 worker, warm"),
        ("warm: ours 2 workers / in-process", "ours RasterPool 2 workers, warm",
         "ours rasterize_stream w=1 (in-process)"),
        ("warm: ours/pypdfium2, 2 procs", "ours RasterPool 2 workers, warm", "pypdfium2 2 procs, warm"),
    ]
    ratio_defs = [r for r in ratio_defs if (r[1], "pdf-digital") in results and (r[2], "pdf-digital") in results]
    print("\nratios (pages/s over pages/s)")
    print(table([[lbl, *(round(pps(a, v) / pps(b, v), 2) for v in kinds)] for lbl, a, b in ratio_defs],
                ["ratio", "digital", "scanned", "overall"]))

    # Images (ours only): TIFF/JPEG scans, PNG receipts, JPEG phone photos.
    img_rows = []
    for variant in ("tiff-scan", "jpeg-scan", "png-receipt", "jpeg-photo-receipt"):
        cds = [d for d in docs_all if d.variant == variant][: 12 if quick else None]
        docs = documents([d.path for d in cds])
        ours_loop(docs[:1], s)
        dt, n = timed(partial(ours_loop, docs, s), None)
        img_rows.append([variant, n, round(dt, 2), round(n / dt, 1)])
    print("\nimages, ours only (rasterize() loop, in-process, same settings)")
    print(table(img_rows, ["variant", "pages", "seconds", "pages/s"]))


# --------------------------------------------------------------------------- real PDFs

REAL = REPO.parent / "shared" / "corpora" / "pdf-dev"  # ../shared/corpora from a worktree


def real_docs(s: RasterSettings) -> list[Document]:
    """The corpus's PDFs that ours rasterizes (the others are failure rows, not rendering work)."""
    from pipeline.discover import identify

    out = []
    for p in sorted(REAL.glob("*.pdf")):
        doc, failure = identify(str(p))
        if failure is not None:
            continue
        try:
            rasterize(doc, s)
        except RasterError:
            continue
        out.append(doc)
    return out


def real_pdfs(quick: bool) -> None:
    s = RasterSettings()  # the defaults: dpi 150, max_pixels 1280*28*28, max_pages 8
    docs = real_docs(s)
    if not docs:
        print(f"\n== real PDFs: {REAL} not found, skipped")
        return
    paths = [Path(d.path) for d in docs]
    targets = page_targets(paths, s)
    jobs = [(str(p), targets[str(p)]) for p in paths]
    expect = [targets[str(p)] for p in paths]
    pages = sum(len(e) for e in expect)
    print(f"\n== real PDFs: {len(docs)} of {len(list(REAL.glob('*.pdf')))} files in {REAL} "
          f"(the others fail: empty, encrypted), {pages} pages (first {s.max_pages} of each), "
          f"max_pixels={s.max_pixels:,}")
    Fn = Callable[[], list[list[Size]]]
    methods: list[tuple[str, Fn]] = [
        ("ours rasterize() loop, in-process", lambda: ours_loop(docs, s)),
        ("pypdfium2 1 proc", lambda: bare_run(pdfium_doc, jobs, 1)),
        ("pypdfium2 BGRx 1 proc", lambda: bare_run(pdfium_doc_bgrx, jobs, 1)),
        ("PyMuPDF 1 proc", lambda: bare_run(mupdf_doc, jobs, 1)),
        ("ours rasterize_stream w=2 (2 procs)", lambda: ours_stream(docs, s, 2)),
        ("pypdfium2 2 procs", lambda: bare_run(pdfium_doc, jobs, 2)),
        ("PyMuPDF 2 procs", lambda: bare_run(mupdf_doc, jobs, 2)),
        ("ours RasterPool 2 workers, warm", lambda: ours_pool(docs, s, 2, warm=True)),
        ("pypdfium2 2 procs, warm", lambda: bare_run(pdfium_doc, jobs, 2, warm=True)),
        ("PyMuPDF 2 procs, warm", lambda: bare_run(mupdf_doc, jobs, 2, warm=True)),
    ]
    ours_loop(docs[:3], s), bare_run(pdfium_doc, jobs[:3], 1), bare_run(mupdf_doc, jobs[:3], 1)  # warm caches
    rounds = 1 if quick else 5
    secs: dict[str, list[float]] = {name: [] for name, _ in methods}
    cpu: dict[str, list[float]] = {name: [] for name, _ in methods}  # this process's CPU s: 1-proc methods only
    for r in range(rounds):
        order = methods if r % 2 == 0 else methods[::-1]  # alternate, so load drifts hit every method alike
        for name, fn in order:
            c0 = time.process_time()
            secs[name].append(timed(fn, expect)[0])
            cpu[name].append(time.process_time() - c0)
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {secs[n][-1]:.2f}s" for n, _ in methods[:4]),
              file=sys.stderr)

    def pps(name: str) -> float:
        return pages / statistics.median(secs[name])

    one_proc = [name for name, _ in methods if "1 proc" in name or "in-process" in name]
    print(table([[name, round(pps(name), 1), round(min(secs[name]), 2), round(statistics.median(secs[name]), 2),
                  round(statistics.median(cpu[name]), 2) if name in one_proc else "-"] for name, _ in methods],
                ["method", "pages/s (median)", "best s", "median s", "median CPU s"]))
    ratio_defs = [
        ("ours / pypdfium2, 1 proc", "ours rasterize() loop, in-process", "pypdfium2 1 proc"),
        ("ours / pypdfium2 BGRx, 1 proc", "ours rasterize() loop, in-process", "pypdfium2 BGRx 1 proc"),
        ("ours / PyMuPDF, 1 proc", "ours rasterize() loop, in-process", "PyMuPDF 1 proc"),
        ("PyMuPDF / pypdfium2, 1 proc", "PyMuPDF 1 proc", "pypdfium2 1 proc"),
        ("ours / pypdfium2, 2 procs", "ours rasterize_stream w=2 (2 procs)", "pypdfium2 2 procs"),
        ("ours / PyMuPDF, 2 procs", "ours rasterize_stream w=2 (2 procs)", "PyMuPDF 2 procs"),
        ("warm: ours / pypdfium2, 2 procs", "ours RasterPool 2 workers, warm", "pypdfium2 2 procs, warm"),
        ("warm: ours / PyMuPDF, 2 procs", "ours RasterPool 2 workers, warm", "PyMuPDF 2 procs, warm"),
    ]

    def per_round(a: str, b: str, by: dict[str, list[float]] = secs) -> list[float]:
        return [y / x for x, y in zip(by[a], by[b], strict=True)]  # pages/s ratio = inverse time ratio

    def cpu_ratio(a: str, b: str) -> str:
        return f"{statistics.median(per_round(a, b, cpu)):.2f}" if a in one_proc and b in one_proc else "-"

    print("\nratios (pages/s over pages/s): each round's pair, median and range over rounds; CPU: the same from\n"
          "this process's CPU seconds (1-process methods; steadier than wall time on a shared machine)")
    print(table([[lbl, round(statistics.median(per_round(a, b)), 2),
                  f"{min(per_round(a, b)):.2f}-{max(per_round(a, b)):.2f}", cpu_ratio(a, b)]
                 for lbl, a, b in ratio_defs], ["ratio", "wall, median", "wall, range", "CPU, median"]))


if __name__ == "__main__":
    main()
