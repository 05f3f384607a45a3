"""Pipeline overhead: full ``run_job`` with an engine that answers instantly vs rasterizing alone.

Both over the same documents with the same worker count; the rasterize-only baseline consumes
``rasterize_stream`` and drops the pages.  Overhead = job wall / rasterize wall - 1 (target <= 10%).
Rounds alternate the order (raster, job / job, raster); the median of the per-round ratios is reported
(the two runs of a round are adjacent in time, which cancels most of a shared machine's drift), with
CPU seconds (main process + rasterizing workers) beside the wall times: steadier under other tenants.

    .venv/bin/python bench/overhead.py [--quick] [--breakdown] [--profile]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from typing import Any

from _common import (
    CACHE,
    InstantEngine,
    RssSampler,
    TreeCpu,
    corpus,
    documents,
    job_config,
    machine_line,
    mib,
    table,
    write_manifest,
)

from pipeline.rasterize import RasterSettings
from pipeline.runner import run_job
from pipeline.workers import default_memory_limit, rasterize_stream

WORKERS = 2


def raster_only(docs: list[Any], s: RasterSettings, timeout_s: float) -> int:
    pages = 0
    for _, r in rasterize_stream(docs, s, workers=WORKERS, timeout_s=timeout_s, memory_limit_bytes=default_memory_limit()):
        pages += len(getattr(r, "pages", ()))
    return pages


def producer_items(cfg: Any, docs: list[Any]) -> Any:
    """run_job's own producer thread + bounded queue (a private API: both of its shapes are handled)."""
    from pipeline.runner import Runner

    got = Runner(cfg, CACHE / "overhead" / "out-breakdown")._raster_items(docs)
    if isinstance(got, tuple):
        items, stop = got
        try:
            yield from items
        finally:
            stop()
    else:
        yield from got


def breakdown(docs: list[Any], s: RasterSettings, cfg: Any, rounds: int) -> None:
    """Where run_job's extra time goes, without engine, validation or writing."""

    def stream() -> Any:
        return rasterize_stream(docs, s, workers=WORKERS, memory_limit_bytes=default_memory_limit())

    variants = {
        "direct, drop": (stream, 0),
        "direct, hold 512 docs": (stream, 512),
        "producer thread + queue, drop": (lambda: producer_items(cfg, docs), 0),
        "producer thread + queue, hold 512 docs": (lambda: producer_items(cfg, docs), 512),
    }
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    names = list(variants)
    for i in range(rounds):
        for name in names[i % 4:] + names[: i % 4]:  # rotate the order
            make, hold = variants[name]
            t0 = time.perf_counter()
            with TreeCpu() as c:
                kept: list[Any] = []
                for item in make():
                    if hold:
                        kept.append(item)
                        if len(kept) >= hold:
                            kept = []
                del kept
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append((c.main, c.children))
    base = statistics.median(wall["direct, drop"])
    rows = []
    for k in variants:
        w = statistics.median(wall[k])
        rows.append([k, round(w, 2), f"{w / base - 1:+.0%}", round(statistics.median(m for m, _ in cpu[k]), 2),
                     round(statistics.median(c for _, c in cpu[k]), 2)])
    print(f"\nbreakdown: rasterize_stream consumed four ways (median of {rounds}, order rotated)")
    print(table(rows, ["consumer", "wall s", "vs direct", "main CPU s", "workers CPU s"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--breakdown", action="store_true", help="also time the stream consumed directly / through "
                    "run_job's producer thread + queue, dropping pages at once or holding 512 documents")
    ap.add_argument("--profile", action="store_true", help="cProfile one job run (main thread) and print the top entries")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for the run_job side, e.g. run.batch_size=64 (repeatable)")
    args = ap.parse_args()

    cds = corpus(640)
    if args.quick:
        cds = cds[:120]
    repeats = 1 if args.quick else 5
    manifest = write_manifest([d.path for d in cds], CACHE / "overhead" / "inputs.txt")
    docs = documents([d.path for d in cds])
    overrides = {k: int(v) if v.isdigit() else v for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = job_config(schema="invoice", **{"rasterize.workers": WORKERS, **overrides})
    r = cfg.rasterize
    s = RasterSettings(dpi=r.dpi, min_pixels=r.min_pixels, max_pixels=r.max_pixels, max_pages=r.max_pages,
                       max_source_pixels=r.max_source_pixels, direct_scans=r.direct_scans)
    engine = InstantEngine(cds)
    print(machine_line())
    print(f"corpus: {len(docs)} documents, {sum(d.pages for d in cds)} pages (synth mix, PDFs/TIFF/JPEG/PNG); "
          f"workers={WORKERS}, dpi={r.dpi}, max_pixels={r.max_pixels:,}, batch_size={cfg.run.batch_size}")

    wall: dict[str, list[float]] = {"raster": [], "job": []}
    cpu: dict[str, list[float]] = {"raster": [], "job": []}
    peaks: dict[str, int] = {}
    tails: list[float] = []
    summary: Any = None
    for i in range(repeats):
        def measure(kind: str) -> None:
            nonlocal summary
            out = CACHE / "overhead" / f"out-{i}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            with RssSampler(0.1) as rss, TreeCpu() as c:
                if kind == "raster":
                    raster_only(docs, s, r.timeout_s)
                else:
                    summary = run_job([str(manifest)], out, cfg, engine=engine, handle_signals=False)
            wall[kind].append(time.perf_counter() - t0)
            cpu[kind].append(c.total)
            if kind == "job":
                tails.append(wall["job"][-1] - (engine.last_call - t0))  # after the last batch was assembled
                assert summary.processed == len(docs), summary
            if i == 0:  # round 1: fresh process, raster first (later peaks inherit freed-but-kept heap)
                peaks[kind] = rss.peak_total

        for kind in (("raster", "job") if i % 2 == 0 else ("job", "raster")):
            measure(kind)
        print(f"  round {i + 1}: rasterize only {wall['raster'][-1]:.2f}s ({cpu['raster'][-1]:.1f} CPU s), run_job "
              f"{wall['job'][-1]:.2f}s ({cpu['job'][-1]:.1f} CPU s; {summary.succeeded} ok, {summary.failed} failed; "
              f"{tails[-1]:.2f}s after the last batch was assembled)")

    med = {k: statistics.median(v) for k, v in wall.items()}
    print()
    print(table(
        [[name, round(med[k], 2), round(summary.pages / med[k], 1), round(statistics.median(cpu[k]), 1),
          round(mib(peaks[k]))] for name, k in (("rasterize_stream only (dropped)", "raster"),
                                                ("run_job + instant engine", "job"))],
        [f"median of {repeats}", "wall s", "pages/s", "CPU s (main+workers)", "peak RSS MiB (round 1)"],
    ))
    paired = [j / r_ - 1 for j, r_ in zip(wall["job"], wall["raster"])]
    overhead = statistics.median(paired)
    cpu_over = statistics.median(j / r_ - 1 for j, r_ in zip(cpu["job"], cpu["raster"]))
    print(f"\noverhead (wall) = run_job / rasterize-only - 1, median of per-round ratios = {overhead:+.1%} "
          f"(rounds: {', '.join(f'{p:+.0%}' for p in paired)}); target <= +10%: {'met' if overhead <= 0.10 else 'MISSED'}")
    print(f"overhead (CPU seconds, main + workers) = {cpu_over:+.1%}; ratio of medians {med['job'] / med['raster'] - 1:+.1%}; "
          f"best-of-{repeats} {min(wall['job']) / min(wall['raster']) - 1:+.1%}; serial tail after the last batch was "
          f"assembled: median {statistics.median(tails):.2f}s")
    print("run_job timings (last round, s): " + ", ".join(f"{k}={v:.2f}" for k, v in sorted(summary.timings.items())))

    if args.breakdown:
        breakdown(docs, s, cfg, 1 if args.quick else 4)

    if args.profile:
        import cProfile
        import pstats

        out = CACHE / "overhead" / "out-prof"
        shutil.rmtree(out, ignore_errors=True)
        prof = cProfile.Profile()
        prof.enable()
        run_job([str(manifest)], out, cfg, engine=engine, handle_signals=False)
        prof.disable()
        print("\ncProfile of run_job (main thread only; the rasterize producer thread is not profiled):")
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
