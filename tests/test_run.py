"""End to end through the runner with the scripted engine (a test double for the model)."""

import json
import os
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.records import Generation
from pipeline.runner import EXIT_TOO_MANY_FAILURES, CouldNotStart, run_job
from tests.helpers import CORPUS_FAILURES, invoice_truth, q, small_config, write_pdf
from tests.scripted_engine import ScriptedEngine, truth_answers


def test_run_accounts_for_every_document_with_typed_rows(corpus, tmp_path):
    out = tmp_path / "out"
    engine = ScriptedEngine(truth_answers(corpus["dir"]))
    s = run_job([str(corpus["dir"])], out, small_config(), engine=engine)
    n_inputs = len(corpus["good"]) + len(corpus["bad"])
    assert (s.inputs, s.succeeded, s.failed, s.exit_code) == (n_inputs, len(corpus["good"]), len(corpus["bad"]), 0)
    ids = q(f"SELECT doc_id FROM '{out}/results/*.parquet' UNION ALL SELECT doc_id FROM '{out}/failures/*.parquet'")
    assert len(ids) == n_inputs == len(set(ids))
    # typed columns equal the ground truth
    rows = q(
        f"SELECT source_path, invoice_number, vendor.name, total, issue_date, len(line_items), "
        f"line_items[1].unit_price, page_count, pages_used FROM '{out}/results/*.parquet'"
    )
    for path, number, vendor, total, issue, n_items, price, page_count, used in rows:
        t = corpus["truth"][Path(path).name]
        assert (number, vendor, total) == (t["invoice_number"], t["vendor"]["name"], Decimal(t["total"]))
        assert str(issue) == t["issue_date"] and n_items == len(t["line_items"])
        assert price == Decimal(t["line_items"][0]["unit_price"])
        assert used == page_count
    pages = dict((Path(p).name, (c, u)) for p, c, u in [(r[0], r[7], r[8]) for r in rows])
    assert pages["inv2_multi.pdf"] == (3, 3) and pages["scan.tiff"] == (2, 2)
    # the multi-page request carried all its pages, in one request
    [batch] = engine.batches
    assert sorted(len(r.images) for r in batch) == [1, 1, 1, 2, 3]
    failures = {Path(p).name: (st, et) for p, st, et in q(f"SELECT source_path, stage, error_type FROM '{out}/failures/*.parquet'")}
    assert failures == CORPUS_FAILURES
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "ok" and manifest["counts"]["processed"] == n_inputs
    assert manifest["counts"]["failed_by_type"]["encrypted"] == 1
    assert manifest["throughput"]["prompt_tokens"] > 0


def test_second_run_skips_finished_work_and_new_files_are_picked_up(corpus, tmp_path):
    out = tmp_path / "out"
    cfg = small_config()
    answers = truth_answers(corpus["dir"])
    run_job([str(corpus["dir"])], out, cfg, engine=ScriptedEngine(answers))
    engine = ScriptedEngine(answers)
    s = run_job([str(corpus["dir"])], out, cfg, engine=engine)
    assert (s.skipped, s.processed, engine.batches) == (9, 0, [])
    write_pdf(corpus["dir"] / "new.pdf", text="new one")
    s = run_job([str(corpus["dir"])], out, cfg, engine=ScriptedEngine(answers))
    assert (s.skipped, s.processed) == (9, 1)
    s = run_job([str(corpus["dir"])], out, small_config(**{"engine.model": "other"}), engine=ScriptedEngine(answers))
    assert s.skipped == 0 and s.processed == 10  # a changed model reprocesses


def test_truncation_reask_and_engine_errors(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    paths = [write_pdf(d / f"{n}.pdf", text=n) for n in ("trunc", "fixme", "boom")]
    good = json.dumps(invoice_truth())
    calls = Counter()

    def answer(req):
        name = next(p.stem for p in paths if req.doc_id == __import__("hashlib").sha256(p.read_bytes()).hexdigest())
        calls[name] += 1
        if name == "trunc":
            return Generation(req.doc_id, '{"invoice_number": "12', "length", 10, 256)
        if name == "fixme":
            return good if req.attempt == 2 else '{"invoice_number": 5}'
        return "{not json"

    out = tmp_path / "out"
    cfg = small_config(**{"run.max_attempts": 2, "run.max_failure_rate": 1.0})  # 2 of 3 fail on purpose
    s = run_job([str(d)], out, cfg, engine=ScriptedEngine(callback=answer))
    # issue 16: a truncated answer is now asked again once (at run.truncated_temperature); it was not before
    assert calls == {"trunc": 2, "fixme": 2, "boom": 2}
    res = q(f"SELECT attempts, raw_json FROM '{out}/results/*.parquet'")
    assert res == [(2, good)]
    fails = {
        Path(p).stem: (et, raw, errs, att)
        for p, et, raw, errs, att in q(f"SELECT source_path, error_type, raw_output, errors, attempts FROM '{out}/failures/*.parquet'")
    }
    assert fails["trunc"][0] == "truncated" and fails["trunc"][1] == '{"invoice_number": "12'
    assert fails["boom"][0] == "invalid_json" and fails["boom"][3] == 2 and len(fails["boom"][2]) == 2
    assert s.exit_code == 0


def test_engine_exception_fails_only_that_batch(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(5):
        write_pdf(d / f"{i}.pdf", text=f"doc {i}")

    class Broken(ScriptedEngine):
        def generate(self, requests):
            self.batches.append(list(requests))
            if len(self.batches) <= 3:  # the first batch fails on every retry
                raise RuntimeError("CUDA error: device-side assert")
            return super().generate(requests)

    out = tmp_path / "out"
    cfg = small_config(**{"run.batch_size": 2, "run.engine_retries": 3, "run.engine_backoff_s": 0})
    s = run_job([str(d)], out, cfg, engine=Broken(callback=lambda r: invoice_truth()))
    assert (s.succeeded, s.failed) == (3, 2)
    assert q(f"SELECT DISTINCT error_type, stage FROM '{out}/failures/*.parquet'") == [("engine_error", "infer")]


def test_max_failure_rate_exit_code_and_could_not_start(corpus, tmp_path):
    s = run_job([str(corpus["dir"])], tmp_path / "o", small_config(**{"run.max_failure_rate": 0.1}), engine=ScriptedEngine({}))
    assert s.exit_code == EXIT_TOO_MANY_FAILURES
    with pytest.raises(CouldNotStart, match="unknown schema"):
        run_job([str(corpus["dir"])], tmp_path / "o2", small_config(schema="nope"), engine=ScriptedEngine({}))
    (tmp_path / "void").mkdir()
    with pytest.raises(CouldNotStart, match="no input documents"):
        run_job([str(tmp_path / "void")], tmp_path / "o3", small_config(), engine=ScriptedEngine({}))


def test_user_schema_end_to_end(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "po.pdf", text="PO")
    write_pdf(d / "neg.pdf", text="negative PO")
    answers = {}
    from pipeline.discover import discover

    for doc in discover([str(d)]).documents:
        neg = "neg" in doc.path
        answers[doc.doc_id] = {"po_number": "PO-1", "order_date": "2024-05-01", "buyer": "ACME", "amount": -1 if neg else 99.5}
    out = tmp_path / "out"
    s = run_job([str(d)], out, small_config(schema="tests.user_schema:PurchaseOrder"), engine=ScriptedEngine(answers))
    assert (s.succeeded, s.failed) == (1, 1)
    assert q(f"SELECT po_number, amount, order_date FROM '{out}/results/*.parquet'")[0][:2] == ("PO-1", Decimal("99.50"))
    [(et, msg)] = q(f"SELECT error_type, message FROM '{out}/failures/*.parquet'")
    assert et == "rule_violation" and "amount_positive" in msg


def test_worker_pool_gives_the_same_rows(corpus, tmp_path):
    answers = truth_answers(corpus["dir"])
    a = run_job([str(corpus["dir"])], tmp_path / "a", small_config(), engine=ScriptedEngine(answers))
    b = run_job([str(corpus["dir"])], tmp_path / "b", small_config(**{"rasterize.workers": 2}), engine=ScriptedEngine(answers))
    assert (a.succeeded, a.failed) == (b.succeeded, b.failed)
    cols = "doc_id, total, pages_used"
    assert sorted(q(f"SELECT {cols} FROM '{tmp_path}/a/results/*.parquet'")) == sorted(
        q(f"SELECT {cols} FROM '{tmp_path}/b/results/*.parquet'")
    )
    assert sorted(q(f"SELECT doc_id, error_type FROM '{tmp_path}/a/failures/*.parquet'")) == sorted(
        q(f"SELECT doc_id, error_type FROM '{tmp_path}/b/failures/*.parquet'")
    )


def test_answer_that_does_not_fit_its_column_is_a_failure_row_not_a_crash(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf")
    write_pdf(d / "b.pdf", text="other")
    from pipeline.discover import discover

    ids = [doc.doc_id for doc in discover([str(d)]).documents]
    answers = {
        ids[0]: {"n": 2**70, "amount": "1.5"},  # int64 overflow
        ids[1]: {"n": 1, "amount": "123456789012345678901234567890.5"},  # too many digits for decimal(38,9)
    }
    out = tmp_path / "out"
    s = run_job([str(d)], out, small_config(schema="tests.user_schema:Loose", **{"run.max_attempts": 1}), engine=ScriptedEngine(answers))
    assert (s.succeeded, s.failed) == (0, 2)
    assert {r[0] for r in q(f"SELECT error_type FROM '{out}/failures/*.parquet'")} == {"schema_mismatch"}


def test_rerun_identifies_unchanged_inputs_from_the_identity_cache(corpus, tmp_path):
    out = tmp_path / "out"
    engine = ScriptedEngine(truth_answers(corpus["dir"]))
    n_files = len(corpus["good"]) + len(corpus["bad"])

    def discovery():
        return json.loads((out / "run.json").read_text())["discovery"]

    t = (os.stat(corpus["dir"]).st_mtime_ns - 3600 * 10**9,) * 2  # older than the 2 s racy window
    for p in corpus["dir"].iterdir():
        os.utime(p, ns=t)

    first = run_job([str(corpus["dir"])], out, small_config(), engine=engine)
    assert discovery()["files_hashed"] == n_files and discovery()["files_from_identity_cache"] == 0
    second = run_job([str(corpus["dir"])], out, small_config(), engine=engine)
    # the four bad inputs are looked at again (empty/unsupported are never cached; corrupt/encrypted PDFs
    # are identified fine and cached: they fail later, at rasterize, and are skipped as done)
    cached = discovery()["files_from_identity_cache"]
    assert cached == n_files - 2 and discovery()["files_hashed"] == 2
    assert (second.skipped, second.processed) == (first.processed, 0)
    rehashed = run_job([str(corpus["dir"])], out, small_config(**{"run.rehash": True}), engine=engine)
    assert discovery() == {"files_hashed": n_files, "files_from_identity_cache": 0}
    assert rehashed.skipped == first.processed
