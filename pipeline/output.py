"""The output location of a run: one writer at a time, what is already done, atomic commits.

``open()`` takes the lock (``flock`` on a local directory; on object storage a lease with a
heartbeat, ``pipeline.lease``), removes half-written parts, quarantines damaged ones and
reconciles (one row per document), then reads which documents are finished under the run key.
``commit()`` writes one evidence part, one results part and one failures part (evidence first: its
rows count only once the results part of the same name holds their documents, see ``reconcile``).  ``finish()`` reconciles again
(re-processed documents: the newest row wins) and makes sure both tables have a part.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import fs
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


class Output:
    def __init__(self, location: str | Path, run_id: str, arrow_schema: pa.Schema, compression: str,
                 lease_ttl_s: float, on_lease_lost: Callable[[str], None], schema_name: str = ""):
        self.location: Path | str = location if fs.is_uri(location) else Path(location)
        self.run_id = run_id
        self.arrow_schema, self.compression = arrow_schema, compression
        self.schema_name = schema_name
        self.lease_ttl_s, self.on_lease_lost = lease_ttl_s, on_lease_lost
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
            done, failed = (set(), {}) if force else finished_docs(self.location, run_key, strict=True)
        except (OSError, pa.ArrowException, DamagedPart) as e:
            raise CouldNotStart(f"cannot read the existing output in {self.location}: {e}") from e
        self._check_schema()
        warnings = [f"removed {reconciled} superseded row(s) left by an earlier run"] if reconciled else []
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
            fd = os.open(self.location / ".docextract.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a file in the way, a read-only or missing mount, no permission
            raise CouldNotStart(f"cannot write to the output {self.location}: {e.strerror or e}: pass an --out "
                                "directory this user can create and write") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            raise CouldNotStart(f"another docextract run (pid {holder or '?'}) is writing to {self.location}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _check_schema(self) -> None:
        """Refuse to add rows whose columns differ from the results already here: one glob over
        ``results/*.parquet`` must stay one readable table."""
        held = results_part_schema(self.location)
        if held is None or held.equals(self.arrow_schema, check_metadata=False):
            return
        mine = {f.name: f.type for f in self.arrow_schema}
        theirs = {f.name: f.type for f in held}
        diff = [f"+{n}" for n in mine if n not in theirs] + [f"-{n}" for n in theirs if n not in mine]
        diff += [f"{n}: {theirs[n]} -> {mine[n]}" for n in mine if n in theirs and mine[n] != theirs[n]]
        raise CouldNotStart(
            f"{self.location}/results holds rows of schema {held_schema_name(self.location) or '?'} whose columns "
            f"differ from schema {self.schema_name!r} ({', '.join(diff[:8]) or 'column order'}): write this "
            "schema's results to another output"
        )

    # -- writing ----------------------------------------------------------------------------

    @property
    def writer(self) -> PartWriter:
        if self._writer is None:
            self._writer = PartWriter(self.location, self.run_id, self.arrow_schema, self.compression)
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

    def check_present(self) -> None:
        """``OutputLost`` when the local directory this run locked is gone, or is another one now."""
        if self._lock_fd is None or not isinstance(self.location, Path):
            return
        held = os.fstat(self._lock_fd)
        try:
            now = os.stat(self.location / ".docextract.lock")
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
