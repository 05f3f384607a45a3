"""Nightly-job guarantees: resume, exactly-once, engine faults, re-ask, pool recovery, signals."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from pipeline.discover import discover
from pipeline.engines.resilient import ResilientEngine
from pipeline.errors import CouldNotStart, EngineDead, EngineUnavailable
from pipeline.rasterize import RasterError, RasterSettings
from pipeline.records import ErrorType
from pipeline.runner import EXIT_ENGINE_DIED, EXIT_INTERRUPTED, run_job
from pipeline.status import status
from pipeline.workers import rasterize_stream
from tests.conftest import REPO, invoice_truth, small_config, write_image, write_pdf
from tests.scripted_engine import ScriptedEngine


def q(sql):
    return duckdb.sql(sql).fetchall()


def all_rows(out):
    return q(
        f"SELECT doc_id, 'r' FROM '{out}/results/*.parquet' UNION ALL SELECT doc_id, 'f' FROM '{out}/failures/*.parquet'"
    )


def make_docs(d: Path, n: int) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    return [write_pdf(d / f"doc{i:03d}.pdf", text=f"Invoice number {i}") for i in range(n)]


# ----------------------------------------------------------------------------- engine faults


class Faulty(ScriptedEngine):
    """Fault injection around the scripted engine."""

    def __init__(self, faults, **kw):
        super().__init__(callback=lambda r: invoice_truth(), **kw)
        self.faults = list(faults)
        self.sizes = []

    def generate(self, requests):
        self.sizes.append(len(requests))
        if self.faults:
            f = self.faults.pop(0)
            if f is not None:
                raise f
        return super().generate(requests)


def test_transient_errors_are_retried_with_backoff():
    from pipeline.records import Request, Sampling

    reqs = [Request(f"d{i}", [], {}, Sampling()) for i in range(4)]
    eng = Faulty([TimeoutError("rpc timeout"), ConnectionError("reset")])
    r = ResilientEngine(eng, retries=3, backoff_s=0)
    gens = r.generate(reqs)
    assert [g.error for g in gens] == [None] * 4 and r.transient_retries == 2 and eng.sizes == [4, 4, 4]
    eng = Faulty([RuntimeError("x")] * 5)
    gens = ResilientEngine(eng, retries=3, backoff_s=0).generate(reqs)
    assert {g.error_type for g in gens} == {ErrorType.ENGINE_ERROR} and eng.sizes == [4, 4, 4]


def test_out_of_memory_halves_the_batch():
    from pipeline.records import Request, Sampling

    class OOM(RuntimeError):
        pass

    reqs = [Request(f"d{i}", [], {}, Sampling()) for i in range(8)]
    eng = Faulty([OOM("CUDA out of memory. Tried to allocate 2.00 GiB"), OOM("CUDA out of memory")])
    r = ResilientEngine(eng, retries=3, backoff_s=0)
    gens = r.generate(reqs)
    assert [g.doc_id for g in gens] == [f"d{i}" for i in range(8)] and all(g.error is None for g in gens)
    assert eng.sizes == [8, 4, 2, 2, 4] and r.oom_splits == 2


def test_dead_engine_is_rebuilt_once_then_documents_fail():
    from pipeline.records import Request, Sampling

    reqs = [Request(f"d{i}", [], {}, Sampling()) for i in range(3)]
    first = Faulty([EngineDead("engine core died")])
    second = Faulty([])
    built = []
    r = ResilientEngine(first, factory=lambda: built.append(1) or second, backoff_s=0)
    assert all(g.error is None for g in r.generate(reqs))
    assert first.closed and built == [1] and r.engine is second
    second.faults = [EngineDead("again")]
    with pytest.raises(EngineUnavailable, match="restart budget"):  # budget used up: the run must stop
        r.generate(reqs)
    assert built == [1]


def test_run_survives_engine_death_with_factory(tmp_path):
    make_docs(tmp_path / "in", 6)
    first = Faulty([None, EngineDead("worker process died")])
    second = Faulty([])
    s = run_job(
        [str(tmp_path / "in")],
        tmp_path / "out",
        small_config(**{"run.batch_size": 2, "run.engine_backoff_s": 0}),
        engine=first,
        engine_factory=lambda: second,
    )
    assert (s.succeeded, s.failed) == (6, 0) and first.closed and len(second.batches) == 2


def test_engine_that_stays_dead_stops_the_run_and_leaves_the_rest_pending(tmp_path):
    make_docs(tmp_path / "in", 8)
    cfg = small_config(**{"run.batch_size": 2, "run.engine_backoff_s": 0, "run.engine_restarts": 0})
    dying = Faulty([None, EngineDead("GPU fell off the bus")] + [EngineDead("still dead")] * 10)
    s = run_job([str(tmp_path / "in")], tmp_path / "out", cfg, engine=dying)
    assert s.exit_code == EXIT_ENGINE_DIED and "GPU fell off the bus" in s.engine_died
    assert s.failed == 0 and 0 < s.succeeded < 8  # no engine_error rows that later runs would skip
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "engine_died"
    s2 = run_job([str(tmp_path / "in")], tmp_path / "out", cfg, engine=Faulty([]))
    assert s2.exit_code == 0 and s2.succeeded == 8 - s.succeeded
    assert len(all_rows(tmp_path / "out")) == 8


def test_failed_rerun_never_deletes_good_results(tmp_path):
    make_docs(tmp_path / "in", 4)
    out = tmp_path / "out"
    cfg = small_config(**{"run.engine_backoff_s": 0, "run.engine_retries": 1})
    run_job([str(tmp_path / "in")], out, cfg, engine=Faulty([]))
    broken = Faulty([RuntimeError("CUDA error")] * 10)
    s = run_job([str(tmp_path / "in")], out, cfg, engine=broken, force=True)
    assert s.failed == 4  # the forced re-run failed...
    rows = all_rows(out)
    assert sorted(t for _, t in rows) == ["r"] * 4  # ...but the good results stay, one row each


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


# ----------------------------------------------------------------------------- rasterize pool


def test_pool_recovers_from_hang_crash_and_memory_blowup(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("ok1.pdf", "hang.pdf", "ok2.pdf", "segv.pdf", "oom.pdf", "ok3.pdf"):
        write_pdf(d / name, text=name)
    docs = discover([str(d)]).documents
    from tests.raster_faults import faulty

    t0 = time.monotonic()
    out = dict(
        (os.path.basename(doc.path), res)
        for doc, res in rasterize_stream(docs, RasterSettings(dpi=72, max_pixels=50176), 2, timeout_s=3, memory_limit_bytes=4 << 30, func=faulty)
    )
    assert time.monotonic() - t0 < 30
    assert out["hang.pdf"].error_type is ErrorType.TIMEOUT
    assert out["segv.pdf"].error_type is ErrorType.WORKER_CRASHED and "-11" in out["segv.pdf"].message
    assert out["oom.pdf"].error_type is ErrorType.TOO_LARGE
    assert all(not isinstance(out[f"ok{i}.pdf"], RasterError) for i in (1, 2, 3))


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
    exe = Path(sys.executable).parent / "docextract"
    return [str(exe), "run", str(inputs), "--out", str(out), "-c", str(cfg), "--engine", "tests.slow_engine:factory"]


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


def test_second_writer_on_the_same_output_cannot_start(tmp_path):
    import pyarrow as pa

    from pipeline.output import Output

    make_docs(tmp_path / "in", 1)
    first = Output(tmp_path / "out", "first-run", pa.schema([]), "zstd", lease_ttl_s=600, on_lease_lost=print)
    first.lock()
    try:
        with pytest.raises(CouldNotStart, match="another docextract run"):
            run_job([str(tmp_path / "in")], tmp_path / "out", small_config(), engine=ScriptedEngine({}))
    finally:
        first.close()
    s = run_job([str(tmp_path / "in")], tmp_path / "out", small_config(), engine=ScriptedEngine(callback=lambda r: invoice_truth()))
    assert s.succeeded == 1


def test_damaged_part_is_quarantined_and_its_documents_redone(tmp_path):
    # A results part damaged on disk (bit rot, a bad copy): the next run moves it aside, so
    # `SELECT ... FROM results/*.parquet` works again, and processes its documents again.
    make_docs(tmp_path / "in", 6)
    out = tmp_path / "out"
    cfg = small_config(**{"run.batch_size": 3})
    engine = ScriptedEngine(callback=lambda r: invoice_truth(), record=False)
    first = run_job([str(tmp_path / "in")], out, cfg, engine=engine)
    assert first.succeeded == 6
    parts = sorted((out / "results").glob("part-*.parquet"))
    assert len(parts) == 2
    lost = {r[0] for r in q(f"SELECT doc_id FROM '{parts[0]}'")}
    parts[0].write_bytes(parts[0].read_bytes()[: len(parts[0].read_bytes()) // 2])  # truncated
    with pytest.raises(duckdb.Error):
        q(f"SELECT count(*) FROM '{out}/results/*.parquet'")
    again = run_job([str(tmp_path / "in")], out, cfg, engine=engine)
    assert (again.skipped, again.processed, again.succeeded) == (6 - len(lost), len(lost), len(lost))
    assert any("_quarantine" in w and parts[0].name in w for w in again.warnings)
    assert (out / "_quarantine" / "results" / parts[0].name).is_file()
    rows = all_rows(out)
    assert sorted(d for d, _ in rows) == sorted({d for d, _ in rows}) and len(rows) == 6  # exactly once


def test_output_part_that_cannot_be_read_stops_the_run_before_writing(tmp_path, monkeypatch):
    # An I/O error reading our own output (permissions, a store that does not answer) must not be
    # taken as "no such rows": that would process those documents a second time.
    from pipeline import store

    make_docs(tmp_path / "in", 2)
    out = tmp_path / "out"
    cfg = small_config()
    engine = ScriptedEngine(callback=lambda r: invoice_truth(), record=False)
    run_job([str(tmp_path / "in")], out, cfg, engine=engine)
    before = sorted(p.name for p in (out / "results").iterdir())
    real = store._read_parquet

    def failing(location, columns=None):
        if "results" in str(location):
            raise PermissionError(13, "Permission denied", str(location))
        return real(location, columns)

    monkeypatch.setattr(store, "_read_parquet", failing)
    with pytest.raises(CouldNotStart, match="cannot read the existing output"):
        run_job([str(tmp_path / "in")], out, cfg, engine=engine, force=True)
    monkeypatch.setattr(store, "_read_parquet", real)
    assert sorted(p.name for p in (out / "results").iterdir()) == before  # nothing written, nothing moved
    assert not (out / "_quarantine").exists()


def test_bit_rot_inside_a_part_and_a_part_missing_columns_are_quarantined(tmp_path):
    # pyarrow reports a damaged page or footer as OSError (not ArrowInvalid): still damage, not an
    # I/O error, so the part is moved aside rather than stopping every later run.
    make_docs(tmp_path / "in", 6)
    out = tmp_path / "out"
    cfg = small_config(**{"run.batch_size": 2})
    engine = ScriptedEngine(callback=lambda r: invoice_truth(), record=False)
    run_job([str(tmp_path / "in")], out, cfg, engine=engine)
    parts = sorted((out / "results").glob("part-*.parquet"))
    assert len(parts) == 3
    data = bytearray(parts[0].read_bytes())
    for i in range(len(data) - 200, len(data) - 12):  # scribble over the footer, keep the magic bytes
        data[i] ^= 0x5A
    parts[0].write_bytes(bytes(data))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"doc_id": ["x"]}), parts[1])  # a stranger's table named like a part
    again = run_job([str(tmp_path / "in")], out, cfg, engine=engine)
    moved = sorted(p.name for p in (out / "_quarantine" / "results").iterdir())
    assert moved == sorted([parts[0].name, parts[1].name])
    assert again.processed == 4 and again.skipped == 2
    rows = all_rows(out)
    assert len(rows) == 6 == len({d for d, _ in rows})
