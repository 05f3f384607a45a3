"""How fast `docextract synth` makes pages, per variant and overall, 1 vs 2 processes.

    .venv/bin/python bench/synth.py [--count 400] [--per-variant 20] [--quick]

Baseline in the same run: one process.  Target (issue 4): 10,000 pages in minutes on 2 cores.
``--per-variant N`` (0 to skip) first times N documents of each variant in one process: pages/s and
KiB per page (this was ``python -m pipeline.synth --bench N``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path


def run(count: int, workers: int, seed: int) -> tuple[float, int, Counter[str]]:
    from pipeline.synth import generate

    out = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    try:
        t0 = time.perf_counter()
        docs = generate(out, count, seed=seed, workers=workers)
        dt = time.perf_counter() - t0
        pages = Counter()
        for d in docs:
            pages[d.variant] += d.pages
        return dt, sum(pages.values()), pages
    finally:
        shutil.rmtree(out, ignore_errors=True)


def per_variant(n: int, seed: int) -> None:
    """One process, ``n`` documents of each variant: pages/s and file size per page."""
    from pipeline.synth import VARIANTS, generate

    out = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    try:
        for v, kind in VARIANTS.items():
            t0 = time.perf_counter()
            docs = generate(out / v, n, seed=seed, kinds=(kind,), mix={v: 1.0})
            dt = time.perf_counter() - t0
            pages = sum(d.pages for d in docs)
            kib = sum(d.path.stat().st_size for d in docs) / 1024
            print(f"  {v:20s} {len(docs):4d} docs {pages:4d} pages {dt:7.2f}s {pages / dt:7.1f} pages/s "
                  f"{kib / pages:7.1f} KiB/page")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--per-variant", type=int, default=20, metavar="N")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    count = 60 if args.quick else args.count
    n_variant = min(args.per_variant, 4) if args.quick else args.per_variant
    if n_variant > 0:
        print(f"per variant, 1 process, {n_variant} documents each:")
        per_variant(n_variant, seed=11)
    results = {}
    for workers in (1, 2):
        dt, pages, by_variant = run(count, workers, seed=11)
        results[workers] = pages / dt
        print(f"workers={workers}: {count} documents, {pages} pages in {dt:.1f}s = {pages / dt:.1f} pages/s")
        if workers == 1:
            print("  pages by variant: " + ", ".join(f"{k}={v}" for k, v in sorted(by_variant.items())))
    print(f"speed-up 2 vs 1 process: {results[2] / results[1]:.2f}x")
    print(f"10,000 pages at the 2-process rate: {10000 / results[2] / 60:.1f} minutes")


if __name__ == "__main__":
    main()
