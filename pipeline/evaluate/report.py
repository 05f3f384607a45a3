"""An :class:`EvalReport` as a printed table, and on disk: ``.json`` (the whole report) or ``.parquet``
(one row per field, the whole report in the file metadata, so :func:`read_report` reads either back)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.evaluate.errors import EvalError, ReportFormatError
from pipeline.evaluate.stats import EvalReport
from pipeline.fs import write_bytes_atomic
from pipeline.store import parquet_bytes

REPORT_SUFFIXES = (".json", ".parquet")
REPORT_METADATA_KEY = b"docextract.eval"
_FIELDS_SCHEMA = pa.schema(
    [
        ("evaluated_at", pa.string()),
        ("schema", pa.string()),
        ("field", pa.string()),
        ("kind", pa.string()),
        ("tp", pa.int64()),
        ("fp", pa.int64()),
        ("fn", pa.int64()),
        ("precision", pa.float64()),
        ("recall", pa.float64()),
        ("f1", pa.float64()),
    ]
)


def _row(name: str, tp: Any, fp: Any, fn: Any, p: float, r: float, f: float, width: int) -> str:
    return f"{name:<{width}} {tp:>6} {fp:>6} {fn:>6} {p:>9.3f} {r:>7.3f} {f:>7.3f}"


def format_table(report: EvalReport) -> str:
    """A plain-text table: header counts, one line per field, overall, item lists, exact match, warnings."""
    width = max([len("overall (micro)")] + [len(f.field) for f in report.fields])
    counts = f"matched {report.matched}, failed {report.failed}, missing {report.missing}"
    if report.skipped_truth:
        counts += f"; truth for other schemas skipped {report.skipped_truth}"
    lines = [
        f"schema {report.schema} ({report.mode}); truth {report.truth_path}; results {report.results_path}",
        f"truth documents {report.truth_documents}: {counts}",
    ]
    if report.failures_by_type:
        lines.append("failures: " + ", ".join(f"{k} {n}" for k, n in report.failures_by_type.items()))
    header = f"{'field':<{width}} {'TP':>6} {'FP':>6} {'FN':>6} {'precision':>9} {'recall':>7} {'F1':>7}"
    lines += ["", header, "-" * len(header)]
    for f in report.fields:
        lines.append(_row(f.field, f.tp, f.fp, f.fn, f.precision, f.recall, f.f1, width))
    o = report.overall
    lines += ["-" * len(header), _row("overall (micro)", o.tp, o.fp, o.fn, o.precision, o.recall, o.f1, width)]
    for it in report.items:
        lines.append(
            f"item list {it.field}: truth {it.truth_items}, predicted {it.predicted_items}, matched {it.matched}, "
            f"exact {it.exact} (precision {it.precision:.3f}, recall {it.recall:.3f}, F1 {it.f1:.3f})"
        )
    lines.append(
        f"document exact match: {report.exact_matches}/{report.truth_documents} = {report.exact_match_rate:.3f}"
    )
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def report_format(path: Path | str) -> str:
    """The report format a path asks for, by its extension (any case): ``.json`` or ``.parquet``.

    Raises :class:`ReportFormatError` for any other extension, so a caller can check a ``--report``
    path before evaluating."""
    suffix = Path(path).suffix.lower()
    if suffix not in REPORT_SUFFIXES:
        detail = f"not {suffix}" if suffix else "the name has no extension"
        raise ReportFormatError(f"{path}: report format must be .json or .parquet ({detail})")
    return suffix


def _fields_table(report: EvalReport) -> pa.Table:
    rows = [{**asdict(f), "schema": report.schema, "evaluated_at": report.evaluated_at} for f in report.fields]
    table = pa.Table.from_pylist(rows, schema=_FIELDS_SCHEMA)
    meta = {REPORT_METADATA_KEY: json.dumps(report.to_dict(), ensure_ascii=False).encode()}
    return table.replace_schema_metadata(meta)


def write_report(report: EvalReport, path: Path) -> None:
    """``.json``: the whole report; ``.parquet``: one row per field (the whole report in the file metadata).

    Any other extension raises :class:`ReportFormatError` before anything is written."""
    path = Path(path)
    if report_format(path) == ".json":
        data = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
        write_bytes_atomic(path, data.encode())
    else:
        write_bytes_atomic(path, parquet_bytes(_fields_table(report), "zstd"))


def read_report(path: Path) -> EvalReport:
    """A report written by :func:`write_report` (either format)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        meta = pq.read_schema(path).metadata or {}
        if REPORT_METADATA_KEY not in meta:
            raise EvalError(f"{path} is not a docextract eval report")
        return EvalReport.from_dict(json.loads(meta[REPORT_METADATA_KEY]))
    return EvalReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
