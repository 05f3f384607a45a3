"""Parquet output: typed columns from the Pydantic model, atomic parts, the run manifest.

Layout of an output directory::

    results/part-<run_id>-<seq>.parquet    one row per extracted document
    failures/part-<run_id>-<seq>.parquet   one row per failed document
    evidence/part-<run_id>-<seq>.parquet   one row per leaf value of a result (written before the
                                           batch's results part; kept while its run's result counts)
    run.json                               config, versions, counts, timings (rewritten atomically)
    _tmp/                                  parts being written (never matched by results/*.parquet)

A part is written to ``_tmp/``, fsynced, then renamed into place, so a reader (or a
crash) never sees half a file.  ``out_dir`` may also be an object-store URI
(``s3://bucket/out``, see ``pipeline.fs``): there a part is one object upload, atomic for
readers, and ``_tmp/`` is not used.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import os
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import fs, layout
from pipeline.columns import EVIDENCE_SCHEMA, FAILURES_SCHEMA
from pipeline.errors import DamagedPart, OutputLost
from pipeline.layout import held_schema_name, newest_first, read_part_schema, results_part_schema  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

TABLES = ("results", "failures", "evidence")


def write_json(path: Path | str, obj: Any) -> None:
    fs.write_bytes_atomic(path, (json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n").encode())


def parquet_bytes(table: pa.Table, compression: str | dict[str, str] | None = None) -> bytes:
    """A whole Parquet file in memory, for one atomic write (a rename locally, one upload on S3)."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, **({} if compression is None else {"compression": compression}))
    return buf.getvalue().to_pybytes()


def _parts(directory: Path | str, pattern: str = "part-*.parquet") -> list[Any]:
    """Sorted parts of a table (flat, or in its date partitions: ``pipeline.layout``), none when missing."""
    return layout.list_parts(directory, pattern)


def _read_parquet(location: Path | str, columns: list[str] | None = None) -> pa.Table:
    """One part; on an object store only the requested columns are fetched (range reads)."""
    return layout.read_part_columns(location, columns)


LOST = ("disappeared during the run (deleted or moved?), with the parts it held: the run stops; "
        "run again to process the documents it lacks")


@dataclass
class PartWriter:
    out_dir: Path | str
    run_id: str
    results_schema: pa.Schema
    compression: str = "zstd"
    partition_by: str = "none"
    seq: int = 0
    _dir_fds: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if fs.is_uri(self.out_dir):
            return  # an object store has no directories to make
        self.out_dir = Path(self.out_dir)
        for sub in (*TABLES, "_tmp"):
            (self.out_dir / sub).mkdir(parents=True, exist_ok=True)
        # held open: a table directory deleted under the run is told from one made anew at its path
        for t in TABLES:
            try:
                self._dir_fds[t] = os.open(self.out_dir / t, os.O_RDONLY)
            except FileNotFoundError as e:  # removed as soon as made
                self.close()
                raise OutputLost(f"{self.out_dir / t} {LOST}") from e

    def _check_dir(self, table_name: str) -> None:
        """``OutputLost`` when the table's directory this writer made has been removed (link count 0)."""
        fd = self._dir_fds.get(table_name)
        if fd is not None and os.fstat(fd).st_nlink == 0:
            raise OutputLost(f"{fs.join(self.out_dir, table_name)} {LOST}")

    def close(self) -> None:
        for fd in self._dir_fds.values():
            os.close(fd)
        self._dir_fds = {}

    def _tmp_dir(self) -> Path | None:
        """Local parts are staged in ``_tmp/`` (cleaned at the next start); object-store parts need none."""
        return None if isinstance(self.out_dir, str) else self.out_dir / "_tmp"

    def _commit(
        self, table_name: str, rows: list[dict[str, Any]] | pa.Table, schema: pa.Schema
    ) -> Path | str | None:
        if not len(rows):
            return None
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
        if table_name != "results" or self.partition_by == "none":
            return self._write_part(table_name, None, table)
        written = [self._write_part(table_name, sub, t) for sub, t in layout.split(table, self.partition_by)]
        return written[-1]

    def _write_part(self, table_name: str, partition: str | None, table: pa.Table) -> Path | str:
        name = f"part-{self.run_id}-{self.seq:05d}.parquet"
        final = fs.join(self.out_dir, table_name, *([partition] if partition else []), name)
        self._check_dir(table_name)  # never into a directory made anew: its parts are gone, the counts would lie
        try:
            fs.write_bytes_atomic(final, parquet_bytes(table, self.compression), self._tmp_dir())
        except FileNotFoundError:
            self._check_dir(table_name)  # removed while this part was written
            raise
        try:
            self._check_dir(table_name)
        except OutputLost:  # removed while this part was written: it went into a new one (or with the old)
            fs.delete(final)
            raise
        return final

    def ensure_tables(self) -> None:
        """An empty part in a table with none, so ``SELECT ... FROM 'out/failures/*.parquet'`` works (0 rows)."""
        for name, schema in (("results", self.results_schema), ("failures", FAILURES_SCHEMA),
                             ("evidence", EVIDENCE_SCHEMA)):
            if not _parts(fs.join(self.out_dir, name)):
                column = layout.partition_column(self.partition_by) if name == "results" else None
                where = [f"{column}={layout.NULL_PARTITION}"] if column else []
                empty = fs.join(self.out_dir, name, *where, f"part-{self.run_id}-empty.parquet")
                fs.write_bytes_atomic(empty, parquet_bytes(schema.empty_table()), self._tmp_dir())

    def commit(self, results: list[dict[str, Any]] | pa.Table, failures: list[dict[str, Any]],
               evidence: pa.Table | None = None) -> list[Path | str]:
        """Write one part of each table (when it has rows).  Evidence first (a crash before its results part
        leaves rows no result holds: ``reconcile`` removes them), then results, then failures."""
        paths = [
            p
            for p in (
                self._commit("evidence", evidence if evidence is not None else [], EVIDENCE_SCHEMA),
                self._commit("results", results, self.results_schema),
                self._commit("failures", failures, FAILURES_SCHEMA),
            )
            if p is not None
        ]
        self.seq += 1
        return paths


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_run_id() -> str:
    return now_utc().strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


# --------------------------------------------------------------------------- reading

# What makes a part ours, besides its name (``part-*.parquet``): these columns, typed string, with
# no null ``doc_id``, ``stage`` or ``error_type`` and only our error types.  Every reader (a run,
# ``status``, ``inspect``) reads them, so a part that passes is safe for all of them.
KEY_COLUMNS = {
    "results": ("doc_id", "source_path", "run_key"),
    "failures": ("doc_id", "source_path", "run_key", "stage", "error_type"),
    "evidence": ("doc_id", "field", "run_key"),
}
_NOT_NULL = ("doc_id", "stage", "error_type", "field")
PART_PATTERN = "part-*.parquet"


@dataclass(frozen=True)
class SkippedPart:
    """A file a reader left out of a table, and why (damaged, not ours, or unreadable)."""

    location: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _check_ours(t: pa.Table, table: str) -> None:
    """``DamagedPart`` unless ``t`` has our key columns with our types and values."""
    for name in KEY_COLUMNS[table]:
        if name not in t.column_names:
            raise DamagedPart(f"no column {name!r}")
        typ = t.schema.field(name).type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            raise DamagedPart(f"column {name!r} is {typ}, not string")
        nulls = t.column(name).null_count if name in _NOT_NULL else 0
        if nulls:
            raise DamagedPart(f"{nulls} row(s) with a null {name!r}")
    if table == "failures":
        from pipeline.records import ErrorType

        known = {e.value for e in ErrorType}
        odd = sorted(set(t.column("error_type").unique().to_pylist()) - known)
        if odd:
            raise DamagedPart(f"error_type {odd[0]!r} is not one of docextract's")


def read_our_part(location: Path | str, table: str, columns: list[str] | None = None) -> pa.Table:
    """``columns`` (all when None) of one part of ``table`` ("results" or "failures"), checked to be
    ours.  Raises ``DamagedPart`` when the file is not readable Parquet of ours, ``OSError`` when it
    cannot be read at all.  pyarrow reports some damage (a bad footer, a corrupt page) as ``OSError``
    too, so an ``OSError`` is told apart by reading the raw bytes and parsing them again: if the bytes
    come but do not parse, the part is damaged; if they parse, the first error was passing."""
    wanted = None if columns is None else list(dict.fromkeys([*KEY_COLUMNS[table], *columns]))
    try:
        t = _read_parquet(location, columns=wanted)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise DamagedPart(_first_line(e)) from e
    except OSError as first:
        if getattr(first, "errno", None) is not None:
            raise  # a real I/O error (permissions, missing, network): not the file's fault
        data = fs.read_bytes(location)  # OSError here: cannot be read at all
        try:
            t = pq.read_table(pa.BufferReader(data), columns=wanted)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as e:
            raise DamagedPart(_first_line(e)) from e
    _check_ours(t, table)
    return t if columns is None else t.select(columns)


def _is_part_name(location: Any) -> bool:
    return fnmatch.fnmatchcase(fs.basename(location), PART_PATTERN)


STRAY_REASON = "not named like a part of docextract's (part-<run_id>-<seq>.parquet)"


def _skip(skipped: list[SkippedPart] | None, location: Any, e: BaseException) -> None:
    reason = str(e) if isinstance(e, DamagedPart) else f"cannot be read: {e}"
    log.info("skipping %s: %s", location, reason)  # the caller reports what it skipped
    if skipped is not None:
        skipped.append(SkippedPart(str(location), reason))


def _read_parts(
    out_dir: Path | str, table: str, columns: list[str] | None, strict: bool, skipped: list[SkippedPart] | None
) -> list[tuple[Any, pa.Table]]:
    """(location, rows) of every part of one table.  A run (``strict``: after ``reconcile`` moved aside
    what is not ours) raises on a part it cannot use, or it would take those documents for undone.
    A reader leaves out every ``*.parquet`` file that is not a part of ours and appends it, with the
    reason, to ``skipped``."""
    out = []
    for f in _parts(fs.join(out_dir, table), PART_PATTERN if strict else "*.parquet"):
        try:
            if not _is_part_name(f):
                raise DamagedPart(STRAY_REASON)
            out.append((f, read_our_part(f, table, columns)))
        except (DamagedPart, OSError) as e:
            if strict:
                raise
            _skip(skipped, f, e)
    return out


Keys = tuple[pa.Table | None, pa.Table | None]


def read_keys(out_dir: Path | str, strict: bool = False, skipped: list[SkippedPart] | None = None) -> Keys:
    """(results ``doc_id, run_key``, failures ``doc_id, run_key, error_type``); None for a table without parts."""
    res = [t for _, t in _read_parts(out_dir, "results", ["doc_id", "run_key"], strict, skipped)]
    fail = [t for _, t in _read_parts(out_dir, "failures", ["doc_id", "run_key", "error_type"], strict, skipped)]
    return _concat(res), _concat(fail)


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    """One table of parts (a part rewritten by another tool may differ in nullability or string width)."""
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def finished_in(keys: Keys, run_key: str) -> tuple[set[str], dict[str, str]]:
    """(doc_ids with a result, {doc_id: error_type} of failures) under ``run_key``."""
    results, failures = keys
    done: set[str] = set()
    failed: dict[str, str] = {}
    if results is not None:
        for d, k in zip(results.column("doc_id").to_pylist(), results.column("run_key").to_pylist(), strict=True):
            if k == run_key:
                done.add(d)
    if failures is not None:
        t = failures
        cols = (t.column(c).to_pylist() for c in ("doc_id", "run_key", "error_type"))
        for d, k, e in zip(*cols, strict=True):
            if k == run_key and d not in done:
                failed[d] = e
    return done, failed


def finished_docs(
    out_dir: Path | str, run_key: str, strict: bool = False, skipped: list[SkippedPart] | None = None
) -> tuple[set[str], dict[str, str]]:
    """(doc_ids with a result, {doc_id: error_type} of failures) under ``run_key``.  ``strict``: a part
    that cannot be read raises (a run must not take its documents for undone); otherwise it is left
    out and appended to ``skipped``."""
    return finished_in(read_keys(out_dir, strict, skipped), run_key)


def read_table(out_dir: Path | str, name: str, skipped: list[SkippedPart] | None = None) -> pa.Table | None:
    """All rows of one table (``results`` or ``failures``) for readers; None when it has no part.
    A part that is not ours, cannot be read, or whose columns cannot be merged with the others'
    (another schema's types) is left out and appended, with the reason, to ``skipped``."""
    merged: pa.Schema | None = None
    tables = []
    for f, t in _read_parts(out_dir, name, None, False, skipped):
        try:
            merged = t.schema if merged is None else pa.unify_schemas([merged, t.schema], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            _skip(skipped, f, DamagedPart(f"columns do not match the other parts': {_first_line(e)}"))
            continue
        tables.append(t)
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def table_parts(out_dir: Path | str, name: str) -> list[Any]:
    """The ``*.parquet`` parts of table ``name`` (``results``, ``failures``) sorted by name, so a run's
    parts come oldest first; none when the table does not exist.  For readers that need each part's rows
    apart (``read_table`` concatenates them)."""
    return _parts(fs.join(out_dir, name), "*.parquet")


def read_part(location: Path | str, skip: Collection[str] = ()) -> pa.Table:
    """One part without the columns named in ``skip`` (never read; on an object store, never fetched)."""
    if not skip:
        return _read_parquet(location)
    with fs.open_input_file(location) as f:
        names = pq.read_schema(f).names
    return _read_parquet(location, columns=[n for n in names if n not in skip])


def clean_tmp(out_dir: Path | str) -> int:
    """Remove parts left half-written in ``_tmp/`` by a killed run, and what a killed compaction left in
    ``_compact/`` (whether before or after its swap: see ``pipeline.compact``)."""
    from pipeline.compact import clean_staging

    clean_staging(out_dir)
    if fs.is_uri(out_dir):  # nothing is staged on an object store; remove strays all the same
        stray = fs.list_files(fs.join(out_dir, "_tmp"))
        for f in stray:
            fs.delete(f)
        return len(stray)
    tmp = Path(out_dir) / "_tmp"
    n = 0
    if tmp.is_dir():
        for f in tmp.iterdir():
            try:
                f.unlink()
                n += 1
            except OSError:
                pass
    return n


def _quarantine(out_dir: Path | str, table: str, location: Any, reason: str, moved: list[SkippedPart] | None) -> None:
    """Move a file that is not a part of ours to ``_quarantine/<table>/`` (never over an earlier one)."""
    dest = fs.join(out_dir, "_quarantine", table, fs.basename(location))
    if fs.exists(dest):
        dest = fs.join(out_dir, "_quarantine", table, f"{fs.basename(location)}.{uuid.uuid4().hex[:8]}")
    log.warning("%s is not a part of docextract's (%s): moved to %s", location, reason, dest)
    fs.move(location, dest)
    if moved is not None:
        moved.append(SkippedPart(str(location), reason))


def reconcile(out_dir: Path | str, quarantined: list[SkippedPart] | None = None) -> int:
    """Keep exactly one row per ``doc_id`` across results and failures: the newest, except that a
    retryable failure never replaces a result.

    A ``*.parquet`` file in ``results/`` or ``failures/`` that is not a part of ours (damaged on
    disk, not named ``part-*``, or without our key columns and types: see ``KEY_COLUMNS``) is moved to
    ``_quarantine/<table>/``, so the tables stay queryable and its documents count as not done; it is
    appended, with the reason, to ``quarantined``.  A part that cannot
    be read at all (``OSError``: permissions, the store not answering) raises: going on without
    it would process its documents a second time.

    Parts are named ``part-<run_id>-<seq>`` with ``run_id`` starting with a UTC
    timestamp, so the lexically greatest part holding a ``doc_id`` is its newest
    row.  Parts holding superseded rows are rewritten without them (atomically),
    or deleted when nothing is left.  Returns the number of rows removed.

    This is what makes ``--force``, ``--retry-failed`` and a changed run key leave
    one row per document, including after a crash between a commit and its
    clean-up (the next run reconciles first).
    """
    remote = fs.is_uri(out_dir)
    out_dir = out_dir if remote else Path(out_dir)
    parts: list[tuple[tuple[str, str], Any]] = []  # ((part name, table), location)
    for table in ("results", "failures"):
        parts.extend(((fs.basename(f), table), f) for f in _parts(fs.join(out_dir, table), "*.parquet"))
    evidence = _parts(fs.join(out_dir, "evidence"), "*.parquet")
    if not parts and not evidence:
        return 0
    from pipeline.records import RETRYABLE

    retryable = {e.value for e in RETRYABLE}
    # Rank of a row: a retryable failure never beats a result (a --force or new-model run whose
    # engine failed must not delete good rows); otherwise the newest part wins.
    best: dict[str, tuple[int, str, str]] = {}  # doc_id -> (priority, part name, table)
    ids_by_part: dict[Any, tuple[tuple[str, str], list[str], list[int], list[str]]] = {}
    content_paths: dict[str, tuple[str, str]] = {}  # source_path -> newest part holding a content-id row
    path_rows: list[tuple[Any, int, str, tuple[str, str]]] = []  # (part, row, source_path, key) of "path:" ids
    for key, f in parts:
        try:
            if not _is_part_name(f):
                raise DamagedPart(STRAY_REASON)
            t = read_our_part(f, key[1], [*KEY_COLUMNS[key[1]], "run_id"])
            ids = t.column("doc_id").to_pylist()
            runs = t.column("run_id").to_pylist()
            paths = t.column("source_path").to_pylist()
            etypes = t.column("error_type").to_pylist() if key[1] == "failures" else [None] * len(ids)
        except DamagedPart as e:
            _quarantine(out_dir, key[1], f, str(e), quarantined)
            continue
        prios = [0 if e in retryable else 1 for e in etypes]
        ids_by_part[f] = (key, ids, prios, runs)
        for i, (doc_id, path, prio) in enumerate(zip(ids, paths, prios, strict=True)):
            rank = (prio, *key)
            if doc_id not in best or rank > best[doc_id]:
                best[doc_id] = rank
            if doc_id.startswith("path:"):
                path_rows.append((f, i, path, key))
            elif path is not None and (path not in content_paths or key > content_paths[path]):
                content_paths[path] = key
    # A file once unreadable (id from its path) that has since been read (id from its bytes):
    # the newer content row replaces the old path row.
    stale_path_rows = {(f, i) for f, i, path, key in path_rows if path in content_paths and content_paths[path] > key}
    removed = 0
    counting: dict[str, str] = {}  # doc_id -> run_id of its result row that counts
    for f, (key, ids, prios, runs) in ids_by_part.items():
        keep = [best[d] == (p, *key) and (f, i) not in stale_path_rows
                for i, (d, p) in enumerate(zip(ids, prios, strict=True))]
        if key[1] == "results":
            counting.update((d, r) for d, r, k in zip(ids, runs, keep, strict=True) if k)
        if all(keep):
            continue
        removed += keep.count(False)
        # one delete or one rewrite per part: atomic for readers
        _keep_rows(out_dir, f, keep)
    return removed + _reconcile_evidence(out_dir, evidence, counting, quarantined)


def _keep_rows(out_dir: Path | str, f: Any, keep: list[bool]) -> None:
    """Rewrite a part with only the ``keep`` rows (atomically), or delete it when none is left."""
    if any(keep):
        kept = _read_parquet(f).filter(pa.array(keep))
        fs.write_bytes_atomic(f, parquet_bytes(kept, "zstd"), None if fs.is_uri(out_dir) else Path(out_dir) / "_tmp")
    else:
        fs.delete(f)


def _reconcile_evidence(out_dir: Path | str, parts: list[Any], counting: dict[str, str],
                        quarantined: list[SkippedPart] | None) -> int:
    """Keep an evidence row only while its document's result row that counts comes from the same run
    (``run_id``; one run commits a document once): evidence of a superseded result, of a result replaced
    by a failure, or written before a crash kept its results part from being written, is removed.  The
    rule holds whatever the parts are named, so compaction may merge evidence and results parts apart.
    Returns the number of rows removed."""
    removed = 0
    for f in parts:
        try:
            if not _is_part_name(f):
                raise DamagedPart(STRAY_REASON)
            t = read_our_part(f, "evidence", ["doc_id", "run_id"])
        except DamagedPart as e:
            _quarantine(out_dir, "evidence", f, str(e), quarantined)
            continue
        keep = [counting.get(d) == r for d, r in zip(t.column("doc_id").to_pylist(), t.column("run_id").to_pylist(), strict=True)]
        if not all(keep):
            removed += keep.count(False)
            _keep_rows(out_dir, f, keep)
    return removed

