"""README "The morning after": every SQL block in that section runs here, against an output built by two
nights of scripted-engine runs (with failures) and a run record kept from an older format version, so the
README cannot drift from the layout.  A block without a check below fails the test."""

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.runner import run_job
from tests.conftest import REPO, invoice_truth, small_config, write_pdf
from tests.scripted_engine import ScriptedEngine

PLACEHOLDER = "/data/extracted"


def readme_queries() -> dict[str, str]:
    """Title (the block's first ``-- `` line) -> SQL, for each ```sql block of the section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## The morning after\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.DOTALL)
    queries = {}
    for sql in blocks:
        title = sql.splitlines()[0]
        assert title.startswith("-- "), sql
        queries[title[3:].strip()] = sql
    assert len(queries) == len(blocks) >= 8
    return queries


def run(sql: str, out: Path, con: duckdb.DuckDBPyConnection | None = None) -> list[tuple]:
    """One README query on ``out``, in ``con`` (one session, as a reader would type them in order)."""
    assert PLACEHOLDER in sql or "FROM runs" in sql
    rel = (con or duckdb.connect()).sql(sql.replace(PLACEHOLDER, str(out)))
    return [] if rel is None else rel.fetchall()


def doc_id(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Night 1: 6 invoices (2 answered with prose: invalid_json) and an empty file.  Night 2 (with
    --retry-failed): the 2 are answered right, 3 new invoices come in, one answered with ``{}``
    (schema_mismatch).  Plus the record of a run from before format_version existed."""
    tmp = tmp_path_factory.mktemp("morning")
    inputs, out = tmp / "in", tmp / "out"
    inputs.mkdir()
    docs = [write_pdf(inputs / f"inv{i}.pdf", pages=1 + (i == 0), text=f"Invoice {i}") for i in range(6)]
    (inputs / "empty.pdf").write_bytes(b"")
    prose = {doc_id(docs[1]), doc_id(docs[2])}
    cfg = small_config(**{"run.max_failure_rate": 0.5})
    first = run_job([str(inputs)], out, cfg, engine=ScriptedEngine(
        callback=lambda r: "Sure! Here is the invoice." if r.doc_id in prose else invoice_truth()))
    new = [write_pdf(inputs / f"new{i}.pdf", text=f"New invoice {i}") for i in range(3)]
    wrong = doc_id(new[2])
    second = run_job([str(inputs)], out, cfg, retry_failed=True, engine=ScriptedEngine(
        callback=lambda r: {} if r.doc_id == wrong else invoice_truth(lines=3)))
    old = json.loads((out / "runs" / f"{first.run_id}.json").read_text())  # as format 1 wrote it
    for key in ("format_version", "finished_at", "duration_s", "max_failure_rate", "max_reject_rate", "error"):
        old.pop(key)
    old["counts"].pop("pending")
    old.update(run_id="20240301T020000000000Z-0ld0ne", started_at="2024-03-01T02:00:00+00:00", status="completed")
    (out / "runs" / f"{old['run_id']}.json").write_text(json.dumps(old))
    return {"out": out, "first": first, "second": second, "new": new, "docs": docs, "tmp": tmp}


def review_output(tmp: Path) -> Path:
    """results with the trust layer's columns as the contract defines them (needs_review bool,
    review_reasons list<string>): the review queries run here until that layer writes them."""
    out = tmp / "reviewed"
    (out / "results").mkdir(parents=True)
    t0 = dt.datetime(2025, 1, 31, 2, 0, tzinfo=dt.UTC)
    table = pa.table({
        "doc_id": ["a", "b", "c", "d"],
        "source_path": ["/in/a.pdf", "/in/b.pdf", "/in/c.pdf", "/in/d.pdf"],
        "total": [1.0, 2.0, 3.0, 4.0],
        "needs_review": [False, True, True, None],
        "review_reasons": [[], ["total: not found on the page"],
                           ["total: not found on the page", "vendor.name: low confidence"], None],
        "extracted_at": [t0 + dt.timedelta(minutes=i) for i in range(4)],
    }, schema=pa.schema([("doc_id", pa.string()), ("source_path", pa.string()), ("total", pa.float64()),
                         ("needs_review", pa.bool_()), ("review_reasons", pa.list_(pa.string())),
                         ("extracted_at", pa.timestamp("us", tz="UTC"))]))
    pq.write_table(table, out / "results" / "part-x-0.parquet")
    return out


def test_every_morning_after_query_runs_and_answers(nights):
    out, first, second = nights["out"], nights["first"], nights["second"]
    assert (first.succeeded, first.failed, first.exit_code) == (4, 3, 0)
    assert (second.succeeded, second.failed, second.skipped, second.exit_code) == (4, 1, 5, 0)
    queries = readme_queries()
    checked = set()
    con = duckdb.connect()

    def check(title: str, target: Path = out) -> list[tuple]:
        checked.add(title)
        return run(queries[title], target, con)

    [last] = check("Did the last run finish, and pass?")
    assert last[:3] == (second.run_id, "ok", 0) and last[4] == 0  # pending
    assert last[5] == pytest.approx(0.2) and last[6] == 0.5 and last[7] is None
    assert check("What failed in the last run, and why") == [
        ("validate", "schema_mismatch", True, 1, str(nights["new"][2]), last_message(out, "schema_mismatch"))]
    assert check("Every failure of the last run, one line each") == [
        (str(nights["new"][2]), "schema_mismatch", last_message(out, "schema_mismatch"))]
    assert check("What --retry-failed will redo, and what needs a person") == [
        (True, "schema_mismatch", 1), (False, "empty_file", 1)]
    reviewed = review_output(nights["tmp"])
    assert check("Results waiting for review", reviewed) == [
        ("/in/b.pdf", ["total: not found on the page"], dt.datetime(2025, 1, 31, 2, 1, tzinfo=dt.UTC)),
        ("/in/c.pdf", ["total: not found on the page", "vendor.name: low confidence"],
         dt.datetime(2025, 1, 31, 2, 2, tzinfo=dt.UTC))]
    assert check("Why results wait for review", reviewed) == [
        ("total: not found on the page", 2), ("vendor.name: low confidence", 1)]
    assert check("The run history as a view") == []
    assert con.sql("SELECT count(*), count(finished_at), count(counts.pending) FROM runs").fetchall() == [(3, 2, 2)]
    per_run = check("Throughput and failure rate per run")
    assert [r[0] for r in per_run] == ["20240301T020000000000Z-0ld0ne", first.run_id, second.run_id]
    assert [r[1] for r in per_run] == ["completed", "ok", "ok"]  # format 1 said completed
    assert [(r[3], r[4]) for r in per_run] == [(7, 7), (7, 7), (5, 5)]  # documents, pages (inv0 has 2)
    assert [r[7] for r in per_run] == pytest.approx([2 / 6, 2 / 6, 1 / 5], abs=1e-4)
    for r in per_run:
        assert r[5] > 0 and 0 <= r[6] <= 1  # documents/s, engine busy
    nightly = check("Per night (UTC): runs, documents, failure rate, documents/s")
    today = first_start(out, first.run_id)
    assert [(r[0], r[1], r[2]) for r in nightly] == [(dt.date(2024, 3, 1), 1, 7), (today, 2, 12)]
    assert [r[3] for r in nightly] == pytest.approx([2 / 6, 3 / 11], abs=1e-4) and all(r[4] > 0 for r in nightly)
    costly = check("The costliest documents")
    every = {r["source_path"]: r["prompt_tokens"] + r["output_tokens"] for t in ("results", "failures")
             for r in pq.read_table(out / t, columns=["source_path", "prompt_tokens", "output_tokens"]).to_pylist()}
    assert len(every) == 10 == len(costly)  # every document, costliest first
    assert [r[4] + r[5] for r in costly] == sorted(every.values(), reverse=True)[:10]
    assert every[costly[0][0]] == max(every.values()) and Path(costly[-1][0]).name == "empty.pdf"
    pages = {Path(r[0]).name: r[2] for r in costly}
    assert pages["inv0.pdf"] == 2 and pages["new0.pdf"] == 1 and {r[1] for r in costly} == {"extracted", "schema_mismatch", "empty_file"}
    assert check("Exactly one row per document (no rows: good)") == []
    assert checked == set(queries), f"README queries without a check: {set(queries) - checked}"


def last_message(out: Path, error_type: str) -> str:
    [(m,)] = duckdb.sql(f"SELECT message FROM '{out}/failures/*.parquet' WHERE error_type = '{error_type}'").fetchall()
    assert m
    return m


def first_start(out: Path, run_id: str) -> dt.date:
    started = json.loads((out / "runs" / f"{run_id}.json").read_text())["started_at"]
    return dt.datetime.fromisoformat(started).astimezone(dt.UTC).date()


def test_the_duplicates_check_finds_a_second_row(nights, tmp_path):
    """The check is not vacuous: a document with a second row (a copied part) is listed."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(nights["out"], out)
    part = sorted((out / "failures").glob("part-*.parquet"))[0]
    shutil.copy(part, part.with_name("part-copy-0.parquet"))
    rows = run(readme_queries()["Exactly one row per document (no rows: good)"], out)
    assert len(rows) == pq.read_table(part).num_rows and all(n == 2 for _, n in rows)
