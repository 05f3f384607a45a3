"""The output location of a run: one writer at a time, what is already done, atomic commits.

``open()`` takes the lock (``flock`` on a local directory; on object storage a lease with a
heartbeat, ``pipeline.lease``), removes half-written parts, quarantines damaged ones and
reconciles (one row per document), finishes a table rewrite cut short, reads which documents are finished
under the run key, and checks the results' layout and columns against the run's (migrating the table for
new nullable columns under ``output.schema_change = "add_columns"``: ``pipeline.schema_change``).
``commit()`` writes one evidence part, one results part and one failures part (evidence first: its
rows count only while their document's counting result row has the same run_id, see ``reconcile``).  ``finish()`` reconciles again
(re-processed documents: the newest row wins) and makes sure both tables have a part;
``compact_if_needed()`` then merges small parts past ``output.compact_min_parts`` (``pipeline.compact``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import compact, fs, layout, schema_change
from pipeline.errors import CouldNotStart, DamagedPart, LeaseHeld, OutputLost
from pipeline.lease import Lease
from pipeline.records import ErrorType
from pipeline.store import (
    LOST,
    PartWriter,
    SkippedPart,
    clean_tmp,
    finished_docs,
    held_schema_name,
    reconcile,
    results_part_schema,
)

log = logging.getLogger(__name__)


LOCK_FILE = ".docextract.lock"


def writer_present(location: str | Path) -> bool:
    """Whether a run holds the output now (its ``flock`` on a local directory, a live lease on object
    storage).  Only looks: a shared lock taken and dropped at once, which a running run's exclusive lock
    refuses."""
    if fs.is_uri(location):
        from pipeline.lease import live_lease

        return live_lease(str(location)) is not None
    import fcntl

    try:
        fd = os.open(Path(location) / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:  # cannot tell (permissions): do not call the run abandoned
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock, if it was taken
    return False


class Finished:
    """What an output already holds under one run key (nothing, under ``--force``), and what a run
    should skip."""

    def __init__(self, done: set[str], failed: dict[str, str], retry_failed: bool):
        self.done, self.failed, self.retry_failed = done, failed, retry_failed

    def skip(self, doc_id: str) -> bool:
        if doc_id in self.done:
            return True
        if doc_id in self.failed:
            return not (self.retry_failed and ErrorType(self.failed[doc_id]).retryable)
        return False


@dataclass(frozen=True)
class OutputOptions:
    """The ``[output]`` settings an ``Output`` acts on (``pipeline.config.OutputConfig``)."""

    partition_by: str = "none"
    schema_change: str = "refuse"
    compact_min_parts: int = 0
    compact_target_mb: float = compact.DEFAULT_TARGET_MB

    @property
    def target_bytes(self) -> int:
        return int(self.compact_target_mb * compact.MB)

    @classmethod
    def from_config(cls, c: Any) -> OutputOptions:
        return cls(c.partition_by, c.schema_change, c.compact_min_parts, c.compact_target_mb)


class Output:
    def __init__(self, location: str | Path, run_id: str, arrow_schema: pa.Schema, compression: str,
                 lease_ttl_s: float, on_lease_lost: Callable[[str], None], schema_name: str = "",
                 options: OutputOptions | None = None, purpose: str = "run"):
        self.location: Path | str = location if fs.is_uri(location) else Path(location)
        self.run_id = run_id
        self.arrow_schema, self.compression = arrow_schema, compression
        self.schema_name = schema_name
        self.options = options or OutputOptions()
        self.purpose = purpose  # "run" or "compaction": named to whoever finds the lock taken
        self.lease_lost: str | None = None
        self.lease_ttl_s, self._lease_callback = lease_ttl_s, on_lease_lost
        self._lock_fd: int | None = None
        self._lease: Lease | None = None
        self._writer: PartWriter | None = None

    # -- opening ----------------------------------------------------------------------------

    def open(self, run_key: str, force: bool, retry_failed: bool) -> tuple[Finished, list[str]]:
        """Lock, clean up after a crash, and read what is finished; also the warnings to report."""
        self.lock()
        clean_tmp(self.location)
        quarantined: list[SkippedPart] = []
        try:
            reconciled = reconcile(self.location, quarantined)  # a crash may have left a superseded row behind
            compact.finish_pending(self.location, self.run_id, self.options.target_bytes, self.compression,
                                   self.check_lease)  # a schema or layout rewrite cut short
            done, failed = (set(), {}) if force else finished_docs(self.location, run_key, strict=True)
        except (OSError, pa.ArrowException, DamagedPart, compact.CompactError) as e:
            raise CouldNotStart(f"cannot read the existing output in {self.location}: {e}") from e
        self._check_layout()
        warnings = [f"removed {reconciled} superseded row(s) left by an earlier run"] if reconciled else []
        warnings += self._check_schema()
        warnings += [
            f"{q.location} is not a readable part of docextract's ({q.reason}): moved to _quarantine/; "
            "its documents are processed again"
            for q in quarantined
        ]
        return Finished(done, failed, retry_failed), warnings

    def lock(self) -> None:
        """One writer per output: a second run on it fails to start instead of racing the first."""
        if self._lock_fd is not None or self._lease is not None:
            return
        if isinstance(self.location, str):
            try:
                self._lease = Lease(self.location, self.run_id, ttl_s=self.lease_ttl_s,
                                    on_lost=self.on_lease_lost).acquire()
            except LeaseHeld as e:
                raise CouldNotStart(str(e)) from None
            except OSError as e:
                raise CouldNotStart(f"cannot write the lease in {self.location}: {e}") from e
            return
        import fcntl

        try:
            self.location.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.location / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a file in the way, a read-only or missing mount, no permission
            raise CouldNotStart(f"cannot write to the output {self.location}: {e.strerror or e}: pass an --out "
                                "directory this user can create and write") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, what = os.read(fd, 64).decode(errors="replace").strip().partition(" ")
            os.close(fd)
            raise CouldNotStart(f"another docextract {what or 'run'} (pid {pid or '?'}) is writing to "
                                f"{self.location}; try again when it has finished") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.purpose}".encode())
        self._lock_fd = fd

    def on_lease_lost(self, why: str) -> None:
        self.lease_lost = why
        self._lease_callback(why)

    def check_lease(self) -> None:
        """Raise before a change readers would see if another process took this output's lease over."""
        if self.lease_lost:
            raise compact.CompactError(f"stopped before changing {self.location}: {self.lease_lost}")

    def _check_layout(self) -> None:
        """Refuse a run whose ``output.partition_by`` differs from how the results here are laid out."""
        why = layout.check_partition_source(self.options.partition_by, self.arrow_schema)
        if why:
            raise CouldNotStart(why)
        parts = layout.list_parts(fs.join(self.location, "results"))
        held = layout.held_partition_column(parts)
        want = layout.partition_column(self.options.partition_by)
        if not parts or held == want:
            return
        now = "not partitioned" if held is None else f"partitioned by {held}" if held else "partly partitioned"
        keep = f"; or keep output.partition_by = {layout.partition_by_of(held)!r}" if held != "" else ""
        raise CouldNotStart(
            f"{self.location}/results is {now}, and this run asks for output.partition_by = "
            f"{self.options.partition_by!r}: rewrite it first with `docextract compact {self.location} "
            f"--partition-by {self.options.partition_by}`{keep}"
        )

    def _check_schema(self) -> list[str]:
        """Keep ``results`` one readable table: the same columns in every part.  A run whose columns only
        add nullable columns or struct fields migrates the table under ``output.schema_change =
        "add_columns"`` (every part rewritten, atomically); any other difference is refused (exit 2)."""
        held = results_part_schema(self.location)
        if held is None:
            return []
        d = schema_change.diff(held, self.arrow_schema)
        if d.same:
            return []
        where = (f"{self.location}/results holds rows of schema {held_schema_name(self.location) or '?'} whose "
                 f"columns differ from schema {self.schema_name!r} ({d.describe()})")
        if not d.additive:
            raise CouldNotStart(
                f"{where}: a changed type or a dropped or renamed column cannot be applied to the rows already "
                "there (only new nullable columns can, with --allow-schema-change); write this schema's results "
                "to another output"
            )
        if self.options.schema_change != "add_columns":
            raise CouldNotStart(
                f"{where}: pass --allow-schema-change (output.schema_change = \"add_columns\") to add the new "
                "columns to every existing row (null until the document is reprocessed), or write this schema's "
                "results to another output"
            )
        try:
            rep = compact.rewrite_whole(self.location, "results", self.arrow_schema, None, self.run_id,
                                        self.options.target_bytes, self.compression, self.check_lease)
            schema_change.record(self.location, "results", self.arrow_schema, self.schema_name, self.run_id,
                                 d.describe(), self.options.partition_by)
        except (OSError, pa.ArrowException, compact.CompactError) as e:
            raise CouldNotStart(f"cannot add the new columns to {self.location}/results: {e}") from e
        return [f"schema change: {d.describe()} added to the {rep.rows_rewritten} existing row(s) of "
                f"{self.location}/results ({rep.parts_rewritten} part(s) rewritten), null until reprocessed"]

    # -- writing ----------------------------------------------------------------------------

    @property
    def writer(self) -> PartWriter:
        if self._writer is None:
            self._writer = PartWriter(self.location, self.run_id, self.arrow_schema, self.compression,
                                      self.options.partition_by)
        return self._writer

    def commit(self, results: list[dict[str, Any]] | pa.Table, failures: list[dict[str, Any]],
               evidence: pa.Table | None = None) -> None:
        writer = self.writer  # makes the tables' directories the first time: before the check, not after
        self.check_present()
        writer.commit(results, failures, evidence)

    def finish(self) -> None:
        self.check_present()
        reconcile(self.location)  # re-processed documents (--force, --retry-failed, new run key): newest row wins
        self.writer.ensure_tables()
        if "results" not in schema_change.read_history(self.location).get("tables", {}):
            schema_change.record(self.location, "results", self.arrow_schema, self.schema_name, self.run_id,
                                 "created" if self.writer.seq else "adopted", self.options.partition_by)

    def compact_if_needed(self) -> list[compact.TableReport]:
        """After ``finish``: compact every table holding ``output.compact_min_parts`` small parts or more."""
        n = self.options.compact_min_parts
        if not n:
            return []
        if self._writer is not None:  # the tables' directories may be swapped: this run writes no more
            self._writer.close()
            self._writer = None
        reports = []
        for table in layout.table_names(self.location):
            plan = compact.plan_compaction(self.location, table, self.options.target_bytes)
            if len(plan.rewrite) >= n:  # small parts that have a small neighbour in their folder
                reports.append(compact.rewrite_table(self.location, plan, self.run_id, self.options.target_bytes,
                                                     self.compression, self.check_lease))
        return reports

    def check_present(self) -> None:
        """``OutputLost`` when the local directory this run locked is gone, or is another one now."""
        if self._lock_fd is None or not isinstance(self.location, Path):
            return
        held = os.fstat(self._lock_fd)
        try:
            now = os.stat(self.location / LOCK_FILE)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            raise OutputLost(f"the output directory {self.location} {LOST}")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._lease is not None:
            try:
                self._lease.release()
            except OSError as e:  # it expires by itself (ttl)
                log.warning("could not remove the lease: %s", e)
            self._lease = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
