"""One writer per output on object storage: a lease object with a heartbeat.

A local output directory is guarded by ``flock`` (see ``Runner._lock_output``).  An object store has
no locks, so a run writes ``_state/lease.json`` (its run id, host, pid, heartbeat time), checks after a
pause that the lease it reads back is still its own (two runs that start together: the last writer
keeps it, the other stops), and refreshes the heartbeat from a background thread, reading the lease
before each refresh: a run that finds another run's id there (a racing start whose write landed late,
or a takeover after its own heartbeat stalled) is told and stops after its current batch.  A run that finds
another run's lease with a fresh heartbeat does not start (exit 2, saying whose it is); a lease whose
heartbeat is older than ``ttl_s`` was left by a run that died and is taken over.  The lease is deleted
when the run ends.

This is what an overlapping cron schedule needs (last night's run still going when tonight's starts);
it is not a lock for adversarial writers: S3 has no compare-and-swap that pyarrow exposes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline import fs
from pipeline.errors import LeaseHeld

log = logging.getLogger(__name__)

PARTS = ("_state", "lease.json")
FIRST_CHECK_S = 5.0


def live_lease(out_dir: str, ttl_s: float | None = None) -> dict[str, Any] | None:
    """The lease of the run writing to ``out_dir`` now: None when there is none or its heartbeat is
    older than its ttl (the run died).  Only reads."""
    lease = Lease(out_dir, run_id="", ttl_s=ttl_s or 0.0)
    found = lease._read()
    if found is None:
        return None
    ttl = ttl_s if ttl_s is not None else found.get("ttl_s")
    if not isinstance(ttl, int | float) or lease._age_s(found) >= ttl:
        return None
    return found


class Lease:
    def __init__(
        self,
        out_dir: str,
        run_id: str,
        ttl_s: float = 600.0,
        settle_s: float = 0.5,
        on_lost: Callable[[str], None] | None = None,
    ):
        self.location = fs.join(out_dir, *PARTS)
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.settle_s = settle_s
        self.on_lost = on_lost  # called (from the heartbeat thread) if another run took the lease over
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat_at": dt.datetime.now(dt.UTC).isoformat(),
            "ttl_s": self.ttl_s,
        }

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(fs.read_bytes(self.location))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # unreadable lease: treat as absent, but say so
            log.warning("ignoring unreadable lease %s: %s", self.location, e)
            return None

    def _write(self) -> None:
        fs.write_bytes_atomic(self.location, json.dumps(self._body()).encode())

    def _age_s(self, lease: dict[str, Any]) -> float:
        try:
            beat = dt.datetime.fromisoformat(lease["heartbeat_at"])
        except (KeyError, TypeError, ValueError):
            return float("inf")
        return (dt.datetime.now(dt.UTC) - beat).total_seconds()

    def _held_by_other(self, lease: dict[str, Any] | None) -> str | None:
        if lease is None or lease.get("run_id") == self.run_id:
            return None
        age = self._age_s(lease)
        if age >= self.ttl_s:
            log.warning("taking over the lease of run %s (no heartbeat for %.0f s)", lease.get("run_id"), age)
            return None
        return (
            f"another docextract run ({lease.get('run_id')} on {lease.get('host')}, pid {lease.get('pid')}) is writing "
            f"to this output (heartbeat {age:.0f} s ago). If it died, wait {self.ttl_s - age:.0f} s or delete "
            f"{self.location}"
        )

    def acquire(self) -> Lease:
        """Take the lease or raise ``LeaseHeld``; then keep it fresh until ``release``."""
        held = self._held_by_other(self._read())
        if held:
            raise LeaseHeld(held)
        t0 = time.monotonic()
        self._write()
        # A run that read "free" at the same moment has written by now: its read-to-write gap is about
        # one write, so wait at least twice as long as ours took (slow stores take longer).
        time.sleep(max(self.settle_s, 2 * (time.monotonic() - t0)))
        held = self._held_by_other(self._read())
        if held:
            raise LeaseHeld(held)
        self._thread = threading.Thread(target=self._beat, name="docextract-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        wait = min(self.ttl_s / 4, FIRST_CHECK_S)  # soon after starting: a racing run's slow write lands late
        while not self._stop.wait(wait):
            wait = self.ttl_s / 4
            try:
                lease = self._read()
                if lease is not None and lease.get("run_id") != self.run_id:
                    self.lost = (
                        f"run {lease.get('run_id')} on {lease.get('host')} took the lease of {self.location} over "
                        "(this run's heartbeat had stopped for longer than its ttl)"
                    )
                    log.error("%s", self.lost)
                    if self.on_lost is not None:
                        self.on_lost(self.lost)
                    return
                self._write()
            except Exception as e:  # the run goes on; a second run may take over once the lease looks dead
                log.warning("could not refresh the lease %s: %s", self.location, e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        lease = self._read()
        if lease is not None and lease.get("run_id") == self.run_id:
            fs.delete(self.location)
