"""Reading years of run records: the README's "The morning after" run-history queries over N runs/*.json.

One real run record (a scripted-engine run over data/samples/invoices, ~4 KB of JSON with its config) is
copied N times (every tenth as format 1 wrote it), then, in alternating rounds:

* ours: the README's ``runs`` view (``read_json`` with named columns) + its per-night query;
* baseline: the same query over ``read_json_auto(..., union_by_name = true)``, which infers every file;
* ``pipeline.metrics.last_success_in_history`` with the only success N-1 runs back (its worst case: the
  metrics file lost during a long failing streak).

Wall and CPU seconds (``time.process_time``: DuckDB's threads are in this process) per round, medians.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from _common import REPO, machine_line, quick_flag, table


def readme_queries() -> dict[str, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8").split("\n## The morning after\n", 1)[1].split("\n## ", 1)[0]
    return {b.splitlines()[0][3:].strip(): b for b in re.findall(r"```sql\n(.*?)```", text, re.DOTALL)}


def a_record(tmp: Path) -> dict:
    out = tmp / "one"
    subprocess.run([str(Path(sys.executable).parent / "docextract"), "run", "data/samples/invoices", "--out", str(out),
                    "--schema", "invoice", "--engine", "tests.scripted_engine:from_truth", "-q"],
                   cwd=REPO, check=True, capture_output=True)
    return json.loads((out / "run.json").read_text())


def history(tmp: Path, record: dict, n: int) -> Path:
    out = tmp / "history"
    (out / "runs").mkdir(parents=True)
    for i in range(n):
        r = dict(record, run_id=f"{20230101 + i // 28:08d}T020000000000Z-{i:06d}", status="too_many_failures",
                 exit_code=3)
        if i == 0:
            r.update(status="ok", exit_code=0)
        if i % 10 == 0:  # as format 1 wrote it
            r = {k: v for k, v in r.items() if k not in ("format_version", "finished_at", "duration_s")}
            r["status"] = "completed"
        (out / "runs" / f"{r['run_id']}.json").write_text(json.dumps(r, indent=2))
    return out


def timed(fn) -> tuple[float, float, object]:
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - t0, time.process_time() - c0, value


def main() -> None:
    args = quick_flag(__doc__ or "")
    n, rounds = (200, 2) if args.quick else (1000, 5)
    from pipeline.metrics import last_success_in_history

    q = readme_queries()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rec = a_record(tmp)
        out = history(tmp, rec, n)
        size = len(max((out / "runs").iterdir()).read_bytes())
        view = q["The run history as a view"].replace("/data/extracted", str(out))
        nightly = q["Per night (UTC): runs, documents, failure rate, documents/s"]
        auto = nightly.replace("FROM runs", f"FROM read_json_auto('{out}/runs/*.json', union_by_name = true)")
        res: dict[str, list[tuple[float, float]]] = {"view": [], "auto": [], "history": []}
        for r in range(rounds):
            order = ["view", "auto", "history"] if r % 2 == 0 else ["history", "auto", "view"]
            for name in order:
                con = duckdb.connect()
                if name == "view":
                    w, c, rows = timed(lambda: (con.sql(view), con.sql(nightly).fetchall())[1])
                elif name == "auto":
                    w, c, rows = timed(lambda: con.sql(auto).fetchall())
                else:
                    w, c, rows = timed(lambda: last_success_in_history(out))
                    assert rows is not None
                if name != "history":
                    assert sum(row[1] for row in rows) == n, rows  # every run read
                res[name].append((w, c))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in res.items()}
    print(machine_line())
    print(f"{n} run records of {size:,} bytes (every tenth in format 1), {rounds} alternating rounds, medians")
    print(table([
        ["README view + per-night query", med["view"][0], med["view"][1], med["view"][1] / med["auto"][1]],
        ["read_json_auto union_by_name (baseline)", med["auto"][0], med["auto"][1], 1.0],
        [f"last_success_in_history, success {n - 1} runs back", med["history"][0], med["history"][1], ""],
    ], ["what", "wall s", "CPU s", "CPU vs baseline"]))


if __name__ == "__main__":
    main()
