"""Parquet output: typed columns from the Pydantic model, atomic parts, the run manifest.

Layout of an output directory::

    results/part-<run_id>-<seq>.parquet    one row per extracted document
    failures/part-<run_id>-<seq>.parquet   one row per failed document
    run.json                               config, versions, counts, timings (rewritten atomically)
    _tmp/                                  parts being written (never matched by results/*.parquet)

A part is written to ``_tmp/``, fsynced, then renamed into place, so a reader (or a
crash) never sees half a file.  ``out_dir`` may also be an object-store URI
(``s3://bucket/out``, see ``pipeline.fs``): there a part is one object upload, atomic for
readers, and ``_tmp/`` is not used.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import fs
from pipeline.columns import FAILURES_SCHEMA
from pipeline.errors import DamagedPart

log = logging.getLogger(__name__)


def write_json(path: Path | str, obj: Any) -> None:
    fs.write_bytes_atomic(path, (json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n").encode())


def parquet_bytes(table: pa.Table, compression: str | dict[str, str] | None = None) -> bytes:
    """A whole Parquet file in memory, for one atomic write (a rename locally, one upload on S3)."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, **({} if compression is None else {"compression": compression}))
    return buf.getvalue().to_pybytes()


def _parts(directory: Path | str, pattern: str = "part-*.parquet") -> list[Any]:
    """Sorted parts in a local directory or under an object-store prefix (none when missing)."""
    if fs.is_uri(directory):
        return fs.list_files(directory, recursive=False, pattern=pattern)
    return sorted(Path(directory).glob(pattern))


def _read_parquet(location: Path | str, columns: list[str] | None = None) -> pa.Table:
    """One part; on an object store only the requested columns are fetched (range reads)."""
    if fs.is_uri(location):
        with fs.open_input_file(location) as f:
            return pq.ParquetFile(f).read(columns=columns)
    return pq.read_table(location, columns=columns)


@dataclass
class PartWriter:
    out_dir: Path | str
    run_id: str
    results_schema: pa.Schema
    compression: str = "zstd"
    seq: int = 0

    def __post_init__(self) -> None:
        if fs.is_uri(self.out_dir):
            return  # an object store has no directories to make
        self.out_dir = Path(self.out_dir)
        for sub in ("results", "failures", "_tmp"):
            (self.out_dir / sub).mkdir(parents=True, exist_ok=True)

    def _tmp_dir(self) -> Path | None:
        """Local parts are staged in ``_tmp/`` (cleaned at the next start); object-store parts need none."""
        return None if isinstance(self.out_dir, str) else self.out_dir / "_tmp"

    def _commit(
        self, table_name: str, rows: list[dict[str, Any]] | pa.Table, schema: pa.Schema
    ) -> Path | str | None:
        if not len(rows):
            return None
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
        final = fs.join(self.out_dir, table_name, f"part-{self.run_id}-{self.seq:05d}.parquet")
        fs.write_bytes_atomic(final, parquet_bytes(table, self.compression), self._tmp_dir())
        return final

    def ensure_tables(self) -> None:
        """An empty part in a table with none, so ``SELECT ... FROM 'out/failures/*.parquet'`` works (0 rows)."""
        for name, schema in (("results", self.results_schema), ("failures", FAILURES_SCHEMA)):
            if not _parts(fs.join(self.out_dir, name)):
                empty = fs.join(self.out_dir, name, f"part-{self.run_id}-empty.parquet")
                fs.write_bytes_atomic(empty, parquet_bytes(schema.empty_table()), self._tmp_dir())

    def commit(self, results: list[dict[str, Any]] | pa.Table, failures: list[dict[str, Any]]) -> list[Path | str]:
        """Write one part of each table (when it has rows).  Results first, then failures."""
        paths = [
            p
            for p in (
                self._commit("results", results, self.results_schema),
                self._commit("failures", failures, FAILURES_SCHEMA),
            )
            if p is not None
        ]
        self.seq += 1
        return paths


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_run_id() -> str:
    return now_utc().strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


# --------------------------------------------------------------------------- reading




def _read_part_strict(location: Path | str, columns: list[str]) -> pa.Table:
    """Read ``columns`` of one part.  Raises ``DamagedPart`` when the file is readable but damaged (or
    lacks a column), ``OSError`` when it cannot be read at all.  pyarrow reports some damage (a bad
    footer, a corrupt page) as ``OSError`` too, so an ``OSError`` is told apart by reading the raw bytes
    and parsing them again: if the bytes come but do not parse, the part is damaged; if they parse, the
    first error was passing and the table is used."""
    try:
        t = _read_parquet(location, columns=columns)
    except pa.ArrowInvalid as e:
        raise DamagedPart(str(e)) from e
    except OSError as first:
        if getattr(first, "errno", None) is not None:
            raise  # a real I/O error (permissions, missing, network): not the file's fault
        data = fs.read_bytes(location)  # OSError here: cannot be read at all
        try:
            t = pq.read_table(pa.BufferReader(data), columns=columns)
        except (pa.ArrowInvalid, OSError) as e:
            raise DamagedPart(str(e)) from e
    missing = [c for c in columns if c not in t.column_names]
    if missing:
        raise DamagedPart(f"no column(s) {missing}")
    return t


def _read_columns(directory: Path | str, columns: list[str], strict: bool = False) -> pa.Table | None:
    """The columns of every part in a directory.  Readers (status, inspect) skip what they cannot read;
    a run (``strict``: only our ``part-*`` files, which ``reconcile`` has checked) must not: it would take
    those documents for undone."""
    files = _parts(directory, "part-*.parquet" if strict else "*.parquet")
    if not files:
        return None
    tables = []
    for f in files:
        try:
            tables.append(_read_part_strict(f, columns) if strict else _read_parquet(f, columns=columns))
        except (pa.ArrowInvalid, OSError, DamagedPart):
            if strict:
                raise
            continue  # not one of ours, or unreadable: never fatal for a reader
    return pa.concat_tables(tables) if tables else None


def finished_docs(out_dir: Path | str, run_key: str, strict: bool = False) -> tuple[set[str], dict[str, str]]:
    """(doc_ids with a result, {doc_id: error_type} of failures) under ``run_key``.  ``strict``: a part
    that cannot be read raises (a run must not take its documents for undone)."""
    done: set[str] = set()
    failed: dict[str, str] = {}
    t = _read_columns(fs.join(out_dir, "results"), ["doc_id", "run_key"], strict)
    if t is not None:
        for d, k in zip(t.column("doc_id").to_pylist(), t.column("run_key").to_pylist()):
            if k == run_key:
                done.add(d)
    t = _read_columns(fs.join(out_dir, "failures"), ["doc_id", "run_key", "error_type"], strict)
    if t is not None:
        cols = zip(t.column("doc_id").to_pylist(), t.column("run_key").to_pylist(), t.column("error_type").to_pylist())
        for d, k, e in cols:
            if k == run_key and d not in done:
                failed[d] = e
    return done, failed


def read_table(out_dir: Path | str, name: str) -> pa.Table | None:
    files = _parts(fs.join(out_dir, name), "*.parquet")
    if not files:
        return None
    return pa.concat_tables([_read_parquet(f) for f in files], promote_options="default")


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
    """Remove parts left half-written in ``_tmp/`` by a killed run."""
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


def reconcile(out_dir: Path | str, quarantined: list[str] | None = None) -> int:
    """Keep exactly one row per ``doc_id`` across results and failures: the newest, except that a
    retryable failure never replaces a result.

    A part that is not readable Parquet with our columns (damaged on disk, or a stranger's file
    named like a part) is moved to ``_quarantine/<table>/``, so the tables stay queryable and its
    documents count as not done; its location is appended to ``quarantined``.  A part that cannot
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
        parts.extend(((fs.basename(f), table), f) for f in _parts(fs.join(out_dir, table)))
    if not parts:
        return 0
    from pipeline.records import RETRYABLE

    retryable = {e.value for e in RETRYABLE}
    # Rank of a row: a retryable failure never beats a result (a --force or new-model run whose
    # engine failed must not delete good rows); otherwise the newest part wins.
    best: dict[str, tuple[int, str, str]] = {}  # doc_id -> (priority, part name, table)
    ids_by_part: dict[Any, tuple[tuple[str, str], list[str], list[int]]] = {}
    content_paths: dict[str, tuple[str, str]] = {}  # source_path -> newest part holding a content-id row
    path_rows: list[tuple[Any, int, str, tuple[str, str]]] = []  # (part, row, source_path, key) of "path:" ids
    for key, f in parts:
        cols = ["doc_id", "source_path"] + (["error_type"] if key[1] == "failures" else [])
        try:
            t = _read_part_strict(f, cols)
            ids = t.column("doc_id").to_pylist()
            paths = t.column("source_path").to_pylist()
            etypes = t.column("error_type").to_pylist() if key[1] == "failures" else [None] * len(ids)
        except DamagedPart as e:
            dest = fs.join(out_dir, "_quarantine", key[1], key[0])
            log.warning("%s is not a readable part (%s): moved to %s", f, e, dest)
            fs.move(f, dest)
            if quarantined is not None:
                quarantined.append(str(f))
            continue
        prios = [0 if e in retryable else 1 for e in etypes]
        ids_by_part[f] = (key, ids, prios)
        for i, (doc_id, path, prio) in enumerate(zip(ids, paths, prios)):
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
    for f, (key, ids, prios) in ids_by_part.items():
        keep = [best[d] == (p, *key) and (f, i) not in stale_path_rows for i, (d, p) in enumerate(zip(ids, prios))]
        if all(keep):
            continue
        removed += keep.count(False)
        # one delete or one rewrite per part: atomic for readers
        if any(keep):
            kept = _read_parquet(f).filter(pa.array(keep))
            fs.write_bytes_atomic(f, parquet_bytes(kept, "zstd"), None if remote else Path(out_dir) / "_tmp")
        else:
            fs.delete(f)
    return removed


def results_part_schema(out_dir: Path | str) -> pa.Schema | None:
    """The columns of the results already in an output (its newest part), or None when it has none."""
    parts = _parts(fs.join(out_dir, "results"))
    if not parts:
        return None
    newest = parts[-1]
    if fs.is_uri(newest):
        with fs.open_input_file(newest) as f:
            return pq.read_schema(f)
    return pq.read_schema(newest)


def held_schema_name(out_dir: Path | str) -> str | None:
    """The ``schema_name`` of the rows in the newest results part (None when unknown)."""
    parts = _parts(fs.join(out_dir, "results"))
    for part in reversed(parts):
        t = _read_parquet(part, columns=["schema_name"])
        if t.num_rows:
            return str(t.column("schema_name")[0].as_py())
    return None
