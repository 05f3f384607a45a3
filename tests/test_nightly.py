"""Nightly-job guarantees, end to end: re-ask, re-runs, inputs that change under the run, signals and kill -9.

Engine faults are in test_resilient.py, the rasterizing pool in test_workers.py, damaged output in test_output.py."""

import json
import os
import random
import signal
import subprocess
import time

import duckdb
import pytest

from pipeline.discover import discover
from pipeline.errors import CouldNotStart
from pipeline.rasterize import RasterError, RasterSettings
from pipeline.records import ErrorType
from pipeline.runner import EXIT_INTERRUPTED, run_job
from pipeline.status import status
from pipeline.workers import rasterize_stream
from tests.helpers import REPO, all_rows, cli_command, invoice_truth, make_docs, q, small_config, write_image, write_pdf
from tests.scripted_engine import ScriptedEngine

# ----------------------------------------------------------------------------- re-ask


def test_reask_raises_temperature_and_records_attempts(tmp_path):
    make_docs(tmp_path / "in", 2)
    temps = []

    def answer(req):
        temps.append((req.attempt, req.sampling.temperature))
        return '{"invoice_number": 1}'

    cfg = small_config(**{"run.max_attempts": 3, "run.reask_temperature_step": 0.25})
    s = run_job([str(tmp_path / "in")], tmp_path / "out", cfg, engine=ScriptedEngine(callback=answer))
    assert s.failed == 2
    assert sorted(set(temps)) == [(1, 0.0), (2, 0.25), (3, 0.5)]
    for attempts, errors, raw in q(f"SELECT attempts, errors, raw_output FROM '{tmp_path}/out/failures/*.parquet'"):
        assert attempts == 3 and raw == '{"invoice_number": 1}'
        assert {e.split(":")[0] for e in errors} == {"attempt 1", "attempt 2", "attempt 3"}


# ----------------------------------------------------------------------------- re-runs


def test_force_and_retry_failed_keep_one_row_per_document(tmp_path):
    paths = make_docs(tmp_path / "in", 4)
    ids = {d.path: d.doc_id for d in discover([str(tmp_path / "in")]).documents}
    bad = ids[str(paths[0])]
    out = tmp_path / "out"
    cfg = small_config()

    def flaky_answer(req):
        return "{broken" if req.doc_id == bad else invoice_truth()

    run_job([str(tmp_path / "in")], out, cfg, engine=ScriptedEngine(callback=flaky_answer))
    assert sorted(t for _, t in all_rows(out)) == ["f", "r", "r", "r"]
    st = status(out)
    assert (st.done, st.failed_by_type, st.pending) == (3, {"invalid_json": 1}, 0)
    # --retry-failed: only the retryable failure is re-run, and its old failure row is gone
    eng = ScriptedEngine(callback=lambda r: invoice_truth())
    s = run_job([str(tmp_path / "in")], out, cfg, engine=eng, retry_failed=True)
    assert s.processed == 1 and [r.doc_id for b in eng.batches for r in b] == [bad]
    rows = all_rows(out)
    assert len(rows) == 4 and {t for _, t in rows} == {"r"}
    # --force: everything again, still one row each
    s = run_job([str(tmp_path / "in")], out, cfg, engine=ScriptedEngine(callback=lambda r: invoice_truth()), force=True)
    assert s.processed == 4 and len(all_rows(out)) == 4
    # a changed model reprocesses and the new rows replace the old ones
    s = run_job([str(tmp_path / "in")], out, small_config(**{"engine.model": "m2"}), engine=ScriptedEngine(callback=lambda r: invoice_truth()))
    assert s.processed == 4
    assert q(f"SELECT DISTINCT model FROM '{out}/results/*.parquet'") == [("m2",)] and len(all_rows(out)) == 4


# ----------------------------------------------------------------------------- inputs that change or sit in the output


@pytest.mark.timeout(120)  # a regression blocks on the FIFO: fail, do not hang
def test_a_file_that_changes_after_discovery_is_changed_and_retryable(tmp_path):
    # Issue 17: the row was recorded under the hash of bytes that were not the bytes rasterized. A
    # truncated file became a non-retryable `corrupt` under the intact file's id; a finished upload
    # a success under the partial file's id; a file replaced by a FIFO blocked its worker.
    from tests.raster_faults import faulty

    for workers in (1, 2):  # in this process, and in worker processes
        d = tmp_path / f"in{workers}"
        d.mkdir()
        for name in ("ok.pdf", "shrink.pdf", "grow.pdf", "fifo.pdf"):
            write_pdf(d / name, text=name)
        docs = discover([str(d)]).documents
        t0 = time.monotonic()
        stream = rasterize_stream(docs, RasterSettings(dpi=72, max_pixels=50176), workers, timeout_s=20, func=faulty)
        out = {os.path.basename(doc.path): res for doc, res in stream}
        assert time.monotonic() - t0 < 15  # the FIFO is never opened for a blocking read
        assert not isinstance(out["ok.pdf"], RasterError)
        for name in ("shrink.pdf", "grow.pdf", "fifo.pdf"):
            assert isinstance(out[name], RasterError) and out[name].error_type is ErrorType.CHANGED, (name, out[name])
        assert ErrorType.CHANGED.retryable
        assert "FIFO" in out["fifo.pdf"].message and "bytes then" in out["shrink.pdf"].message


def test_changed_file_rows_then_a_restore_and_retry_failed(tmp_path):
    from tests.raster_faults import faulty

    d = tmp_path / "in"
    d.mkdir()
    for name in ("ok.pdf", "shrink.pdf", "grow.pdf"):
        write_pdf(d / name, text=name)
    intact = (d / "shrink.pdf").read_bytes()
    before = {os.path.basename(x.path): x.doc_id for x in discover([str(d)]).documents}
    out = tmp_path / "out"
    cfg = small_config()
    from pipeline.backends import local_backend
    from pipeline.feed import RasterFeed
    from pipeline.sources import LocalSource

    class FaultySource(LocalSource):  # this machine's source, with the fault corpus's rasterize function
        def rasterize(self, docs):
            return RasterFeed(lambda: rasterize_stream(docs, self.settings, 1, func=faulty), 8, 64)

    backend = local_backend(cfg, out, engine=ScriptedEngine(callback=lambda r: invoice_truth()))
    backend.source = FaultySource(cfg, out)
    s = run_job([str(d)], out, cfg, backend=backend)
    assert (s.succeeded, s.failed, s.failures_by_type) == (1, 2, {"changed": 2})
    rows = q(f"SELECT source_path, doc_id, error_type, retryable FROM '{out}/failures/*.parquet' ORDER BY 1")
    assert [(os.path.basename(p), i, e, r) for p, i, e, r in rows] == [
        ("grow.pdf", before["grow.pdf"], "changed", True),
        ("shrink.pdf", before["shrink.pdf"], "changed", True),
    ]
    # the file is put back; --retry-failed does it (a `corrupt` row would have been skipped forever)
    (d / "shrink.pdf").write_bytes(intact)
    eng = ScriptedEngine(callback=lambda r: invoice_truth())
    s2 = run_job([str(d)], out, cfg, engine=eng, retry_failed=True)
    done = {r.doc_id for b in eng.batches for r in b}
    assert before["shrink.pdf"] in done  # the identity cache did not keep a stale id for either file
    grown = discover([str(d / "grow.pdf")]).documents[0].doc_id
    assert grown != before["grow.pdf"] and grown in done
    assert s2.failed == 0 and s2.succeeded == 2
    results = dict(q(f"SELECT doc_id, source_path FROM '{out}/results/*.parquet'"))
    assert before["shrink.pdf"] in results and grown in results


def test_output_folder_inside_the_input_folder_is_never_input(tmp_path):
    # Issue 17: run.json, _state/ and the parts became unsupported_type rows every night, and a night
    # with one new invoice then exited 3.
    d = tmp_path / "inbox"
    make_docs(d, 3)
    out = d / "extracted"
    cfg = small_config(**{"run.max_failure_rate": 0.2})
    first = run_job([str(d)], out, cfg, engine=ScriptedEngine(callback=lambda r: invoice_truth()))
    assert (first.exit_code, first.inputs, first.succeeded) == (0, 3, 3)
    write_pdf(d / "new.pdf", text="the next night's invoice")
    second = run_job([str(d)], out, cfg, engine=ScriptedEngine(callback=lambda r: invoice_truth()))
    assert (second.exit_code, second.inputs, second.processed, second.failed) == (0, 4, 1, 0)
    assert q(f"SELECT count(*) FROM '{out}/failures/*.parquet'") == [(0,)]
    assert len(all_rows(out)) == 4


def test_engine_that_does_not_load_leaves_no_identity_cache(tmp_path):
    # README: exit 2 "could not start (... engine or model would not load; nothing was written)".
    make_docs(tmp_path / "in", 2)
    out = tmp_path / "out"
    cfg = small_config(**{"engine.name": "tests.no_such_module:factory"})
    with pytest.raises(CouldNotStart):
        run_job([str(tmp_path / "in")], out, cfg)
    assert not (out / "_state" / "identities.parquet").exists()


# ----------------------------------------------------------------------------- crash safety


def _cli_cmd(inputs, out, cfg):
    return cli_command("run", inputs, "--out", out, "-c", cfg, "--engine", "tests.slow_engine:factory")


@pytest.fixture
def slow_setup(tmp_path):
    make_docs(tmp_path / "in", 12)
    write_image(tmp_path / "in" / "photo.png")
    (tmp_path / "in" / "bad.pdf").write_text("nope")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[rasterize]\ndpi = 72\nmax_pixels = 50176\nworkers = 1\n"
        "[run]\nbatch_size = 2\nprogress = false\n[engine.options]\ndelay_s = 0.15\n"
    )
    return tmp_path / "in", cfg


def test_sigterm_finishes_the_batch_and_resume_completes(slow_setup, tmp_path):
    inputs, cfg = slow_setup
    out = tmp_path / "out"
    p = subprocess.Popen(_cli_cmd(inputs, out, cfg), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((out / "results").glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in err
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    partial = len(all_rows(out))
    assert 0 < partial < 14
    r = subprocess.run(_cli_cmd(inputs, out, cfg), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = all_rows(out)
    assert len(rows) == 14 == len({d for d, _ in rows})


def test_sigterm_to_the_process_group_blames_no_document(tmp_path):
    # systemd, `timeout` and Kubernetes signal the whole group: the rasterizing workers get SIGTERM too.
    # Before, the document being rasterized got a worker_crashed row (9 of 9 tries) that a rerun skipped.
    # Rasterizing is the bottleneck here (8 pages at 1 Mpx per document, a quick engine), so the workers
    # are busy when the signal comes.
    (tmp_path / "in").mkdir()
    for i in range(30):
        write_pdf(tmp_path / "in" / f"doc{i:03d}.pdf", pages=8, text=f"Invoice number {i}")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[rasterize]\ndpi = 200\nmax_pixels = 1003520\nworkers = 2\n"
        "[run]\nbatch_size = 2\nfirst_batch_size = 2\nprogress = false\n[engine.options]\ndelay_s = 0.01\n"
    )
    out = tmp_path / "out"
    for trial in range(3):
        before = len(list((out / "results").glob("part-*.parquet")))
        p = subprocess.Popen(_cli_cmd(tmp_path / "in", out, cfg), cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 90  # signalled once this run has committed a batch: mid-run, pages in flight
        while len(list((out / "results").glob("part-*.parquet"))) <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=120)
        assert p.returncode in (EXIT_INTERRUPTED, 0), (trial, err[-3000:])
        status = json.loads((out / "run.json").read_text())["status"]
        assert status in ("interrupted", "ok"), trial
        crashed = duckdb.sql(f"SELECT count(*) FROM '{out}/failures/*.parquet' WHERE error_type = 'worker_crashed'")
        assert crashed.fetchall()[0][0] == 0, (trial, err[-3000:])
    r = subprocess.run(_cli_cmd(tmp_path / "in", out, cfg), cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = all_rows(out)
    assert len(rows) == 30 == len({d for d, _ in rows})


def test_sigkill_at_random_points_then_resume_is_exactly_once(slow_setup, tmp_path):
    inputs, cfg = slow_setup
    rng = random.Random(1234)
    expected = 14
    for trial in range(20):
        out = tmp_path / f"out{trial}"
        kills = 0
        # kill 1-2 times at random moments (startup, discover, rasterize, inference, commit), then finish
        for _ in range(rng.choice([1, 2])):
            p = subprocess.Popen(_cli_cmd(inputs, out, cfg), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 3.0))
            p.kill()
            p.wait()
            kills += 1
        r = subprocess.run(_cli_cmd(inputs, out, cfg), cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (trial, r.stderr)
        rows = all_rows(out)
        ids = [d for d, _ in rows]
        assert len(ids) == expected and len(set(ids)) == expected, (trial, kills, len(ids), len(set(ids)))
        assert not list((out / "_tmp").glob("*")), trial
