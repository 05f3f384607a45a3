"""Compaction: rewrite a table's small parts into few large ones, and the same machinery for the two
changes that rewrite a whole table (new nullable columns, ``pipeline.schema_change``; a new date
partitioning, ``pipeline.layout``).

Every nightly batch leaves a small part; after a year a table is thousands of files that every query and
every run's reconcile opens.  ``compact`` merges the parts under half of ``target_bytes`` (per partition
folder, oldest first) into parts of about ``target_bytes``; large parts are left alone.  It holds the
output's lock (or lease) like a run, so a run and a compaction never interleave: the one that comes second
exits 2 naming the other.  It reconciles first (the rule every run applies at its start and end: one
row per document, the newest wins), so the merged parts drop superseded rows and hold exactly one row per
document.

How a table is swapped, so a reader never sees a row twice or misses one:

* Local directory: the new table is built in ``OUT/_compact/<table>/``: hard links to the parts kept,
  new files for the merged ones; then ``renameat2(RENAME_EXCHANGE)`` swaps that directory with
  ``OUT/<table>`` in one step, and the old one (now in ``_compact/``) is deleted.  At every instant
  ``OUT/<table>`` is the whole old table or the whole new one; a crash leaves at most ``_compact/``, which
  is deleted at the next start (before the swap it holds the unfinished new table, after it the old one:
  either way it is not the table).  A query that listed the old files and opens one after the swap
  fails (file not found) and can be run again; it never returns wrong counts.
* Object storage (no rename) and local filesystems without ``RENAME_EXCHANGE``: the merged parts are
  uploaded first, then the old parts are deleted.  For that window (seconds) a glob sees the moved rows
  twice (byte-for-byte the same row: same ``doc_id`` and ``run_id``).  A crash in the window leaves
  those duplicates to the next run or compaction, whose reconcile keeps the merged copy (its part is the
  newest) and deletes the old parts.  A whole-table rewrite records its target in ``_state/schema.json``
  first and is finished by the next run or compaction if it was cut short.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import fs, layout
from pipeline.errors import DocextractError
from pipeline.schema_change import HISTORY, conform, read_history
from pipeline.store import _read_parquet, parquet_bytes, write_json

log = logging.getLogger(__name__)

STAGING = "_compact"
DEFAULT_TARGET_MB = 64.0
MB = 1024 * 1024


class CompactError(DocextractError, RuntimeError):
    """A compaction stopped before it changed the table (the lease was lost, parts that cannot be merged)."""


@dataclass
class TableReport:
    table: str
    parts_before: int
    bytes_before: int
    parts_rewritten: int = 0
    parts_written: int = 0
    rows_rewritten: int = 0
    parts_after: int = 0
    bytes_after: int = 0
    swap: str = ""  # "exchange" | "upload-then-delete" | "" (nothing to do)


@dataclass
class CompactReport:
    out_dir: str
    dry_run: bool
    superseded_dropped: int = 0
    tables: list[TableReport] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The report as ``docextract compact`` prints it."""
        verb = "would rewrite" if self.dry_run else "rewrote"
        out = []
        for t in self.tables:
            line = f"{t.table}: {t.parts_before} parts ({t.bytes_before / 1e6:.1f} MB); {verb} {t.parts_rewritten}"
            if not self.dry_run:
                line += f" into {t.parts_written}; now {t.parts_after} parts ({t.bytes_after / 1e6:.1f} MB)"
            out.append(line)
        return out + ([f"removed {self.superseded_dropped} superseded row(s)"] if self.superseded_dropped else [])


@dataclass
class Rewrite:
    """What to do to one table: parts to rewrite (the others are kept), into which columns and layout."""

    table: str
    parts: list[Any]
    sizes: dict[str, int]
    rewrite: list[Any]
    schema: pa.Schema | None = None  # conform every rewritten part to these columns
    partition_by: str | None = None  # re-split rewritten rows by this partitioning


def clean_staging(out_dir: Any) -> None:
    """Delete what a killed compaction left in ``_compact/`` (never the table: see the module docstring)."""
    staging = fs.join(out_dir, STAGING)
    if fs.is_uri(out_dir):
        for f in fs.list_files(staging):
            fs.delete(f)
    elif Path(staging).exists():
        shutil.rmtree(staging)


def _sizes(table_dir: Any, parts: list[Any]) -> dict[str, int]:
    if fs.is_uri(table_dir):
        stats = fs.list_file_stats(str(table_dir))
        return {str(p): (stats.get(str(p)) or (0,))[0] for p in parts}
    return {str(p): os.stat(p).st_size for p in parts}


def plan_compaction(out_dir: Any, table: str, target_bytes: int) -> Rewrite:
    """The small parts (under half the target) of each partition folder holding two or more of them."""
    parts = layout.list_parts(fs.join(out_dir, table))
    sizes = _sizes(fs.join(out_dir, table), parts)
    small: dict[str | None, list[Any]] = {}
    for p in parts:
        if sizes[str(p)] < target_bytes / 2:
            small.setdefault(layout.partition_dir_of(p), []).append(p)
    rewrite = sorted((p for group in small.values() if len(group) > 1 for p in group), key=fs.basename)
    return Rewrite(table, parts, sizes, rewrite)


def plan_rewrite(out_dir: Any, table: str, schema: pa.Schema | None, partition_by: str | None) -> Rewrite:
    """Every part whose columns differ from ``schema`` or whose folder does not follow ``partition_by``."""
    from pipeline.store import read_part_schema

    parts = layout.list_parts(fs.join(out_dir, table))
    column = layout.partition_column(partition_by) if partition_by is not None else None
    rewrite = []
    for p in parts:
        d = layout.partition_dir_of(p)
        misplaced = partition_by is not None and (d.split("=", 1)[0] if d else None) != column
        if misplaced or (schema is not None and not read_part_schema(p).equals(schema, check_metadata=False)):
            rewrite.append(p)
    return Rewrite(table, parts, _sizes(fs.join(out_dir, table), parts), sorted(rewrite, key=fs.basename),
                   schema, partition_by)


# --------------------------------------------------------------------------- the merge


class _Merger:
    """Rows of the rewritten parts, buffered per (partition folder, columns), flushed as ~target-size parts."""

    def __init__(self, emit: Callable[[str | None, pa.Table], None], target_bytes: int):
        self.emit, self.target = emit, target_bytes
        self.buf: dict[tuple[str | None, pa.Schema], tuple[list[pa.Table], float]] = {}

    def add(self, sub: str | None, t: pa.Table, est_bytes: float) -> None:
        key = (sub, t.schema.remove_metadata())
        tables, size = self.buf.get(key, ([], 0.0))
        tables.append(t)
        size += est_bytes
        if size >= self.target:
            self.emit(sub, pa.concat_tables(tables))
            tables, size = [], 0.0
        self.buf[key] = (tables, size)

    def flush(self) -> None:
        for (sub, _), (tables, _) in sorted(self.buf.items(), key=lambda kv: str(kv[0][0])):
            if tables and sum(t.num_rows for t in tables):
                self.emit(sub, pa.concat_tables(tables))
        self.buf = {}


def _merge(plan: Rewrite, target_bytes: int, emit: Callable[[str | None, pa.Table], None]) -> int:
    """Read the parts to rewrite (oldest first) and emit merged parts; returns the rows read."""
    emitted: list[pa.Schema] = []

    def counted(sub: str | None, t: pa.Table) -> None:
        emitted.append(t.schema)
        emit(sub, t)

    merger = _Merger(counted, target_bytes)
    rows, empty = 0, None
    for p in plan.rewrite:
        t = _read_parquet(p)
        rows += t.num_rows
        if plan.schema is not None:
            t = conform(t, plan.schema)
        empty = t.schema.empty_table()
        size = plan.sizes[str(p)]
        if plan.partition_by is None:
            merger.add(layout.partition_dir_of(p), t, size)
            continue
        for sub, piece in layout.split(t, plan.partition_by):
            merger.add(sub, piece, size * piece.num_rows / max(t.num_rows, 1))
    merger.flush()
    if not emitted and empty is not None and len(plan.rewrite) == len(plan.parts):  # keep the table queryable
        if plan.partition_by is None:
            sub = layout.partition_dir_of(plan.rewrite[0])
        else:
            column = layout.partition_column(plan.partition_by)
            sub = f"{column}={layout.NULL_PARTITION}" if column else None
        emit(sub, empty)
    return rows


# --------------------------------------------------------------------------- swapping


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where not supported."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def _write(location: Any, table: pa.Table, compression: str, tmp: Path | None) -> None:
    fs.write_bytes_atomic(location, parquet_bytes(table, compression), tmp)


def _swap_local(out: Path, plan: Rewrite, name: Callable[[], str], target_bytes: int, compression: str,
                check: Callable[[], None]) -> tuple[int, str] | None:
    """Build the new table beside the old and exchange the two directories (None: exchange unsupported)."""
    table_dir, new = out / plan.table, out / STAGING / plan.table
    if new.exists():
        shutil.rmtree(new)
    new.mkdir(parents=True)
    if not _exchange(new, new):  # probe: same path both sides is a no-op that tells support apart
        shutil.rmtree(out / STAGING)
        return None
    rewritten = {str(p) for p in plan.rewrite}
    for f in sorted(table_dir.rglob("*")):  # every file kept (other parts, files that are not ours) is linked
        if f.is_file() and str(f) not in rewritten:
            dest = new / f.relative_to(table_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, dest)

    def emit(sub: str | None, t: pa.Table) -> None:
        _write(new.joinpath(*([sub] if sub else []), name()), t, compression, out / "_tmp")

    rows = _merge(plan, target_bytes, emit)
    for d in [new, *(p for p in new.rglob("*") if p.is_dir())]:
        fs.fsync_dir(d)
    check()
    if not _exchange(new, table_dir):
        raise CompactError(f"{out}: the filesystem stopped supporting RENAME_EXCHANGE mid-compaction")
    fs.fsync_dir(out)
    fs.fsync_dir(out / STAGING)
    shutil.rmtree(out / STAGING)  # the old table
    return rows, "exchange"


def _swap_in_place(out: Any, plan: Rewrite, name: Callable[[], str], target_bytes: int, compression: str,
                   check: Callable[[], None]) -> tuple[int, str]:
    """Upload the merged parts, then delete the old ones (object storage: see the module docstring)."""
    tmp = None if fs.is_uri(out) else Path(out) / "_tmp"

    def emit(sub: str | None, t: pa.Table) -> None:
        check()
        _write(fs.join(out, plan.table, *([sub] if sub else []), name()), t, compression, tmp)

    rows = _merge(plan, target_bytes, emit)
    check()
    for p in plan.rewrite:
        fs.delete(p)
    return rows, "upload-then-delete"


def rewrite_table(out_dir: Any, plan: Rewrite, run_id: str, target_bytes: int, compression: str = "zstd",
                  check: Callable[[], None] = lambda: None) -> TableReport:
    """Carry out ``plan`` (the caller holds the output's lock).  ``check`` raises to stop before a change
    readers would see (a lost lease)."""
    rep = TableReport(plan.table, len(plan.parts), sum(plan.sizes.values()), parts_rewritten=len(plan.rewrite))
    if not plan.rewrite:
        rep.parts_after, rep.bytes_after = rep.parts_before, rep.bytes_before
        return rep
    seq = iter(range(10**6))

    def name() -> str:
        rep.parts_written += 1
        return f"part-{run_id}-compact-{next(seq):05d}.parquet"

    done = None
    if not fs.is_uri(out_dir):
        done = _swap_local(Path(out_dir), plan, name, target_bytes, compression, check)
    if done is None:
        done = _swap_in_place(out_dir, plan, name, target_bytes, compression, check)
    rep.rows_rewritten, rep.swap = done
    after = layout.list_parts(fs.join(out_dir, plan.table))
    rep.parts_after, rep.bytes_after = len(after), sum(_sizes(fs.join(out_dir, plan.table), after).values())
    log.info("%s/%s: %d part(s) rewritten into %d (%d rows, %s)", out_dir, plan.table, rep.parts_rewritten,
             rep.parts_written, rep.rows_rewritten, rep.swap)
    return rep


# --------------------------------------------------------------------------- pending whole-table rewrites


def record_pending(out_dir: Any, table: str, schema: pa.Schema | None, partition_by: str | None) -> None:
    """Note a whole-table rewrite before it starts, so one cut short is finished by the next run."""
    doc = read_history(out_dir)
    doc["pending"] = {
        "table": table,
        "schema": None if schema is None else base64.b64encode(schema.serialize().to_pybytes()).decode(),
        "partition_by": partition_by,
    }
    write_json(fs.join(out_dir, *HISTORY), doc)


def clear_pending(out_dir: Any) -> None:
    doc = read_history(out_dir)
    if doc.pop("pending", None) is not None:
        write_json(fs.join(out_dir, *HISTORY), doc)


def pending(out_dir: Any) -> tuple[str, pa.Schema | None, str | None] | None:
    """(table, columns, partitioning) of a whole-table rewrite that was started and not finished."""
    p = read_history(out_dir).get("pending")
    if not isinstance(p, dict):
        return None
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(p["schema"]))) if p.get("schema") else None
    return str(p["table"]), schema, p.get("partition_by")


def rewrite_whole(out_dir: Any, table: str, schema: pa.Schema | None, partition_by: str | None, run_id: str,
                  target_bytes: int, compression: str = "zstd", check: Callable[[], None] = lambda: None) -> TableReport:
    """Rewrite every part of ``table`` that differs from ``schema`` / ``partition_by``, recorded as pending
    until done (idempotent: parts already rewritten are kept when it is run again)."""
    record_pending(out_dir, table, schema, partition_by)
    rep = rewrite_table(out_dir, plan_rewrite(out_dir, table, schema, partition_by), run_id, target_bytes,
                        compression, check)
    clear_pending(out_dir)
    return rep


def finish_pending(out_dir: Any, run_id: str, target_bytes: int, compression: str = "zstd",
                   check: Callable[[], None] = lambda: None) -> TableReport | None:
    p = pending(out_dir)
    if p is None:
        return None
    log.warning("%s: finishing a rewrite of %s that was cut short", out_dir, p[0])
    return rewrite_whole(out_dir, *p, run_id, target_bytes, compression, check)


def compact(out_dir: str | Path, target_mb: float = DEFAULT_TARGET_MB, dry_run: bool = False,
            partition_by: str | None = None, compression: str = "zstd", lease_ttl_s: float = 600.0) -> CompactReport:
    """Compact every table of an output (``docextract compact``).  Takes the output's lock or lease
    (``CouldNotStart`` when a run or another compaction holds it), reconciles (one row per document),
    finishes a rewrite cut short, then merges small parts.  ``partition_by`` (``output.partition_by``
    values) rewrites ``results`` into that layout.  ``dry_run``: only report what would be rewritten
    (no lock, nothing written)."""
    from pipeline.output import Output
    from pipeline.store import new_run_id

    t0 = time.perf_counter()
    run_id = new_run_id()
    location = out_dir if fs.is_uri(out_dir) else Path(out_dir)
    if not fs.exists(location):
        raise CompactError(f"{out_dir} does not exist")
    target = int(target_mb * MB)
    report = CompactReport(str(out_dir), dry_run)
    if partition_by is not None:
        from pipeline.store import results_part_schema

        held = results_part_schema(location)
        why = None if held is None else layout.check_partition_source(partition_by, held)
        if why:
            raise CompactError(why)
    if dry_run:
        for table in layout.table_names(location):
            plan = _plan(location, table, target, partition_by)
            report.tables.append(TableReport(table, len(plan.parts), sum(plan.sizes.values()), len(plan.rewrite)))
        return report
    out = Output(location, f"compact-{run_id}", pa.schema([]), compression, lease_ttl_s, on_lease_lost=lambda why: None,
                 purpose="compaction")
    out.lock()
    try:
        from pipeline.store import clean_tmp, reconcile

        clean_tmp(location)
        report.superseded_dropped = reconcile(location)
        finish_pending(location, run_id, target, compression, out.check_lease)
        for table in layout.table_names(location):
            plan = _plan(location, table, target, partition_by)
            if plan.partition_by is not None:
                report.tables.append(rewrite_whole(location, table, None, plan.partition_by, run_id, target,
                                                   compression, out.check_lease))
            else:
                report.tables.append(rewrite_table(location, plan, run_id, target, compression, out.check_lease))
    finally:
        out.close()
    report.seconds = time.perf_counter() - t0
    return report


def _plan(location: Any, table: str, target: int, partition_by: str | None) -> Rewrite:
    """A re-layout of ``results`` when ``partition_by`` differs from what it holds, else a compaction."""
    if table == "results" and partition_by is not None:
        held = layout.held_partition_column(layout.list_parts(fs.join(location, table)))
        if held != layout.partition_column(partition_by):
            return plan_rewrite(location, table, None, partition_by)
    return plan_compaction(location, table, target)



