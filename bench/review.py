"""``docextract review`` on a backlog-sized output: seconds, CPU seconds and bytes per page.

Baseline, in the same run: rendering the same pages with the project's rasterizer at the same pixel
budget in one process (``rasterize_bytes``, no JPEG, no HTML), i.e. the floor the review cannot go
below; rounds are interleaved (baseline, review, baseline, review...).

    .venv/bin/python bench/review.py [--count 500] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from pathlib import Path

from _common import CACHE, InstantEngine, corpus, job_config, machine_line, table


def _baseline(sources: list[tuple[str, str, int]]) -> tuple[float, float, int]:
    from pipeline.rasterize import RasterSettings, rasterize_bytes
    from pipeline.records import Document
    from pipeline.review.images import REVIEW_PIXELS
    from pipeline.sniff import HEAD_BYTES, sniff

    t0, c0, pages = time.perf_counter(), time.process_time(), 0
    for doc_id, path, n in sources:
        data = Path(path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == doc_id
        doc = Document(doc_id, path, sniff(data[:HEAD_BYTES], len(data)), len(data))
        pages += len(rasterize_bytes(doc, data, RasterSettings(max_pixels=REVIEW_PIXELS, max_pages=n)).pages)
    return time.perf_counter() - t0, time.process_time() - c0, pages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="60 documents, one round")
    args = ap.parse_args()
    count, rounds = (60, 1) if args.quick else (args.count, args.rounds)
    from pipeline.review import load_review, write_review
    from pipeline.runner import run_job

    docs = corpus(count, name="review")  # its own folder: other benches keep theirs
    out = CACHE / f"review-out-{count}"  # the run, made once
    if not (out / "run.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        run_job([str(d.path) for d in docs], out, job_config(), engine=InstantEngine(docs))
    review = load_review(out)
    sources = [(d.doc_id, d.source_path, d.pages_used or d.page_count or 1) for d in review.docs if d.failure is None]
    print(machine_line())
    print(f"{len(review.docs)} documents ({len(sources)} results) from {out}")
    rows = []
    for r in range(rounds):
        wall, cpu, pages = _baseline(sources)
        rows.append((f"baseline (rasterize only) #{r + 1}", wall, cpu, pages, pages / wall, "", ""))
        html = CACHE / f"review-html-{count}"
        shutil.rmtree(html, ignore_errors=True)
        t0, c0 = time.perf_counter(), time.process_time()
        w = write_review(out, html)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        biggest = max(p.stat().st_size for p in (html / "docs").glob("*.html"))
        rows.append((f"review #{r + 1}", wall, cpu, w.images, w.images / wall, f"{w.bytes / w.images / 1e3:.0f}",
                     f"{w.bytes / 1e6:.0f} MB total, largest file {biggest / 1e6:.1f} MB, index "
                     f"{(html / 'index.html').stat().st_size / 1e3:.0f} KB"))
    print(table(rows, ["what", "wall s", "CPU s", "pages", "pages/s", "KB/page", "size"]))
    base = sum(r[1] for r in rows[0::2]) / rounds
    ours = sum(r[1] for r in rows[1::2]) / rounds
    print(f"review / baseline wall: {ours / base:.2f}x; CPU: "
          f"{sum(r[2] for r in rows[1::2]) / max(sum(r[2] for r in rows[0::2]), 1e-9):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
