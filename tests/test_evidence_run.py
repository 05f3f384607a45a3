"""The evidence table and needs_review in a run (scripted engine), read back with pyarrow and DuckDB;
exactly-once of evidence under --force, --retry-failed and a crash between parts.

Page words come from the raster stage itself (``[words]``: the text layer of these digital PDFs).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pymupdf
import pytest

from pipeline.backends import local_backend
from pipeline.fields import leaf_values
from pipeline.records import Word, WordSource
from pipeline.runner import run_job
from pipeline.store import PartWriter
from pipeline.synth import generate
from tests.conftest import small_config
from tests.scripted_engine import ScriptedEngine, truth_answers


def pdf_words(path: str, index: int) -> list[Word]:
    with pymupdf.open(path) as doc:
        pg = doc[index]
        w, h = pg.rect.width, pg.rect.height
        lines: dict[tuple[int, int], int] = {}
        return [Word(t, x0 / w, y0 / h, x1 / w, y1 / h, lines.setdefault((b, ln), len(lines)), WordSource.TEXT_LAYER)
                for x0, y0, x1, y1, t, b, ln, _ in pg.get_text("words")]


class WordsStream:
    def __init__(self, inner):
        self.inner = inner

    def __iter__(self):
        for doc, out in self.inner:
            for p in getattr(out, "pages", []):
                p.words = pdf_words(doc.path, p.index)
            yield doc, out

    def wait_started(self):
        self.inner.wait_started()

    def close(self):
        self.inner.close()


class WordsSource:
    """Test-only: the real local source, with the PDFs' text-layer words put on its pages."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def rasterize(self, docs):
        return WordsStream(self.inner.rasterize(docs))


def run(inputs, out, engine, **kw):
    cfg = small_config()
    return run_job([str(i) for i in inputs], out, cfg, engine=engine, **kw)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    generate(d, 3, seed=11, kinds=("invoice",), mix={"pdf-digital": 1})
    return d


def q(sql):
    return duckdb.sql(sql).fetchall()


def evidence_counts(out: Path) -> dict[str, int]:
    return dict(q(f"SELECT doc_id, count(*) FROM '{out}/evidence/*.parquet' GROUP BY doc_id"))


def test_evidence_table_one_row_per_leaf_and_truth_is_grounded(synth, tmp_path):
    truth = truth_answers(synth)
    out = tmp_path / "out"
    s = run([synth], out, ScriptedEngine(truth))
    assert s.exit_code == 0
    t = pq.read_table(out / "evidence")  # pyarrow reads the table directory as one table
    assert t.num_rows == sum(len(leaf_values(v)) for v in truth.values())
    assert set(t.column("doc_id").to_pylist()) == set(truth)
    rows = q(f"SELECT doc_id, field, grounded, x0, y0, x1, y1, page, source, confidence FROM '{out}/evidence/*.parquet'")
    for doc_id, field, grounded, *box, page, source, conf in rows:
        assert dict(leaf_values(truth[doc_id])).get(field, "missing") != "missing"
        if grounded:
            assert all(0 <= v <= 1 for v in box) and box[0] < box[2] and box[1] < box[3]
            assert page >= 1 and source == "text_layer" and conf == 1.0
    grounded = [g for _, _, g, *_ in rows if g is not None]
    assert sum(grounded) / len(grounded) >= 0.95
    totals = q(f"SELECT doc_id, grounded FROM '{out}/evidence/*.parquet' WHERE field = 'total'")
    assert all(g for _, g in totals) and len(totals) == 3
    res = q(f"SELECT run_id, needs_review, review_reasons FROM '{out}/results/*.parquet'")
    ev_runs = {r for (r,) in q(f"SELECT DISTINCT run_id FROM '{out}/evidence/*.parquet'")}
    assert ev_runs == {r for r, _, _ in res}
    for _, needs, reasons in res:  # a truth answer is flagged only for a value not printed as such
        assert needs == bool(reasons)
        assert all(r.endswith("not found on the page") for r in reasons)


def test_a_wrong_total_needs_review(synth, tmp_path):
    truth = truth_answers(synth)
    bad = sorted(truth)[0]
    answers = {d: dict(v) for d, v in truth.items()}
    answers[bad]["total"] = str(float(answers[bad]["total"]) + 1000.0)
    answers[bad]["tax"] = str(float(answers[bad]["tax"]) + 1000.0)  # the rules still hold
    out = tmp_path / "out"
    assert run([synth], out, ScriptedEngine(answers)).exit_code == 0
    needs, reasons = q(f"SELECT needs_review, review_reasons FROM '{out}/results/*.parquet' WHERE doc_id = '{bad}'")[0]
    assert needs is True and "total: not found on the page" in reasons
    (g, conf), = q(f"SELECT grounded, confidence FROM '{out}/evidence/*.parquet' WHERE doc_id='{bad}' AND field='total'")
    assert g is False and conf < 0.5


def test_evidence_exactly_once_under_force_and_retry_failed(synth, tmp_path):
    truth = truth_answers(synth)
    out = tmp_path / "out"
    first = sorted(truth)[0]
    answers: dict = {d: v for d, v in truth.items()}
    answers[first] = "not json"
    run([synth], out, ScriptedEngine(answers))
    assert first not in evidence_counts(out)
    assert run([synth], out, ScriptedEngine(truth), retry_failed=True).exit_code == 0
    leaves = {d: len(leaf_values(v)) for d, v in truth.items()}
    assert evidence_counts(out) == leaves
    s = run([synth], out, ScriptedEngine(truth), force=True)
    assert evidence_counts(out) == leaves  # the superseded results' evidence is gone with them
    assert {r for (r,) in q(f"SELECT DISTINCT run_id FROM '{out}/evidence/*.parquet'")} == {s.run_id}


def test_crash_between_evidence_and_results_parts(synth, tmp_path, monkeypatch):
    truth = truth_answers(synth)
    out = tmp_path / "out"
    real = PartWriter._commit

    def crash_on_results(self, table_name, rows, schema):
        if table_name == "results":
            raise OSError(28, "No space left on device")
        return real(self, table_name, rows, schema)

    monkeypatch.setattr(PartWriter, "_commit", crash_on_results)
    s = run([synth], out, ScriptedEngine(truth))
    assert s.output_error and list((out / "evidence").glob("part-*.parquet"))  # evidence written, results not
    monkeypatch.setattr(PartWriter, "_commit", real)
    s = run([synth], out, ScriptedEngine(truth))
    assert s.exit_code == 0
    assert any("superseded" in w for w in s.warnings)  # the orphaned evidence rows were removed
    assert evidence_counts(out) == {d: len(leaf_values(v)) for d, v in truth.items()}


def test_evidence_off_writes_no_rows_and_no_flags(synth, tmp_path):
    truth = truth_answers(synth)
    out = tmp_path / "out"
    cfg = small_config(**{"evidence.enabled": False})
    backend = local_backend(cfg, out, engine=ScriptedEngine(truth))
    backend.source = WordsSource(backend.source)
    assert run_job([str(synth)], out, cfg, backend=backend).exit_code == 0
    assert q(f"SELECT count(*) FROM '{out}/evidence/*.parquet'") == [(0,)]
    assert q(f"SELECT count(*) FROM '{out}/results/*.parquet' WHERE NOT needs_review") == [(3,)]
    assert json.loads((out / "run.json").read_text())  # the run finished normally


def test_a_rule_that_failed_before_the_reask_is_a_review_reason(synth, tmp_path):
    truth = truth_answers(synth)
    first = sorted(truth)[0]

    def answer(req):
        t = dict(truth[req.doc_id])
        if req.doc_id == first and req.attempt == 1:
            t["total"] = str(float(t["total"]) + 5)  # subtotal + tax no longer equals the total
        return t

    out = tmp_path / "out"
    assert run([synth], out, ScriptedEngine(callback=answer)).exit_code == 0
    rows = dict((d, (a, n, r)) for d, a, n, r in q(
        f"SELECT doc_id, attempts, needs_review, review_reasons FROM '{out}/results/*.parquet'"))
    attempts, needs, reasons = rows[first]
    assert attempts == 2 and needs is True
    assert any(r.startswith("total: rule failed before the re-ask: subtotal_plus_tax_equals_total") for r in reasons)
    assert any(r.startswith("subtotal: rule failed before the re-ask") for r in reasons)
    failed = q(f"SELECT field, rule_failed FROM '{out}/evidence/*.parquet' WHERE doc_id = '{first}' AND len(rule_failed) > 0")
    assert {f for f, _ in failed} >= {"total", "subtotal", "tax"}


def test_evidence_survives_compaction_and_a_force_rerun(synth, tmp_path):
    """Evidence is kept by run_id, not by part name: merged parts keep their evidence, superseded go."""
    from pipeline.compact import compact

    truth = truth_answers(synth)
    out = tmp_path / "out"
    assert run([synth], out, ScriptedEngine(truth)).exit_code == 0
    assert run([synth], out, ScriptedEngine(truth), force=True).exit_code == 0
    leaves = {d: len(leaf_values(v)) for d, v in truth.items()}
    assert evidence_counts(out) == leaves
    compact(out, target_mb=64.0)
    assert evidence_counts(out) == leaves  # compacted: still one set per document
    assert run([synth], out, ScriptedEngine(truth)).exit_code == 0  # a run reconciles again: nothing lost
    assert evidence_counts(out) == leaves
    (runs,) = q(f"SELECT count(DISTINCT run_id) FROM '{out}/evidence/*.parquet'")
    assert runs == (1,)
