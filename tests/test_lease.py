"""The output lease used on object storage (pipeline.lease), exercised on a local directory: the same
code path through pipeline.fs, without a server."""

from __future__ import annotations

import json
import threading
import time

import pytest

from pipeline.lease import Lease, LeaseHeld


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


def test_heartbeat_keeps_the_lease_fresh_and_a_dead_run_is_taken_over(tmp_path):
    a = Lease(str(tmp_path), "run-a", ttl_s=0.4, settle_s=0.05).acquire()
    first = json.loads((tmp_path / "_state" / "lease.json").read_text())["heartbeat_at"]
    time.sleep(0.5)  # longer than the ttl: only the heartbeat keeps it alive
    beat = json.loads((tmp_path / "_state" / "lease.json").read_text())["heartbeat_at"]
    assert beat > first
    with pytest.raises(LeaseHeld, match="run-a"):
        Lease(str(tmp_path), "run-b", ttl_s=0.4, settle_s=0.05).acquire()
    a._stop.set()  # run-a dies: no more heartbeats (its lease file stays behind)
    a._thread.join()
    time.sleep(0.5)
    b = Lease(str(tmp_path), "run-b", ttl_s=0.4, settle_s=0.05).acquire()
    assert json.loads((tmp_path / "_state" / "lease.json").read_text())["run_id"] == "run-b"
    a.release()  # a late release of a lease no longer ours leaves the other run's alone
    assert json.loads((tmp_path / "_state" / "lease.json").read_text())["run_id"] == "run-b"
    b.release()
    assert not (tmp_path / "_state" / "lease.json").exists()
