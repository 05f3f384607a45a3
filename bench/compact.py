"""Query and reconcile time over an output of 1,000 nightly parts, before and after ``compact``.

The output is written with the project's own part writer (``PartWriter``, as a run commits): one results
part per night (``--rows`` invoices with line items and raw JSON, each row a real ``Invoice`` mapped by
``model_row``) and a failures part every fourth night.  Then a copy is compacted, and the two are measured
in interleaved rounds (A, B, A, B, ...): a DuckDB glob query (the README's), and what a run's start
costs (``Output.open``: lock, reconcile, the finished set, the schema check).  Wall and CPU seconds
(this process, all threads) are printed; compare the ratios.

    .venv/bin/python bench/compact.py [--nights 1000] [--rows 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import shutil
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from _common import machine_line, table

from pipeline.columns import model_row, results_schema
from pipeline.compact import compact
from pipeline.layout import list_parts
from pipeline.output import Output
from pipeline.store import PartWriter
from schemas import Invoice

RUN_KEY = "bench-key"


def invoice(n: int) -> Invoice:
    items = [{"description": f"Service {n}-{i} consulting hours", "quantity": Decimal(i + 1),
              "unit_price": Decimal("95.50") + n % 50, "amount": (i + 1) * (Decimal("95.50") + n % 50)}
             for i in range(1 + n % 6)]
    sub = sum((it["amount"] for it in items), Decimal(0))
    tax = (sub * Decimal("0.19")).quantize(Decimal("0.01"))
    return Invoice.model_validate({
        "invoice_number": f"INV-{n:07d}", "issue_date": dt.date(2024, 1, 1) + dt.timedelta(days=n % 700),
        "currency": "EUR", "vendor": {"name": f"Vendor {n % 300} GmbH", "address": "Hauptstr. 1, 10115 Berlin",
                                      "tax_id": f"DE{n % 10**9:09d}"},
        "customer": {"name": "Customer AG"}, "line_items": items, "subtotal": sub, "tax": tax, "total": sub + tax})


def night_rows(night: int, rows: int, schema: pa.Schema, run_id: str, at: dt.datetime) -> pa.Table:
    out = []
    for i in range(rows):
        n = night * rows + i
        inv = invoice(n)
        row = model_row(inv, schema)
        row.update(doc_id=hashlib.sha256(str(n).encode()).hexdigest(), source_path=f"/data/inbox/{night}/inv{n}.pdf",
                   doc_kind="pdf", page_count=1, pages_used=1, raw_json=inv.model_dump_json(), warnings=[],
                   attempts=1, prompt_tokens=1400, output_tokens=380, schema_name="invoice",
                   model="Qwen/Qwen2.5-VL-3B-Instruct", run_key=RUN_KEY, run_id=run_id, extracted_at=at)
        out.append(row)
    return pa.Table.from_pylist(out, schema=schema)


def failure(night: int, run_id: str, at: dt.datetime) -> dict[str, Any]:
    return {"doc_id": hashlib.sha256(f"bad{night}".encode()).hexdigest(), "source_path": f"/data/inbox/{night}/scan.pdf",
            "doc_kind": "pdf", "page_count": 2, "stage": "validate", "error_type": "rule_violation", "retryable": True,
            "message": "line items sum to 120.00, subtotal is 12.00", "errors": ["line_items_sum_to_subtotal"],
            "raw_output": "{}", "warnings": [], "attempts": 3, "prompt_tokens": 2800, "output_tokens": 700,
            "schema_name": "invoice", "model": "Qwen/Qwen2.5-VL-3B-Instruct", "run_key": RUN_KEY, "run_id": run_id,
            "failed_at": at}


def build(out: Path, nights: int, rows: int) -> None:
    schema = results_schema(Invoice)
    start = dt.datetime(2024, 1, 1, 2, 0, tzinfo=dt.UTC)
    for night in range(nights):
        at = start + dt.timedelta(days=night)
        run_id = at.strftime("%Y%m%dT%H%M%S%fZ") + f"-{night:06x}"
        w = PartWriter(out, run_id, schema)
        w.commit(night_rows(night, rows, schema, run_id, at), [failure(night, run_id, at)] if night % 4 == 3 else [])
        w.close()


def query(out: Path) -> tuple[Any, ...]:
    import duckdb

    return duckdb.sql(f"SELECT count(*), sum(total), count(DISTINCT vendor.name) FROM '{out}/results/*.parquet'"
                      ).fetchall()[0] + duckdb.sql(f"SELECT count(*) FROM '{out}/failures/*.parquet'").fetchall()[0]


def open_output(out: Path) -> int:
    o = Output(out, "bench-open", results_schema(Invoice), "zstd", 600, lambda why: None, schema_name="invoice")
    try:
        finished, _ = o.open(RUN_KEY, force=False, retry_failed=False)
        return len(finished.done)
    finally:
        o.close()


def timed(fn: Any, *args: Any) -> tuple[float, float, Any]:
    w0, c0 = time.perf_counter(), time.process_time()
    r = fn(*args)
    return time.perf_counter() - w0, time.process_time() - c0, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nights", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=20, help="results rows per nightly part")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--target-mb", type=float, default=64.0)
    args = ap.parse_args()
    print(machine_line())
    tmp = Path(tempfile.mkdtemp(prefix="bench-compact-"))
    before, after = tmp / "before", tmp / "after"
    w, c, _ = timed(build, before, args.nights, args.rows)
    sizes = [p.stat().st_size for p in list_parts(before / "results")]
    print(f"built {args.nights} nights x {args.rows} rows in {w:.1f}s: {len(sizes)} results parts "
          f"(median {statistics.median(sizes) / 1024:.1f} KB), {len(list_parts(before / 'failures'))} failures parts")
    shutil.copytree(before, after)
    w, c, rep = timed(compact, after, args.target_mb)
    print(f"compact: {w:.2f}s wall, {c:.2f}s CPU; " + "; ".join(
        f"{t.table} {t.parts_before} -> {t.parts_after} parts, {t.bytes_before / 2**20:.1f} -> {t.bytes_after / 2**20:.1f} MiB"
        for t in rep.tables))
    assert query(before) == query(after), "compaction changed what the query returns"
    assert open_output(before) == open_output(after) == args.nights * args.rows
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for label, out in (("before", before), ("after", after)):  # interleaved
            for what, fn in (("query", query), ("open", open_output)):
                w, c, _ = timed(fn, out)
                samples.setdefault((what, label), []).append((w, c))
    rows = []
    for what, name in (("query", "DuckDB glob: count/sum/distinct + failures count"),
                       ("open", "run start: Output.open (lock, reconcile, finished set)")):
        b = samples[(what, "before")]
        a = samples[(what, "after")]
        bw, bc = statistics.median(x[0] for x in b), statistics.median(x[1] for x in b)
        aw, ac = statistics.median(x[0] for x in a), statistics.median(x[1] for x in a)
        rows.append([name, f"{bw:.3f} / {bc:.3f}", f"{aw:.3f} / {ac:.3f}", f"{bw / aw:.1f}x / {bc / max(ac, 1e-9):.1f}x"])
    print(table(rows, ["measure (median of rounds)", "before: wall / CPU s", "after: wall / CPU s", "speed-up"]))
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
