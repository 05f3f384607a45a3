"""What a new user meets first (issue "first contact"): the Python API from a script, answers cut
at max_tokens, the failure threshold, the engine's own settings in run.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipeline.errors import CouldNotStart
from pipeline.records import Generation, Request
from pipeline.runner import EXIT_OK, EXIT_TOO_MANY_FAILURES, run_job
from tests.helpers import REPO, invoice_truth, small_config, write_pdf
from tests.scripted_engine import ScriptedEngine, truth_answers


def test_run_job_from_a_script_without_a_main_guard_cannot_start_and_writes_nothing(tmp_path):
    # The README's API example as a user writes it first: no `if __name__ == "__main__":`.  The worker
    # processes import the script again; before, 10 of 12 documents became worker_crashed rows, exit 0.
    script = tmp_path / "nightly.py"
    out = tmp_path / "out"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from pipeline.config import load_config\n"
        "from pipeline.runner import run_job\n"
        "from tests.scripted_engine import from_truth\n"
        "cfg = load_config(None, {'schema': 'invoice', 'rasterize.workers': 2, 'run.progress': False})\n"
        f"run_job([{str(REPO / 'data/samples/invoices')!r}], {str(out)!r}, cfg, engine=from_truth())\n"
    )
    r = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "CouldNotStart" in r.stderr and 'if __name__ == "__main__":' in r.stderr
    assert not list(out.glob("results/*.parquet")) and not list(out.glob("failures/*.parquet"))
    # the same script with the guard runs
    guarded = tmp_path / "guarded.py"
    body = script.read_text().splitlines()
    guarded.write_text("\n".join(body[:-1]) + "\nif __name__ == '__main__':\n    " + body[-1] + "\n")
    r = subprocess.run([sys.executable, str(guarded)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    n = duckdb.sql(f"SELECT count(*) FROM '{out}/results/*.parquet'").fetchall()[0][0]
    assert n == 8


def _truncated_then(answer: dict, times: int = 1):
    """An engine whose first ``times`` answers per document run into max_tokens, then ``answer``."""
    seen: dict[str, list[Request]] = {}

    def cb(req: Request):
        seen.setdefault(req.doc_id, []).append(req)
        if len(seen[req.doc_id]) <= times:
            return Generation(req.doc_id, '{"invoice_number": "1111111111111111111', "length", 100, 2048)
        return answer

    return ScriptedEngine(callback=cb), seen


def test_truncated_answer_is_asked_again_once_at_a_higher_temperature(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf", text="Invoice A")
    engine, seen = _truncated_then(invoice_truth(1))
    out = tmp_path / "out"
    s = run_job([str(d)], out, small_config(), engine=engine)
    assert (s.succeeded, s.failed) == (1, 0)
    [reqs] = seen.values()
    assert [r.sampling.temperature for r in reqs] == [0.0, 0.5]
    assert reqs[1].messages == reqs[0].messages  # asked again unchanged, not shown its looping answer
    assert reqs[1].uid != reqs[0].uid
    assert duckdb.sql(f"SELECT attempts, output_tokens FROM '{out}/results/*.parquet'").fetchall()[0][0] == 2


def test_truncated_twice_is_a_truncated_failure_with_both_attempts(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf", text="Invoice A")
    engine, seen = _truncated_then(invoice_truth(1), times=5)
    out = tmp_path / "out"
    s = run_job([str(d)], out, small_config(**{"run.max_attempts": 3}), engine=engine)
    assert (s.succeeded, s.failed, s.failures_by_type) == (0, 1, {"truncated": 1})
    assert len(next(iter(seen.values()))) == 2  # once more only, even with attempts to spare
    row = duckdb.sql(f"SELECT attempts, retryable, len(errors) FROM '{out}/failures/*.parquet'").fetchall()[0]
    assert row == (2, True, 2)


def test_input_rejects_are_counted_apart_from_processing_failures(corpus, tmp_path):
    # The corpus has 5 good documents and 4 bad files (empty, text, encrypted, truncated PDF).
    right = run_job([str(corpus["dir"])], tmp_path / "right", small_config(), engine=ScriptedEngine(truth_answers(corpus["dir"])))
    assert (right.succeeded, right.failed, right.rejected) == (5, 4, 4)
    assert right.failure_rate == 0.0 and right.exit_code == EXIT_OK  # every answer right: no alert
    manifest = json.loads((tmp_path / "right" / "run.json").read_text())
    assert manifest["counts"]["rejected"] == 4 and manifest["counts"]["processing_failed"] == 0
    assert manifest["failure_rate"] == 0.0 and manifest["reject_rate"] == pytest.approx(4 / 9, abs=1e-4)
    # every accepted document fails: the default threshold makes the cron alert fire
    wrong = run_job([str(corpus["dir"])], tmp_path / "wrong", small_config(), engine=ScriptedEngine({}))
    assert (wrong.failed, wrong.rejected, wrong.failure_rate) == (9, 4, 1.0)
    assert wrong.exit_code == EXIT_TOO_MANY_FAILURES
    # rejects have their own threshold
    strict = run_job([str(corpus["dir"])], tmp_path / "strict", small_config(**{"run.max_reject_rate": 0.2}),
                     engine=ScriptedEngine(truth_answers(corpus["dir"])))
    assert strict.exit_code == EXIT_TOO_MANY_FAILURES


def test_engine_settings_are_recorded_in_run_json(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf")

    class Chooser(ScriptedEngine):
        settings = {"max_model_len": 4096, "max_model_len_source": "model config"}

    run_job([str(d)], tmp_path / "out", small_config(), engine=Chooser(callback=lambda r: invoice_truth()))
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["engine_settings"] == {"max_model_len": 4096, "max_model_len_source": "model config"}


def test_python_api_honours_backend_ray_with_an_engine_object_refused(tmp_path):
    # backend = "ray" is chosen where the CLI chooses it too: an engine object cannot go to Ray actors.
    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf")
    with pytest.raises(CouldNotStart, match="ray"):
        run_job([str(d)], tmp_path / "out", small_config(backend="ray"), engine=ScriptedEngine({}))
    assert not Path(tmp_path / "out").exists()


# ----------------------------------------------------------------------------- outputs that cannot be written


def test_out_pointing_at_a_file_or_an_unwritable_place_cannot_start(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf")
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub", Path("/proc/docextract-out")):
        with pytest.raises(CouldNotStart, match="cannot write to the output"):
            run_job([str(d)], out, small_config(), engine=ScriptedEngine(callback=lambda r: invoice_truth()))


def test_a_full_disk_mid_run_stops_cleanly_keeping_what_was_committed(tmp_path, monkeypatch):
    import errno

    from pipeline import fs
    from pipeline.runner import EXIT_OUTPUT_FAILED

    d = tmp_path / "in"
    d.mkdir()
    for i in range(6):
        write_pdf(d / f"doc{i}.pdf", text=f"Invoice {i}")
    real = fs.write_bytes_atomic
    parts = []

    def disk_fills_up(location, data, tmp_dir=None):  # the disk (a test double): full after two parts
        if "/results/" in str(location) or "/failures/" in str(location):
            if len(parts) >= 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            parts.append(location)
        return real(location, data, tmp_dir)

    monkeypatch.setattr(fs, "write_bytes_atomic", disk_fills_up)
    out = tmp_path / "out"
    cfg = small_config(**{"run.batch_size": 2, "run.first_batch_size": 2})
    s = run_job([str(d)], out, cfg, engine=ScriptedEngine(callback=lambda r: invoice_truth()))
    assert s.exit_code == EXIT_OUTPUT_FAILED and "No space left" in (s.output_error or "")
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "output_failed" and manifest["exit_code"] == EXIT_OUTPUT_FAILED
    assert manifest["counts"]["succeeded"] == 4 == s.succeeded  # what is on disk, not what was attempted
    monkeypatch.setattr(fs, "write_bytes_atomic", real)  # space freed: the rerun does the rest, once
    again = run_job([str(d)], out, cfg, engine=ScriptedEngine(callback=lambda r: invoice_truth()))
    assert (again.skipped, again.succeeded, again.exit_code) == (4, 2, EXIT_OK)
    ids = duckdb.sql(f"SELECT doc_id FROM '{out}/results/*.parquet'").fetchall()
    assert len(ids) == 6 == len(set(ids))


def test_a_run_of_another_schema_into_an_output_is_refused(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf")
    out = tmp_path / "out"
    run_job([str(d)], out, small_config(), engine=ScriptedEngine(callback=lambda r: invoice_truth()))
    with pytest.raises(CouldNotStart, match=r"schema invoice .*'receipt'.*\+merchant"):
        run_job([str(d)], out, small_config(schema="receipt"), engine=ScriptedEngine({}))
    n = duckdb.sql(f"SELECT count(*) FROM '{out}/results/*.parquet'").fetchall()[0][0]
    assert n == 1  # the README's glob still reads one table
