"""Monitoring a nightly run: run.json while running and at every end, the Prometheus metrics file
(parsed with prometheus_client's own parser), the last success time across failed nights, and a killed
run that ``status`` calls abandoned.  Runs use the scripted engine (a test double for the model)."""

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.errors import CouldNotStart, EngineDead
from pipeline.manifest import FORMAT_VERSION
from pipeline.metrics import last_success_in_history, output_label, render, succeeded
from pipeline.records import ErrorType
from pipeline.runner import run_job
from pipeline.status import status
from pipeline.summary import (
    EXIT_COULD_NOT_START,
    EXIT_ENGINE_DIED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT_FAILED,
    EXIT_TOO_MANY_FAILURES,
    EXIT_UNEXPECTED,
)
from tests.conftest import REPO, invoice_truth, small_config, write_pdf
from tests.helpers import run_cli
from tests.scripted_engine import ScriptedEngine


def make_docs(d: Path, n: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_pdf(d / f"doc{i:03d}.pdf", text=f"Invoice number {i}")
    return d


def good_engine() -> ScriptedEngine:
    return ScriptedEngine(callback=lambda r: invoice_truth())


def manifest(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def metrics(path: Path) -> dict[str, dict[tuple, float]]:
    """name -> {labels other than output (sorted items): value}, through Prometheus' own parser; every
    family must be a documented gauge and every sample carry the output label."""
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(path.read_text()):
        assert fam.type == "gauge" and fam.documentation, fam.name
        for s in fam.samples:
            labels = dict(s.labels)
            assert labels.pop("output")
            out.setdefault(s.name, {})[tuple(sorted(labels.items()))] = s.value
    return out


def one(m: dict, name: str) -> float:
    [value] = m[name].values()
    return value


def iso(ts: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(ts)
    assert t.utcoffset() == dt.timedelta(0)  # UTC
    return t


def test_run_json_says_running_while_running_and_the_output_is_held(tmp_path):
    inputs, out = make_docs(tmp_path / "in", 6), tmp_path / "out"
    seen: list[tuple[dict, str | None]] = []

    def watch(p):  # called after each commit: run.json then holds the commit before it
        if (out / "run.json").exists():
            seen.append((manifest(out), status(out).last_run_status))

    cfg = small_config(**{"run.batch_size": 2, "run.first_batch_size": 2})
    s = run_job([str(inputs)], out, cfg, engine=good_engine(), on_progress=watch)
    assert s.exit_code == EXIT_OK and len(seen) >= 2
    for m, st in seen:
        assert (m["status"], m["exit_code"], m["finished_at"], st) == ("running", None, None, "running")
        assert m["format_version"] == FORMAT_VERSION and iso(m["started_at"]) <= iso(m["updated_at"])
        assert m["counts"]["pending"] == 6 - m["counts"]["processed"] > 0
    final = manifest(out)
    assert (final["status"], final["exit_code"], final["error"]) == ("ok", 0, None)
    assert iso(final["started_at"]) < iso(final["finished_at"]) == iso(final["updated_at"])
    assert final["duration_s"] > 0 and final["counts"]["pending"] == 0
    assert (final["max_failure_rate"], final["max_reject_rate"]) == (cfg.run.max_failure_rate, cfg.run.max_reject_rate)
    assert 0 <= final["throughput"]["engine_busy_fraction"] <= 1
    assert status(out).last_run_status == "ok"
    assert json.loads((out / "runs" / f"{s.run_id}.json").read_text()) == final


class Dying(ScriptedEngine):
    def __init__(self):
        super().__init__(callback=lambda r: invoice_truth())

    def generate(self, requests):
        if self.batch_sizes:
            raise EngineDead("GPU fell off the bus")
        return super().generate(requests)


def _full_disk_after_first_commit(monkeypatch):
    import errno

    from pipeline import fs

    real, parts = fs.write_bytes_atomic, []

    def disk(location, data, tmp_dir=None):  # the disk (a test double): full after the first pair of parts
        if "/results/" in str(location) or "/failures/" in str(location):
            if len(parts) >= 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            parts.append(location)
        return real(location, data, tmp_dir)

    monkeypatch.setattr(fs, "write_bytes_atomic", disk)


def _interrupt_after_first_commit(p):
    if p.done == 2:
        os.kill(os.getpid(), signal.SIGTERM)  # as systemd or `timeout` would; the run's handler stops it


def _callback_bug(p):
    raise RuntimeError("orchestrator callback bug")


@pytest.mark.parametrize(
    "case, code, name",
    [
        ("ok", EXIT_OK, "ok"),
        ("threshold", EXIT_TOO_MANY_FAILURES, "too_many_failures"),
        ("interrupted", EXIT_INTERRUPTED, "interrupted"),
        ("engine_died", EXIT_ENGINE_DIED, "engine_died"),
        ("disk_full", EXIT_OUTPUT_FAILED, "output_failed"),
        ("crash", EXIT_UNEXPECTED, "error"),
    ],
)
def test_every_end_has_its_status_in_run_json_and_the_metrics_file(tmp_path, monkeypatch, case, code, name):
    inputs, out, prom = make_docs(tmp_path / "in", 6), tmp_path / "out", tmp_path / "docextract.prom"
    cfg = small_config(**{"run.batch_size": 2, "run.first_batch_size": 2, "run.engine_backoff_s": 0,
                          "run.engine_restarts": 0, "run.metrics_file": str(prom)})
    engine, progress = good_engine(), None
    if case == "threshold":
        engine = ScriptedEngine(callback=lambda r: "not json")
    elif case == "interrupted":
        progress = _interrupt_after_first_commit
    elif case == "engine_died":
        engine = Dying()
    elif case == "disk_full":
        _full_disk_after_first_commit(monkeypatch)
    elif case == "crash":
        progress = _callback_bug
    if case == "crash":
        with pytest.raises(RuntimeError, match="callback bug"):
            run_job([str(inputs)], out, cfg, engine=engine, on_progress=progress)
    else:
        s = run_job([str(inputs)], out, cfg, engine=engine, on_progress=progress)
        assert (s.exit_code, s.status) == (code, name)
    m = manifest(out)
    assert (m["status"], m["exit_code"]) == (name, code)
    assert m["finished_at"] is not None and m["duration_s"] > 0
    counts = m["counts"]
    assert counts["succeeded"] + counts["processing_failed"] + counts["rejected"] + counts["pending"] == 6
    assert (counts["pending"] > 0) == (case in ("interrupted", "engine_died", "disk_full", "crash"))
    if case == "crash":
        assert m["error"] == "RuntimeError: orchestrator callback bug"
    if case in ("engine_died", "disk_full"):
        assert ("GPU fell off" if case == "engine_died" else "No space left") in m["error"]
    got = metrics(prom)
    assert one(got, "docextract_run_exit_code") == code
    assert one(got, "docextract_last_run_timestamp_seconds") == pytest.approx(iso(m["finished_at"]).timestamp())
    docs = {k[0][1]: v for k, v in got["docextract_documents"].items()}
    assert docs == {"extracted": counts["succeeded"], "failed": counts["processing_failed"],
                    "rejected": counts["rejected"], "skipped": 0, "pending": counts["pending"]}
    if code == EXIT_OK:
        assert one(got, "docextract_last_success_timestamp_seconds") == one(got, "docextract_last_run_timestamp_seconds")
    else:  # never succeeded on this output: no success time to report
        assert "docextract_last_success_timestamp_seconds" not in got


def test_metrics_of_a_success_a_failed_night_and_a_night_that_could_not_start(tmp_path):
    inputs, out, prom = make_docs(tmp_path / "in", 4), tmp_path / "out", tmp_path / "textfile" / "docextract.prom"
    prom.parent.mkdir()
    (inputs / "empty.pdf").write_bytes(b"")
    cfg = small_config(**{"run.metrics_file": str(prom), "run.max_failure_rate": 0.25})
    first = run_job([str(inputs)], out, cfg, engine=good_engine())
    assert first.exit_code == EXIT_OK
    m1 = metrics(prom)
    success = one(m1, "docextract_last_success_timestamp_seconds")
    assert success == pytest.approx(iso(manifest(out)["finished_at"]).timestamp())
    assert {k[0][1]: v for k, v in m1["docextract_documents"].items()} == {
        "extracted": 4, "failed": 0, "rejected": 1, "skipped": 0, "pending": 0}
    failures = {k[0][1]: v for k, v in m1["docextract_failures"].items()}
    assert set(failures) == {t.value for t in ErrorType} and failures["empty_file"] == 1 == sum(failures.values())
    assert one(m1, "docextract_pages") == first.pages == 4
    assert {k[0][1]: v for k, v in m1["docextract_tokens"].items()} == {"prompt": first.prompt_tokens,
                                                                          "output": first.output_tokens}
    assert 0 < one(m1, "docextract_engine_busy_ratio") <= 1
    assert (one(m1, "docextract_failure_rate"), one(m1, "docextract_max_failure_rate")) == (0.0, 0.25)
    assert one(m1, "docextract_reject_rate") == 0.2 and one(m1, "docextract_max_reject_rate") == 1.0
    assert one(m1, "docextract_run_duration_seconds") == manifest(out)["duration_s"]
    labels = {s.labels["output"] for f in text_string_to_metric_families(prom.read_text()) for s in f.samples}
    assert labels == {str(out.absolute())}
    # a failed night: 3 new documents, all answered wrongly (exit 3); the last success time stays
    for i in range(3):
        write_pdf(inputs / f"new{i}.pdf", text=f"New {i}")
    second = run_job([str(inputs)], out, cfg, engine=ScriptedEngine(callback=lambda r: "{}"))
    assert second.exit_code == EXIT_TOO_MANY_FAILURES
    m2 = metrics(prom)
    assert one(m2, "docextract_run_exit_code") == EXIT_TOO_MANY_FAILURES
    assert one(m2, "docextract_last_success_timestamp_seconds") == success
    assert one(m2, "docextract_last_run_timestamp_seconds") > success
    assert {k[0][1]: v for k, v in m2["docextract_documents"].items()} == {
        "extracted": 0, "failed": 3, "rejected": 0, "skipped": 5, "pending": 0}
    assert one(m2, "docextract_failure_rate") == 1.0
    assert {k[0][1]: v for k, v in m2["docextract_failures"].items()}["schema_mismatch"] == 3
    # a night that cannot start (the inputs are gone): exit 2, no per-document figures, success kept
    with pytest.raises(CouldNotStart, match="input not found"):
        run_job([str(tmp_path / "gone")], out, cfg, engine=good_engine())
    m3 = metrics(prom)
    assert one(m3, "docextract_run_exit_code") == EXIT_COULD_NOT_START
    assert one(m3, "docextract_last_success_timestamp_seconds") == success
    assert "docextract_documents" not in m3 and one(m3, "docextract_max_failure_rate") == 0.25
    assert manifest(out)["run_id"] == second.run_id  # run.json is the last run that started
    assert [p.name for p in prom.parent.iterdir()] == ["docextract.prom"]  # no temporary file left behind
    # the metrics file lost (a new textfile directory): the success time comes back from runs/*.json
    prom.unlink()
    run_job([str(inputs)], out, cfg, engine=ScriptedEngine(callback=lambda r: "{}"), retry_failed=True)
    assert one(metrics(prom), "docextract_last_success_timestamp_seconds") == pytest.approx(success)


def test_a_metrics_file_that_cannot_be_written_stops_the_run_before_it_starts(tmp_path):
    inputs, out = make_docs(tmp_path / "in", 1), tmp_path / "out"
    cfg = small_config(**{"run.metrics_file": str(tmp_path / "no" / "such" / "dir" / "x.prom")})
    with pytest.raises(CouldNotStart, match="existing local directory"):
        run_job([str(inputs)], out, cfg, engine=good_engine())
    assert not out.exists()


def test_last_success_reads_every_format_version_of_the_history(tmp_path):
    runs = tmp_path / "out" / "runs"
    runs.mkdir(parents=True)
    old = {"run_id": "20250101T020000000000Z-aaaaaa", "status": "completed", "exit_code": 0,
           "updated_at": "2025-01-01T02:10:00+00:00"}  # format 1: no format_version, no finished_at
    bad = {"run_id": "20250102T020000000000Z-bbbbbb", "status": "completed", "exit_code": 3,
           "updated_at": "2025-01-02T02:10:00+00:00"}  # format 1: "completed" with too many failures
    newer = {"format_version": 2, "run_id": "20250103T020000000000Z-cccccc", "status": "too_many_failures",
             "exit_code": 3, "finished_at": "2025-01-03T02:10:00+00:00"}
    for r in (old, bad, newer):
        (runs / f"{r['run_id']}.json").write_text(json.dumps(r))
    assert [succeeded(r) for r in (old, bad, newer)] == [True, False, False]
    assert last_success_in_history(tmp_path / "out") == dt.datetime(2025, 1, 1, 2, 10, tzinfo=dt.UTC).timestamp()
    ok = {"format_version": 2, "run_id": "20250104T020000000000Z-dddddd", "status": "ok", "exit_code": 0,
          "finished_at": "2025-01-04T02:10:00+00:00"}
    (runs / f"{ok['run_id']}.json").write_text(json.dumps(ok))
    assert last_success_in_history(tmp_path / "out") == dt.datetime(2025, 1, 4, 2, 10, tzinfo=dt.UTC).timestamp()
    assert last_success_in_history(tmp_path / "nowhere") is None


def test_label_values_are_escaped_and_credentials_dropped():
    text = render({"status": "ok", "exit_code": 0, "finished_at": "2025-01-04T02:10:00+00:00", "duration_s": 1.5},
                  'we"ird\\path\nx', 1.0)
    [fam] = [f for f in text_string_to_metric_families(text) if f.name == "docextract_run_duration_seconds"]
    assert fam.samples[0].labels == {"output": 'we"ird\\path\nx'} and fam.samples[0].value == 1.5
    assert output_label("s3://key:secret@bucket/out") == "s3://bucket/out"


def test_cli_metrics_file_and_a_killed_run_is_abandoned(tmp_path):
    import sys

    inputs, out, prom = make_docs(tmp_path / "in", 10), tmp_path / "out", tmp_path / "m.prom"
    cfg = tmp_path / "c.toml"  # 5 batches of 2, 1.5 s each: a look after the first commit finds it running
    cfg.write_text("[rasterize]\ndpi = 72\nmax_pixels = 50176\nworkers = 1\n"
                   "[run]\nbatch_size = 2\nfirst_batch_size = 2\nprogress = false\n[engine.options]\ndelay_s = 1.5\n")
    exe = Path(sys.executable).parent / "docextract"
    cmd = [str(exe), "run", str(inputs), "--out", str(out), "-c", str(cfg), "--engine", "tests.slow_engine:factory",
           "--metrics-file", str(prom)]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "run.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None and status(out).last_run_status == "running"  # another process holds the lock
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # kill -9: nothing gets to write a final status
        p.communicate(timeout=60)
    assert manifest(out)["status"] == "running" and not prom.exists()
    dead = run_cli("status", out)
    assert dead.returncode == 0 and "abandoned (run.json says running" in dead.stdout, dead.stdout + dead.stderr
    # the next night resumes and says so in the metrics file
    r = run_cli("run", inputs, "--out", out, "-c", cfg, "--engine", "tests.slow_engine:factory", "--metrics-file", prom)
    assert r.returncode == 0, r.stderr[-2000:]
    got = metrics(prom)
    assert one(got, "docextract_run_exit_code") == 0
    docs = {k[0][1]: v for k, v in got["docextract_documents"].items()}
    assert docs["skipped"] > 0 and docs["skipped"] + docs["extracted"] == 10
    assert status(out).last_run_status == "ok"
    # could not start from the command line (the inputs are gone): exit 2, and the metrics file says 2
    r = run_cli("run", tmp_path / "gone", "--out", out, "-c", cfg, "--engine", "tests.slow_engine:factory",
                "--metrics-file", prom)
    assert r.returncode == EXIT_COULD_NOT_START
    got = metrics(prom)
    assert one(got, "docextract_run_exit_code") == EXIT_COULD_NOT_START
    success = one(got, "docextract_last_success_timestamp_seconds")
    assert success < one(got, "docextract_last_run_timestamp_seconds")
    # nor with a config that does not load (a typo in tonight's deployment)
    r = run_cli("run", inputs, "--out", out, "-c", cfg, "--set", "run.batch_size=0", "--metrics-file", prom)
    assert r.returncode == EXIT_COULD_NOT_START and "run.batch_size" in r.stderr
    got = metrics(prom)
    assert one(got, "docextract_run_exit_code") == EXIT_COULD_NOT_START
    assert one(got, "docextract_last_success_timestamp_seconds") == success


def test_a_lease_counts_as_a_writer_only_while_its_heartbeat_is_fresh(tmp_path):
    """Object storage has no flock: a running run there is abandoned once its lease is gone or stale."""
    from pipeline.lease import live_lease

    out = tmp_path / "bucket-prefix"
    (out / "_state").mkdir(parents=True)
    assert live_lease(str(out)) is None
    beat = dt.datetime.now(dt.UTC)
    (out / "_state" / "lease.json").write_text(json.dumps({"run_id": "r1", "heartbeat_at": beat.isoformat(), "ttl_s": 600}))
    assert live_lease(str(out))["run_id"] == "r1"
    stale = beat - dt.timedelta(seconds=601)
    (out / "_state" / "lease.json").write_text(json.dumps({"run_id": "r1", "heartbeat_at": stale.isoformat(), "ttl_s": 600}))
    assert live_lease(str(out)) is None
