"""Reading an output: a run quarantines what is not ours, ``status`` and ``inspect`` report damage
instead of crashing, reading never imports code the output names, and a run whose output vanishes
stops instead of counting rows that are gone."""

import json
import os
from pathlib import Path

import pytest

from pipeline.errors import CouldNotStart
from pipeline.runner import EXIT_OUTPUT_FAILED, run_job
from pipeline.status import status
from pipeline.store import SkippedPart, read_table
from tests.helpers import all_rows, invoice_truth, run_cli, small_config, write_pdf
from tests.output_faults import OutputThief, damage_output, plant_code, remove_dir
from tests.scripted_engine import ScriptedEngine


def _engine():
    return ScriptedEngine(callback=lambda r: invoice_truth(), record=False)


@pytest.fixture
def done_output(tmp_path):
    """An output holding 4 results and 1 failure (a text file named .pdf), after a real run."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        write_pdf(inputs / f"doc{i}.pdf", text=f"Invoice number {i}")
    (inputs / "letter.pdf").write_text("Dear customer, please find attached...\n")
    out = tmp_path / "out"
    first = run_job([str(inputs)], out, small_config(**{"run.batch_size": 2}), engine=_engine())
    assert (first.succeeded, first.failed) == (4, 1)
    return inputs, out, first


# ----------------------------------------------------------------------------- parts that are not ours


def test_a_run_quarantines_every_file_that_is_not_a_part_of_ours(done_output):
    # Before: a part whose doc_id is an integer or null passed the check and every later run died
    # (AttributeError); one with an integer run_key stopped every later run (exit 2).
    inputs, out, _ = done_output
    faults = damage_output(out)
    again = run_job([str(inputs)], out, small_config(**{"run.batch_size": 2}), engine=_engine())
    assert (again.skipped, again.processed) == (5, 0)
    for name, (table, _) in faults.items():
        assert (out / "_quarantine" / table / name).is_file(), name
        assert not (out / table / name).exists(), name
        assert any(name in w and "_quarantine" in w for w in again.warnings), (name, again.warnings)
    rows = all_rows(out)  # both globs are queryable again
    assert len(rows) == 5 == len({d for d, _ in rows})
    clean = run_job([str(inputs)], out, small_config(**{"run.batch_size": 2}), engine=_engine())
    assert (clean.skipped, clean.processed, clean.warnings) == (5, 0, [])


def test_status_and_inspect_report_damage_and_exit_0(done_output):
    inputs, out, first = done_output
    faults = damage_output(out)
    st = status(out)
    assert (st.done, st.failed_by_type, st.pending, st.other_keys) == (4, {"unsupported_type": 1}, 0, 0)
    assert sorted(Path(s.location).name for s in st.damaged) == sorted(faults)
    for s in st.damaged:
        assert faults[Path(s.location).name][1] in s.reason, s
    skipped: list[SkippedPart] = []
    res = read_table(out, "results", skipped)
    assert res is not None and res.num_rows == 4 and set(res.column("run_key").to_pylist()) == {first.run_key}
    assert sorted(Path(s.location).name for s in skipped) == sorted(n for n, (t, _) in faults.items() if t == "results")

    for cmd, expect in (("status", "done:    4"), ("inspect", "results: 4 rows; failures: 1 rows")):
        r = run_cli(cmd, str(out))
        assert r.returncode == 0, r.stderr
        assert expect in r.stdout and "Traceback" not in r.stderr
        warned = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
        assert len(warned) == len(faults), r.stderr
        for name, (_, reason) in faults.items():
            assert any(name in line and reason in line for line in warned), (cmd, name, r.stderr)
    r = run_cli("status", str(out))
    assert "failed:  1 (unsupported_type=1)" in r.stdout and "pending: 0" in r.stdout
    for name, (table, _) in faults.items():  # readers never move anything
        assert (out / table / name).is_file()


def test_inspect_of_an_output_whose_parts_are_all_damaged_says_so(tmp_path):
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "results" / "part-1-00000.parquet").write_bytes(b"")
    r = run_cli("inspect", str(out))
    assert r.returncode == 0, r.stderr
    assert "results: 0 rows; failures: 0 rows" in r.stdout
    assert "warning: " in r.stderr and "part-1-00000.parquet" in r.stderr and "Traceback" not in r.stderr


def test_a_damaged_run_json_is_reported_not_a_traceback(done_output):
    _, out, _ = done_output
    (out / "run.json").write_text('{"run_id": ')
    r = run_cli("status", str(out))
    assert r.returncode == 2 and "run.json" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("inspect", str(out))
    assert r.returncode == 0 and "results: 4 rows" in r.stdout
    assert "warning: " in r.stderr and "run.json" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- code named by an output


def test_status_and_inspect_never_import_code_the_output_names(done_output, tmp_path):
    # Before: `cd OUT && docextract status .` imported the module run.json names as the schema,
    # with the current directory on the import path: a crafted output ran code.
    _, out, first = done_output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    marker = tmp_path / "pwned"
    plant_code(out, elsewhere, marker)
    for cmd, where, target in (("status", out, "."), ("status", elsewhere, str(out)), ("inspect", out, ".")):
        r = run_cli(cmd, target, cwd=where)
        assert r.returncode == 0, (cmd, where, r.stderr)
        assert not marker.exists(), (cmd, where)
        assert ("done:    4" if cmd == "status" else "results: 4 rows") in r.stdout
    assert f"run key {first.run_key}" in run_cli("status", ".", cwd=out).stdout
    assert status(out).run_key == first.run_key and not marker.exists()


def test_status_with_the_users_config_computes_the_key_from_their_schema(done_output):
    _, out, first = done_output
    assert status(out, config=small_config()).run_key == first.run_key
    other = status(out, config=small_config(**{"engine.model": "another-model"}))
    assert other.run_key != first.run_key and (other.done, other.other_keys) == (0, 5)


def test_status_of_a_run_json_without_run_key_asks_for_the_config(done_output):
    _, out, _ = done_output
    manifest = json.loads((out / "run.json").read_text())
    del manifest["run_key"]
    (out / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(CouldNotStart, match="-c"):
        status(out)
    assert status(out, config=small_config()).done == 4


# ----------------------------------------------------------------------------- an output that vanishes


def _six_docs(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(6):
        write_pdf(inputs / f"doc{i}.pdf", text=f"Invoice number {i}")
    return inputs


def test_output_deleted_mid_run_stops_the_run_and_leaves_the_documents_pending(tmp_path):
    # Before: the commit recreated the directory and went on; the summary said 6 extracted for the
    # 2-4 rows left on disk.
    inputs, out = _six_docs(tmp_path), tmp_path / "out"
    cfg = small_config(**{"run.batch_size": 2})
    s = run_job([str(inputs)], out, cfg, engine=OutputThief(out, after=3))
    assert s.exit_code == EXIT_OUTPUT_FAILED and "disappeared" in s.output_error and str(out) in s.output_error
    assert s.processed < 6  # stopped at the first commit after the deletion
    assert not list(out.glob("results/*.parquet")) and not list(out.glob("failures/*.parquet"))
    again = run_job([str(inputs)], out, cfg, engine=_engine())
    assert (again.skipped, again.processed, again.succeeded) == (0, 6, 6)
    rows = all_rows(out)
    assert len(rows) == 6 == len({d for d, _ in rows})


def test_cli_run_whose_output_is_deleted_exits_6_with_a_clear_message(tmp_path):
    inputs, out = _six_docs(tmp_path), tmp_path / "out"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[rasterize]\ndpi = 72\nmax_pixels = 50176\nworkers = 1\n[run]\nbatch_size = 2\nprogress = false\n"
        f"[engine.options]\nout = {json.dumps(str(out))}\nafter = 3\n"
    )
    r = run_cli("run", str(inputs), "--out", str(out), "-c", str(cfg), "--engine", "tests.output_faults:output_thief")
    assert r.returncode == EXIT_OUTPUT_FAILED, (r.returncode, r.stderr)
    assert "disappeared during the run" in r.stderr and str(out) in r.stderr and "Traceback" not in r.stderr
    assert not list(out.glob("results/*.parquet"))


def test_a_table_directory_removed_mid_run_is_not_recreated(tmp_path):
    # Someone removes results/ only: its parts are gone, so the run stops rather than writing
    # the rest into a fresh, half-empty results/.
    inputs, out = _six_docs(tmp_path), tmp_path / "out"
    removed = []

    def answer(req):
        if not removed and list((out / "results").glob("part-*.parquet")):  # once it holds a part
            remove_dir(out / "results")
            removed.append(req.doc_id)
        return invoice_truth()

    s = run_job([str(inputs)], out, small_config(**{"run.batch_size": 2}), engine=ScriptedEngine(callback=answer))
    assert s.exit_code == EXIT_OUTPUT_FAILED and f"{out / 'results'} disappeared" in s.output_error
    assert removed and not list(out.glob("results/*.parquet"))  # nothing in a results/ made anew
    assert os.path.isdir(out / "failures")
