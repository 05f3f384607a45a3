"""Discovery on a nightly re-run: reading and hashing every input vs the identity cache (size + mtime).

Inputs: the memory bench's distinct copies (``bench/memory.py`` makes them; about 6,800 files and 10,000
pages for ``--pages 10000``).  Each method runs with every file in the OS page cache (the best case for
re-reading) and, where this process may write /proc/sys/vm/drop_caches (root), with the caches dropped
(what a nightly run sees for files not read since; on a network disk or a bucket it is slower still).

    .venv/bin/python bench/discover.py [--pages N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time

from _common import machine_line, table
from memory import copies_for

from pipeline.discover import IdentityCache, discover


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pages", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    manifest, files, pages = copies_for(args.pages)
    inputs = [str(manifest)]
    print(machine_line())
    total_bytes = sum(d.size for d in discover(inputs).documents)  # warm-up: every file in the page cache
    print(f"{files:,} files, {total_bytes / 2**20:,.0f} MiB, ~{pages:,} pages")
    out = tempfile.mkdtemp(prefix="bench-discover-")
    cache = IdentityCache()
    discover(inputs, cache=cache)
    cache.save(out)

    methods = {
        "read + sha256, 1 thread (before)": lambda: discover(inputs, threads=1),
        "read + sha256, 4 threads (default)": lambda: discover(inputs),
        "identity cache: stat only": lambda: discover(inputs, cache=IdentityCache.load(out)),
    }
    can_drop = os.access("/proc/sys/vm/drop_caches", os.W_OK)
    states = ["page cache warm"] + (["cold (caches dropped)"] if can_drop else [])
    times: dict[tuple[str, str], list[float]] = {(k, st): [] for k in methods for st in states}
    names = list(methods)
    for i in range(args.rounds):
        for name in names[i % 3:] + names[: i % 3]:
            for state in states:
                if state.startswith("cold"):
                    subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=True)
                else:
                    discover(inputs, threads=1)  # make sure every file is in the page cache
                t0 = time.perf_counter()
                found = methods[name]()
                times[(name, state)].append(time.perf_counter() - t0)
                assert len(found.documents) + len(found.failures) + sum(len(v) for v in found.duplicates.values()) == files
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for state in states:
        base = med[(names[0], state)]
        rows += [[state, k, round(med[(k, state)], 3), round(files / med[(k, state)]), f"{base / med[(k, state)]:.2f}x"]
                 for k in names]
    print(table(rows, ["files", f"method (median of {args.rounds})", "seconds", "files/s", "vs 1 thread"]))


if __name__ == "__main__":
    main()
