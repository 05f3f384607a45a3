"""``docextract compact``: small parts merged into large ones with the same rows, one row per document,
safe against kill -9 at every step and against a concurrent run; automatic after a run; on S3 too."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import compact as compact_mod
from pipeline import layout
from pipeline.compact import compact
from pipeline.errors import CouldNotStart
from pipeline.output import Output
from pipeline.runner import run_job
from pipeline.status import status
from pipeline.store import PartWriter, results_part_schema
from tests.conftest import REPO, small_config
from tests.helpers import add_invoices, run_cli
from tests.s3_server import S3Server, s3_server  # noqa: F401  (the session fixture)

SCRIPTED = "tests.scripted_engine:from_truth"
NIGHTS = 5


def scripted(truth_dir: Path, **over: Any) -> Any:
    return small_config(**{"engine.name": SCRIPTED, "engine.options": {"truth_dir": str(truth_dir)}, **over})


def nightly(inbox: Path, out: Any, nights: int, per_night: int = 2, **over: Any) -> list[Any]:
    """``nights`` runs over a growing inbox (one bad file on odd nights): a part pair per night."""
    summaries = []
    for night in range(nights):
        add_invoices(inbox, night * per_night, per_night)
        if night % 2:
            (inbox / f"notes{night}.pdf").write_text(f"not a pdf {night}\n")
        summaries.append(run_job([str(inbox)], out, scripted(inbox, **over)))
        assert summaries[-1].exit_code == 0
    return summaries


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("nightly")
    nightly(base / "in", base / "out", NIGHTS)
    return base / "in", base / "out"


@pytest.fixture
def out(built: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(built[1], tmp_path / "out")
    return tmp_path / "out"


def rows(out: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What the README's glob queries return: every result's typed values, every failure."""
    res = duckdb.sql(f"SELECT doc_id, invoice_number, vendor.name, total, issue_date, line_items, run_id "
                     f"FROM '{out}/results/*.parquet' ORDER BY doc_id").fetchall()
    fail = duckdb.sql(f"SELECT doc_id, stage, error_type, run_id FROM '{out}/failures/*.parquet' ORDER BY doc_id").fetchall()
    return res, fail


def one_row_per_doc(out: Path) -> None:
    n, distinct = duckdb.sql(
        f"SELECT count(*), count(DISTINCT doc_id) FROM (SELECT doc_id FROM '{out}/results/*.parquet' "
        f"UNION ALL SELECT doc_id FROM '{out}/failures/*.parquet')").fetchall()[0]
    assert n == distinct


def parts(out: Any, table: str) -> list[Any]:
    return layout.list_parts(f"{out}/{table}" if isinstance(out, str) else out / table)


def test_compact_merges_parts_with_the_same_rows_and_resume_still_skips(built, out):
    before = rows(out)
    assert len(before[0]) == 2 * NIGHTS and len(before[1]) == NIGHTS // 2
    assert len(parts(out, "results")) == NIGHTS and len(parts(out, "failures")) == NIGHTS // 2 + 1  # + the empty one of night 1
    r = run_cli("compact", out)
    assert r.returncode == 0, r.stderr
    assert f"results: {NIGHTS} parts" in r.stdout and "rewrote 5 into 1" in r.stdout
    assert len(parts(out, "results")) == 1 and len(parts(out, "failures")) == 1
    assert rows(out) == before  # same documents, same typed values, same run ids
    one_row_per_doc(out)
    assert results_part_schema(out).equals(results_part_schema(built[1]), check_metadata=False)
    assert not (out / "_compact").exists()
    st = status(out)
    assert (st.done, st.pending) == (2 * NIGHTS, 0)
    again = run_job([str(built[0])], out, scripted(built[0]))
    assert (again.skipped, again.processed) == (2 * NIGHTS + NIGHTS // 2, 0)
    assert rows(out) == before


def test_dry_run_changes_nothing(out):
    listing = sorted(p.relative_to(out) for p in out.rglob("*"))
    r = run_cli("compact", out, "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    assert '"parts_rewritten": 5' in r.stdout
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == listing


def test_large_parts_are_left_alone(out):
    names = {p.name for p in parts(out, "results")}
    rep = compact(out, target_mb=0.001)  # 1 KB: every part is "large"
    assert all(t.parts_rewritten == 0 for t in rep.tables)
    assert {p.name for p in parts(out, "results")} == names


def test_superseded_rows_are_dropped_and_the_newest_kept(out):
    """A --force run killed between its commit and its reconcile leaves two rows for a document: the
    compaction keeps the newest only."""
    schema = results_part_schema(out)
    assert schema is not None
    old = pq.read_table(parts(out, "results")[0])
    newer = old.slice(0, 1).set_column(old.schema.get_field_index("run_id"), "run_id", pa.array(["later"]))
    w = PartWriter(out, "29991231T000000000000Z-later", schema)
    w.commit(newer, [])
    w.close()
    doc = newer.column("doc_id")[0].as_py()
    ev = f"SELECT count(*) FROM '{out}/evidence/*.parquet' WHERE doc_id = '{doc}'"
    ((evidence_rows,),) = duckdb.sql(ev).fetchall()
    assert evidence_rows > 0  # the old result's evidence
    rep = compact(out)
    assert rep.superseded_dropped == 1 + evidence_rows  # the old row, and its evidence with it (the new one has none)
    assert duckdb.sql(ev).fetchall() == [(0,)]
    one_row_per_doc(out)
    assert duckdb.sql(f"SELECT run_id FROM '{out}/results/*.parquet' WHERE doc_id = '{doc}'").fetchall() == [("later",)]


# --------------------------------------------------------------------------- kill -9 at every step

CHILD = textwrap.dedent("""
    import os, signal, shutil, sys
    import pipeline.compact as c, pipeline.fs as f
    at, mode, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    n = [0]
    def step(fn):
        def wrapped(*a, **k):
            n[0] += 1
            if n[0] == at:
                os.kill(os.getpid(), signal.SIGSTOP if mode == "stop" else signal.SIGKILL)
            return fn(*a, **k)
        return wrapped
    for mod, name in ((f, "write_bytes_atomic"), (f, "delete"), (os, "link"), (c, "_exchange"), (shutil, "rmtree")):
        setattr(mod, name, step(getattr(mod, name)))
    if mode == "in-place":
        c._exchange = lambda a, b: False  # a filesystem without RENAME_EXCHANGE: the object-store path
    rep = c.compact(out)
    print("steps", n[0])
""")


def run_child(out: Path, at: int, mode: str = "kill") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(at), mode, str(out)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("mode", ["kill", "in-place"])
def test_kill_9_at_every_step_never_loses_or_doubles_a_row(out, tmp_path, mode):
    before = rows(out)
    work = tmp_path / "work"
    at, killed = 1, 0
    while True:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(out, work)
        p = run_child(work, at, mode)
        stdout, stderr = p.communicate(timeout=120)
        if p.returncode == 0:
            assert "steps" in stdout
            break
        assert p.returncode == -signal.SIGKILL, stderr
        killed += 1
        if mode == "kill":
            assert rows(work) == before  # the swap is one step: a reader sees the old table or the new
        else:  # uploaded, then deleted: a row may be there twice until the next start, never missing
            res, fail = rows(work)
            assert set(map(repr, res)) == set(map(repr, before[0])) and set(fail) == set(before[1])
        compact(work)  # the next compaction (or run) finishes the job
        assert rows(work) == before
        one_row_per_doc(work)
        assert len(parts(work, "results")) == 1 and not (work / "_compact").exists()
        at += 1
    assert killed >= 4  # merged part written, links, the swap, the old table removed: each step was hit
    assert rows(work) == before and len(parts(work, "results")) == 1


# --------------------------------------------------------------------------- one writer at a time


def test_compaction_refused_while_a_run_holds_the_output(out):
    run = Output(out, "a-run", pa.schema([]), "zstd", 600, lambda why: None)
    run.lock()
    try:
        r = run_cli("compact", out)
        assert r.returncode == 2
        assert "another docextract run" in r.stderr and "is writing to" in r.stderr
    finally:
        run.close()
    assert len(parts(out, "results")) == NIGHTS


def test_a_run_started_during_a_compaction_is_refused_and_the_compaction_finishes(built, out):
    before = rows(out)
    p = run_child(out, 3, "stop")  # stopped in the middle of its work, holding the lock
    try:
        deadline = time.monotonic() + 60
        while not open(f"/proc/{p.pid}/stat").read().split(")")[1].split()[0] == "T":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with pytest.raises(CouldNotStart, match="another docextract compaction"):
            run_job([str(built[0])], out, scripted(built[0]))
    finally:
        os.kill(p.pid, signal.SIGCONT)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr
    assert rows(out) == before and len(parts(out, "results")) == 1
    after = run_job([str(built[0])], out, scripted(built[0]))
    assert after.processed == 0 and after.exit_code == 0


# --------------------------------------------------------------------------- automatic


def test_a_run_compacts_when_small_parts_pass_the_threshold(tmp_path):
    sums = nightly(tmp_path / "in", tmp_path / "out", 4, **{"output.compact_min_parts": 3})
    counts = [len(parts(tmp_path / "out", "results"))]
    assert counts == [2]  # nights 1, 2: 1, 2 parts; night 3: 3 -> 1; night 4: 2
    res, _ = rows(tmp_path / "out")
    assert len(res) == 8 and {r[-1] for r in res} == {s.run_id for s in sums}
    one_row_per_doc(tmp_path / "out")
    off = nightly(tmp_path / "in2", tmp_path / "out2", 4, **{"output.compact_min_parts": 0})
    assert len(off) == 4 and len(parts(tmp_path / "out2", "results")) == 4


# --------------------------------------------------------------------------- object storage


def test_compact_on_s3_and_a_cut_short_one_finished_by_the_next_run(s3_server, tmp_path, monkeypatch):
    inbox = tmp_path / "in"
    out = f"{s3_server.prefix()}/out"
    nightly(inbox, out, 3)
    bucket = out.removeprefix("s3://")

    def read() -> list[tuple[Any, ...]]:
        t = pq.read_table(f"{bucket}/results", filesystem=s3_server.fs)
        return sorted(zip(*t.select(["doc_id", "total", "run_id"]).to_pydict().values(), strict=True))

    before = read()
    assert len(before) == 6 and len(parts(out, "results")) == 3
    deleted: list[Any] = []
    real_delete = compact_mod.fs.delete

    def crash_after_one(loc: Any, missing_ok: bool = True) -> None:
        if "/results/" in str(loc):
            if deleted:
                raise KeyboardInterrupt("killed")  # stops between two deletes of results parts (the lease is let go)
            deleted.append(loc)
        real_delete(loc, missing_ok)

    monkeypatch.setattr(compact_mod.fs, "delete", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        compact(out)
    monkeypatch.undo()
    left = read()
    assert set(left) == set(before) and len(left) > len(before)  # moved rows twice for now, none missing
    s = run_job([str(inbox)], out, scripted(inbox))  # its reconcile keeps the merged copy
    assert (s.processed, s.exit_code) == (0, 0)
    assert read() == before
    rep = compact(out)
    assert read() == before and len(parts(out, "results")) == 1
    assert {t.table: t.swap for t in rep.tables}["results"] in ("", "upload-then-delete")
    assert not [k for k in s3_server.keys(out) if "/_compact/" in k]
