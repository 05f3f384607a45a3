"""``output.partition_by``: results in Hive-style date folders that DuckDB and pyarrow prune, seen by
resume, status, reconcile and compaction; a layout change refused, or made by ``compact --partition-by``."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pytest

from pipeline import layout
from pipeline.compact import compact
from pipeline.errors import CouldNotStart
from pipeline.runner import run_job
from pipeline.status import status
from tests.conftest import small_config
from tests.helpers import add_invoices, run_cli
from tests.s3_server import S3Server, s3_server  # noqa: F401  (the session fixture)

SCRIPTED = "tests.scripted_engine:from_truth"
DAYS = ("2024-03-05", "2025-01-10")


def scripted(truth_dir: Path, **over: Any) -> Any:
    return small_config(**{"engine.name": SCRIPTED, "engine.options": {"truth_dir": str(truth_dir)}, **over})


def hive(out: Path, where: str = "") -> list[tuple[Any, ...]]:
    return duckdb.sql(f"SELECT doc_id, issue_date, issue_date_day FROM read_parquet('{out}/results/*/*.parquet', "
                      f"hive_partitioning = true) {where} ORDER BY doc_id").fetchall()


@pytest.fixture(scope="module")
def by_issue_date(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two nights, each with invoices of both issue dates: two parts in each of two partitions."""
    base = tmp_path_factory.mktemp("parts")
    inbox, out = base / "in", base / "out"
    for night in range(2):
        for k, day in enumerate(DAYS):
            add_invoices(inbox, night * 10 + k * 2, 2, issue_date=day, due_date=None)
        (inbox / f"bad{night}.pdf").write_text(f"not a pdf {night}")
        s = run_job([str(inbox)], out, scripted(inbox, **{"output.partition_by": "issue_date"}))
        assert (s.exit_code, s.failed) == (0, 1)
    return inbox, out


def test_results_are_written_in_date_folders_and_readers_prune(by_issue_date, tmp_path):
    inbox, out = by_issue_date
    folders = sorted(p.name for p in (out / "results").iterdir())
    assert folders == [f"issue_date_day={d}" for d in DAYS]
    assert all(len(list((out / "results" / f).glob("part-*.parquet"))) == 2 for f in folders)
    assert len(list((out / "failures").glob("part-*.parquet"))) == 2  # failures stay flat
    every = hive(out)
    assert len(every) == 8 and all(str(issue) == str(day) for _, issue, day in every)
    later = hive(out, "WHERE issue_date_day = DATE '2025-01-10'")
    assert len(later) == 4 and {str(r[1]) for r in later} == {"2025-01-10"}
    frags = list(ds.dataset(out / "results", partitioning="hive").get_fragments(
        filter=ds.field("issue_date_day") == "2025-01-10"))
    assert len(frags) == 2 and all("issue_date_day=2025-01-10" in f.path for f in frags)
    # pruning, shown: with the other date's files unreadable, a query filtered to this date still works
    # (DuckDB reads the first file's footer for the columns: the later date's files are the ones broken)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    for f in (broken / "results" / "issue_date_day=2025-01-10").glob("*.parquet"):
        f.write_bytes(b"PAR1 garbage PAR1")
    assert len(hive(broken, "WHERE issue_date_day = DATE '2024-03-05'")) == 4
    with pytest.raises(duckdb.Error):
        hive(broken)


def test_resume_status_force_and_compaction_see_the_partitions(by_issue_date, tmp_path):
    inbox = by_issue_date[0]
    out = tmp_path / "out"
    shutil.copytree(by_issue_date[1], out)
    cfg = scripted(inbox, **{"output.partition_by": "issue_date"})
    again = run_job([str(inbox)], out, cfg)
    assert (again.skipped, again.processed) == (10, 0)
    st = status(out)
    assert (st.done, st.pending, st.failed_by_type) == (8, 0, {"unsupported_type": 2})
    before = hive(out)
    rep = compact(out)  # two parts per date folder -> one
    assert {t.table: (t.parts_before, t.parts_after) for t in rep.tables} == {"results": (4, 2), "failures": (2, 1), "evidence": (2, 1)}
    assert sorted(p.parent.name for p in layout.list_parts(out / "results")) == [f"issue_date_day={d}" for d in DAYS]
    assert hive(out) == before
    forced = run_job([str(inbox)], out, cfg, force=True)
    assert forced.processed == 10
    after = duckdb.sql(f"SELECT doc_id, run_id FROM '{out}/results/*/*.parquet'").fetchall()
    assert len(after) == 8 == len({d for d, _ in after}) and {r for _, r in after} == {forced.run_id}
    assert hive(out) == before


def test_a_layout_change_is_refused_and_compact_rewrites_the_layout(tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    add_invoices(inbox, 0, 3)
    assert run_job([str(inbox)], out, scripted(inbox)).exit_code == 0  # flat
    dated = scripted(inbox, **{"output.partition_by": "extracted_date"})
    with pytest.raises(CouldNotStart, match=r"not partitioned.*docextract compact .* --partition-by extracted_date"):
        run_job([str(inbox)], out, dated)
    before = duckdb.sql(f"SELECT doc_id, total FROM '{out}/results/*.parquet' ORDER BY 1").fetchall()
    r = run_cli("compact", out, "--partition-by", "extracted_date")
    assert r.returncode == 0, r.stderr
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert [p.parent.name for p in layout.list_parts(out / "results")] == [f"extracted_date={today}"]
    got = duckdb.sql(f"SELECT doc_id, total, extracted_date FROM read_parquet('{out}/results/*/*.parquet', "
                     "hive_partitioning = true) ORDER BY 1").fetchall()
    assert [(d, t) for d, t, _ in got] == before and {str(x) for *_, x in got} == {today}
    s = run_job([str(inbox)], out, dated)
    assert (s.exit_code, s.skipped, s.processed) == (0, 3, 0)
    with pytest.raises(CouldNotStart, match=r"partitioned by extracted_date.*keep output.partition_by = 'extracted_date'"):
        run_job([str(inbox)], out, scripted(inbox))
    r = run_cli("compact", out, "--partition-by", "currency")
    assert r.returncode == 2 and "'currency' is string, not a date" in r.stderr
    assert [p.parent.name for p in layout.list_parts(out / "results")] == [f"extracted_date={today}"]


def test_partitioning_by_a_field_that_is_not_a_date_is_refused(tmp_path):
    inbox = tmp_path / "in"
    add_invoices(inbox, 0, 1)
    with pytest.raises(CouldNotStart, match="'currency' is string, not a date"):
        run_job([str(inbox)], tmp_path / "out", scripted(inbox, **{"output.partition_by": "currency"}))
    with pytest.raises(CouldNotStart, match="no column 'paid_on'"):
        run_job([str(inbox)], tmp_path / "out", scripted(inbox, **{"output.partition_by": "paid_on"}))


def test_partitions_on_s3_resume_and_compact(s3_server, tmp_path):
    inbox = tmp_path / "in"
    out = f"{s3_server.prefix()}/out"
    cfg = scripted(inbox, **{"output.partition_by": "extracted_date"})
    for night in range(2):
        add_invoices(inbox, night * 2, 2)
        assert run_job([str(inbox)], out, cfg).exit_code == 0
    today = dt.datetime.now(dt.UTC).date().isoformat()
    bucket = out.removeprefix("s3://")
    keys = [k for k in s3_server.keys(out) if "/results/" in k]
    assert len(keys) == 2 and all(f"/results/extracted_date={today}/part-" in k for k in keys)
    again = run_job([str(inbox)], out, cfg)
    assert (again.skipped, again.processed) == (4, 0)
    rep = compact(out)
    assert {t.table: (t.parts_before, t.parts_after) for t in rep.tables}["results"] == (2, 1)
    d = ds.dataset(f"{bucket}/results", filesystem=s3_server.fs, partitioning="hive")
    t = d.to_table(filter=ds.field("extracted_date") == today)
    assert t.num_rows == 4 == len(set(t.column("doc_id").to_pylist()))
    assert d.to_table(filter=ds.field("extracted_date") == "1999-01-01").num_rows == 0


def test_an_empty_table_stays_queryable_when_its_layout_changes(tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    (inbox / "notes.pdf").write_text("not a pdf")
    assert run_job([str(inbox)], out, scripted(inbox)).failed == 1  # results: one empty part
    rep = compact(out, partition_by="extracted_date")
    assert {t.table: t.parts_after for t in rep.tables}["results"] == 1
    assert [p.parent.name for p in layout.list_parts(out / "results")] == [f"extracted_date={layout.NULL_PARTITION}"]
    q = f"SELECT count(*) FROM read_parquet('{out}/results/*/*.parquet', hive_partitioning = true)"
    assert duckdb.sql(q).fetchall() == [(0,)]
