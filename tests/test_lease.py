"""The output lease used on object storage (pipeline.lease), exercised on a local directory: the same
code path through pipeline.fs, without a server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from pipeline.lease import Lease, LeaseHeld
from tests.helpers import REPO


def test_two_runs_starting_together_one_gets_the_lease(tmp_path):
    for trial in range(5):
        out = tmp_path / f"out{trial}"
        barrier = threading.Barrier(2)
        won: list[str] = []
        lost: list[str] = []
        leases: list[Lease] = []

        def start(run_id: str) -> None:
            lease = Lease(str(out), run_id, ttl_s=60, settle_s=0.3)
            barrier.wait()
            try:
                leases.append(lease.acquire())
                won.append(run_id)
            except LeaseHeld:
                lost.append(run_id)

        threads = [threading.Thread(target=start, args=(f"run-{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(lost) == 1, (won, lost)
        leases[0].release()
        assert not (out / "_state" / "lease.json").exists()


HOLD_LEASE = """
import sys, time
from pipeline.lease import Lease
Lease(sys.argv[1], "run-a", ttl_s=0.4, settle_s=0.05).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_heartbeat_keeps_the_lease_fresh_and_a_dead_run_is_taken_over(tmp_path):
    # run-a is a real process holding the lease; kill -9 ends it without a release (its lease file stays behind)
    a_proc = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert a_proc.stdout is not None and a_proc.stdout.readline().strip() == "held"
        first = json.loads((tmp_path / "_state" / "lease.json").read_text())["heartbeat_at"]
        time.sleep(0.5)  # longer than the ttl: only the heartbeat keeps it alive
        beat = json.loads((tmp_path / "_state" / "lease.json").read_text())["heartbeat_at"]
        assert beat > first
        with pytest.raises(LeaseHeld, match="run-a"):
            Lease(str(tmp_path), "run-b", ttl_s=0.4, settle_s=0.05).acquire()
    finally:
        a_proc.kill()  # run-a dies: no more heartbeats
        a_proc.wait()
    time.sleep(0.5)
    b = Lease(str(tmp_path), "run-b", ttl_s=0.4, settle_s=0.05).acquire()
    assert json.loads((tmp_path / "_state" / "lease.json").read_text())["run_id"] == "run-b"
    a = Lease(str(tmp_path), "run-a", ttl_s=0.4, settle_s=0.05)  # run-a's handle, come back late
    a.release()  # a late release of a lease no longer ours leaves the other run's alone
    assert json.loads((tmp_path / "_state" / "lease.json").read_text())["run_id"] == "run-b"
    b.release()
    assert not (tmp_path / "_state" / "lease.json").exists()


def test_a_run_whose_lease_was_taken_over_is_told_and_stops_beating(tmp_path):
    lost = []
    a = Lease(str(tmp_path), "run-a", ttl_s=0.4, settle_s=0.05, on_lost=lost.append).acquire()
    # run-b takes over (as after run-a's heartbeat stopped for longer than the ttl)
    (tmp_path / "_state" / "lease.json").write_text(json.dumps({"run_id": "run-b", "host": "h2", "pid": 7,
                                                                "heartbeat_at": "2999-01-01T00:00:00+00:00"}))
    time.sleep(0.3)  # past a heartbeat (every ttl/4)
    assert lost and "run-b" in lost[0] and a.lost
    assert json.loads((tmp_path / "_state" / "lease.json").read_text())["run_id"] == "run-b"  # not overwritten
    a.release()
    assert (tmp_path / "_state" / "lease.json").exists()  # run-b's lease stays


def test_a_racing_start_whose_write_lands_late_is_caught_by_the_first_heartbeat(tmp_path, monkeypatch):
    # run-1's store is slow: it read "free" together with run-0, but its write lands after run-0 read
    # its own lease back, so both start. run-0's first heartbeat reads run-1's id and tells run-0 to stop.
    from pipeline import lease as lease_mod

    real = lease_mod.fs.write_bytes_atomic
    monkeypatch.setattr(lease_mod, "FIRST_CHECK_S", 0.3)

    def write(location, data, tmp_dir=None):
        if b"run-1" in data:
            time.sleep(0.4)
        real(location, data, tmp_dir)

    monkeypatch.setattr(lease_mod.fs, "write_bytes_atomic", write)
    barrier = threading.Barrier(2)
    told: list[str] = []
    held: dict[str, Lease] = {}

    def start(run_id):
        lease = Lease(str(tmp_path), run_id, ttl_s=1.2, settle_s=0.05, on_lost=lambda why, r=run_id: told.append(r))
        barrier.wait()
        try:
            held[run_id] = lease.acquire()
        except LeaseHeld:
            pass

    threads = [threading.Thread(target=start, args=(f"run-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(1.5)  # a few heartbeats (every ttl/4 = 0.3 s)
    still = [r for r in held if r not in told]
    assert len(still) == 1, (list(held), told)
    for lease in held.values():
        lease.release()
