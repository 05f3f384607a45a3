"""Peak memory of ``run_job`` (instant engine) over 1,000 vs 10,000 pages: it should not grow with the backlog.

docextract dedupes identical bytes (sha256), so the big run needs distinct files: a small synth corpus
(distinct from the other benches') is copied N times with a unique trailer appended after the end of
each file (after %%EOF for PDFs, after EOI/IEND for JPEG/PNG; the decoders ignore it).  Small page
budget (max_pixels = 28*28*64) to keep it fast; ``--max-pixels 1003520`` is the default page budget
(~4 MB per page in memory), where the bound on pages held (two batches plus a quarter-batch queue,
``run.max_batch_pages``) is what shows.  Each measurement runs in a fresh child process; RSS of that
process plus all its descendants (rasterizing workers, forkserver) is sampled every 50 ms.

    .venv/bin/python bench/memory.py [--quick] [--max-pixels N]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import CACHE, InstantEngine, RssSampler, corpus, job_config, machine_line, mib, table, write_manifest

BASE_DOCS = 100
MAX_PIXELS = 28 * 28 * 64


def copies_for(pages: int) -> tuple[Path, int, int]:
    """A manifest of distinct files totalling about ``pages`` pages: (manifest, files, pages)."""
    base = corpus(BASE_DOCS, seed=7, name="memory")
    per_copy = sum(d.pages for d in base)
    n = math.ceil(pages / per_copy)
    root = CACHE / "memory" / "copies"
    paths = []
    for k in range(n):
        d = root / f"c{k:04d}"
        if not (d / ".done").exists():
            d.mkdir(parents=True, exist_ok=True)
            for doc in base:
                (d / doc.path.name).write_bytes(doc.path.read_bytes() + f"\n%bench-copy-{k}\n".encode())
            (d / ".done").touch()
        paths += [d / doc.path.name for doc in base]
    manifest = write_manifest(paths, CACHE / "memory" / f"inputs-{pages}.txt")
    return manifest, len(paths), n * per_copy


def child(pages: int, max_pixels: int) -> None:
    from pipeline.runner import run_job

    manifest, files, total_pages = copies_for(pages)
    base = corpus(BASE_DOCS, seed=7, name="memory")
    out = CACHE / "memory" / f"out-{pages}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = job_config(schema="invoice", **{"rasterize.max_pixels": max_pixels, "rasterize.workers": 2})
    engine = InstantEngine(base)  # copies have other doc_ids: every answer is the same valid invoice
    import resource

    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    with RssSampler() as rss:
        s = run_job([str(manifest)], out, cfg, engine=engine, handle_signals=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"pages_target": pages, "files": files, "docs": s.processed, "pages": s.pages, "ok": s.succeeded,
                      "wall": wall, "peak_total": rss.peak_total, "peak_main": rss.peak_main,
                      "peak_children": rss.peak_children, "samples": rss.samples,
                      "main_user_s": r1.ru_utime - r0.ru_utime, "main_sys_s": r1.ru_stime - r0.ru_stime,
                      "main_minflt": r1.ru_minflt - r0.ru_minflt}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="page budget (default: small, fast)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.max_pixels)
        return
    small, big = (1000, 3000) if args.quick else (1000, 10000)  # both past the first 256-doc batch
    for p in (small, big):  # prepare files outside the measured runs
        copies_for(p)
    print(machine_line())
    print(f"instant engine, rasterize.workers=2, max_pixels={args.max_pixels:,}, batch_size=256, max_batch_pages=512; "
          "fresh process per run")
    res = {}
    for p in (small, big):
        cmd = [sys.executable, __file__, "--child", str(p), "--max-pixels", str(args.max_pixels)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode:
            raise SystemExit(f"child {p} failed:\n{r.stderr[-3000:]}")
        res[p] = json.loads(r.stdout.strip().splitlines()[-1])
    rows = [[f"{res[p]['pages']:,} pages ({res[p]['docs']:,} docs)", round(res[p]["wall"], 1),
             round(mib(res[p]["peak_total"])), round(mib(res[p]["peak_main"])), round(mib(res[p]["peak_children"])),
             round(res[p]["main_user_s"], 2), round(res[p]["main_sys_s"], 2), res[p]["main_minflt"]]
            for p in (small, big)]
    print(table(rows, ["run", "wall s", "peak RSS total MiB", "main MiB", "children MiB", "main user s", "main sys s",
                       "main minor faults"]))
    ratio = res[big]["peak_total"] / res[small]["peak_total"]
    ratio_main = res[big]["peak_main"] / res[small]["peak_main"]
    print(f"\npeak RSS ratio {res[big]['pages']:,} / {res[small]['pages']:,} pages: total {ratio:.3f}x, "
          f"main process {ratio_main:.3f}x  (target ~1.0x, flat: {'met' if ratio <= 1.10 else 'MISSED'})")


if __name__ == "__main__":
    main()
