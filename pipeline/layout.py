"""Where a table's parts live: flat (``results/part-*.parquet``) or in Hive-style date partitions
(``results/extracted_date=2026-12-03/part-*.parquet``), and which folders under an output are tables.

A partition folder is named ``<column>=<YYYY-MM-DD>``; rows without a date go to
``<column>=__HIVE_DEFAULT_PARTITION__`` (Hive's and Spark's name for null, which DuckDB and pyarrow read
as null).  The column is never one of the file's own columns (pyarrow refuses a partition column whose
inferred type differs from the file's): ``extracted_date`` for the UTC date of ``extracted_at``, and
``<field>_day`` for a date field of the schema.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import fs

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
PARTITION_DIR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=([^/]+)$")
NOT_TABLES = {"runs"}  # folders under an output that are not tables (and every _name, .name)


def partition_column(partition_by: str) -> str | None:
    """The Hive partition column that ``output.partition_by`` writes (None: not partitioned)."""
    if partition_by == "none":
        return None
    return "extracted_date" if partition_by == "extracted_date" else f"{partition_by}_day"


def partition_by_of(column: str | None) -> str:
    """``output.partition_by`` from a partition column found on disk (the inverse of ``partition_column``)."""
    if column is None:
        return "none"
    return column.removesuffix("_day") if column != "extracted_date" else column


def source_column(partition_by: str) -> str:
    """The column of the rows the partition date is taken from."""
    return "extracted_at" if partition_by == "extracted_date" else partition_by


def check_partition_source(partition_by: str, schema: pa.Schema) -> str | None:
    """Why rows of ``schema`` cannot be partitioned by ``partition_by`` (None when they can)."""
    if partition_by == "none":
        return None
    col = source_column(partition_by)
    if col not in schema.names:
        dates = [f.name for f in schema if pa.types.is_date(f.type) or pa.types.is_timestamp(f.type)]
        return f"output.partition_by = {partition_by!r}: the results have no column {col!r} (date columns: {dates})"
    t = schema.field(col).type
    if not (pa.types.is_date(t) or pa.types.is_timestamp(t)):
        return f"output.partition_by = {partition_by!r}: column {col!r} is {t}, not a date"
    return None


def partition_values(table: pa.Table, partition_by: str) -> list[str]:
    """The partition value (``YYYY-MM-DD`` or the null partition) of each row."""
    col = table.column(source_column(partition_by))
    if pa.types.is_timestamp(col.type):
        col = pc.cast(col.cast(pa.timestamp(col.type.unit, tz="UTC")), pa.date32()) if col.type.tz else pc.cast(col, pa.date32())
    out: list[str] = []
    for v in col.to_pylist():
        out.append(v.isoformat() if isinstance(v, dt.date) else NULL_PARTITION)
    return out


def split(table: pa.Table, partition_by: str) -> list[tuple[str | None, pa.Table]]:
    """(partition folder or None, rows) of a table, one entry per date present (in date order)."""
    column = partition_column(partition_by)
    if column is None or table.num_rows == 0:
        return [(None, table)]
    values = pa.array(partition_values(table, partition_by))
    return [(f"{column}={v}", table.filter(pc.equal(values, v))) for v in sorted(set(values.to_pylist()))]


def list_parts(table_dir: Any, pattern: str = "part-*.parquet") -> list[Any]:
    """Parts of a table, flat or one partition folder deep, sorted by path (none when missing)."""
    if fs.is_uri(table_dir):
        prefix = str(table_dir).partition("?")[0].rstrip("/") + "/"
        found = []
        for f in fs.list_files(table_dir, recursive=True):
            rel = str(f).partition("?")[0][len(prefix):].split("/")
            if fnmatch.fnmatchcase(rel[-1], pattern) and (len(rel) == 1 or (len(rel) == 2 and PARTITION_DIR.match(rel[0]))):
                found.append(f)
        return sorted(found, key=str)
    root = Path(table_dir)
    if not root.is_dir():
        return []
    parts = [p for p in root.glob(pattern) if p.is_file()]
    for sub in root.iterdir():
        if sub.is_dir() and PARTITION_DIR.match(sub.name):
            parts.extend(p for p in sub.glob(pattern) if p.is_file())
    return sorted(parts, key=str)


def partition_dir_of(part: Any) -> str | None:
    """The partition folder a part lives in (None for a flat part)."""
    parent = str(part).partition("?")[0].rstrip("/").rsplit("/", 2)
    return parent[-2] if len(parent) == 3 and PARTITION_DIR.match(parent[-2]) else None


def held_partition_column(parts: list[Any]) -> str | None:
    """The partition column of a table's parts ("" when mixed: flat and partitioned, or two columns)."""
    cols = {m.group(1) if (m := PARTITION_DIR.match(d or "")) else None for d in map(partition_dir_of, parts)}
    if len(cols) > 1:
        return ""
    return next(iter(cols), None)


def table_names(out_dir: Any) -> list[str]:
    """The tables of an output: every folder directly under it (not ``_*``, ``.*``, ``runs``) holding parts."""
    if fs.is_uri(out_dir):
        prefix = str(out_dir).partition("?")[0].rstrip("/") + "/"
        names = {str(f).partition("?")[0][len(prefix):].split("/", 1)[0] for f in fs.list_files(out_dir, recursive=True)}
        names = {n for n in names if "/" not in n and not n.endswith(".json")}
    else:
        root = Path(out_dir)
        names = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    names = {n for n in names if not n.startswith(("_", ".")) and n not in NOT_TABLES}
    return sorted(n for n in names if list_parts(fs.join(out_dir, n)))


# --------------------------------------------------------------------------- what a table holds


def newest_first(parts: list[Any]) -> list[Any]:
    """Parts newest first: by name (``part-<run_id>-<seq>``, run ids start with a UTC time), whatever the partition."""
    return sorted(parts, key=fs.basename, reverse=True)


def read_part_columns(location: Path | str, columns: list[str] | None = None) -> pa.Table:
    """``columns`` (all when None) of one part; on an object store only those are fetched (range reads)."""
    if fs.is_uri(location):
        with fs.open_input_file(location) as f:
            return pq.ParquetFile(f).read(columns=columns)
    return pq.read_table(location, columns=columns)


def read_part_schema(location: Path | str) -> pa.Schema:
    """The columns of one part (its footer only)."""
    if fs.is_uri(location):
        with fs.open_input_file(location) as f:
            return pq.read_schema(f)
    return pq.read_schema(location)


def results_part_schema(out_dir: Path | str) -> pa.Schema | None:
    """The columns of the results already in an output (its newest part), or None when it has none."""
    parts = newest_first(list_parts(fs.join(out_dir, "results")))
    if not parts:
        return None
    return read_part_schema(parts[0])


def held_schema_name(out_dir: Path | str) -> str | None:
    """The ``schema_name`` of the rows in the newest results part (None when unknown)."""
    for part in newest_first(list_parts(fs.join(out_dir, "results"))):
        t = read_part_columns(part, ["schema_name"])
        if t.num_rows:
            return str(t.column("schema_name")[0].as_py())
    return None
