"""End to end through the runner with the scripted engine (a test double for the model)."""

import json
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipeline.records import Generation
from pipeline.runner import EXIT_COULD_NOT_START, EXIT_TOO_MANY_FAILURES, CouldNotStart, run_job
from tests.conftest import REPO, small_config, write_pdf
from tests.scripted_engine import ScriptedEngine, truth_answers

BAD = {
    "truncated.pdf": ("rasterize", "corrupt"),
    "encrypted.pdf": ("rasterize", "encrypted"),
    "empty.pdf": ("discover", "empty_file"),
    "notes.pdf": ("discover", "unsupported_type"),
}


def q(sql):
    return duckdb.sql(sql).fetchall()


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
    assert failures == BAD
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
    from tests.conftest import invoice_truth

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

    from tests.conftest import invoice_truth

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


def _cli(*args, cwd=REPO, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    exe = Path(sys.executable).parent / "docextract"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]
    return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_run_inspect_and_stage_split(corpus, tmp_path):
    env = {"DOCEXTRACT_TRUTH_DIR": str(corpus["dir"])}
    cfg = tmp_path / "c.toml"
    cfg.write_text("[rasterize]\ndpi = 72\nmax_pixels = 50176\nworkers = 1\n[run]\nbatch_size = 4\n")
    out = tmp_path / "out"
    r = _cli("run", str(corpus["dir"]), "--out", str(out), "-c", str(cfg), "--engine", "tests.scripted_engine:from_truth", env_extra=env)
    assert r.returncode == 0, r.stderr
    assert "5 extracted, 4 failed" in r.stderr
    r = _cli("inspect", str(out))
    assert r.returncode == 0 and "results: 5 rows; failures: 4 rows" in r.stdout and "encrypted" in r.stdout
    stage = tmp_path / "stage"
    r = _cli("rasterize", str(corpus["dir"]), "--out", str(stage), "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "pages kept: 8" in r.stdout and "image tokens" in r.stdout
    out2 = tmp_path / "out2"
    r = _cli("extract", str(stage), "--out", str(out2), "-c", str(cfg), "--engine", "tests.scripted_engine:from_truth", env_extra=env)
    assert r.returncode == 0, r.stderr
    cols = "doc_id, invoice_number, total, pages_used"
    assert sorted(q(f"SELECT {cols} FROM '{out}/results/*.parquet'")) == sorted(q(f"SELECT {cols} FROM '{out2}/results/*.parquet'"))
    assert sorted(q(f"SELECT doc_id, error_type FROM '{out}/failures/*.parquet'")) == sorted(
        q(f"SELECT doc_id, error_type FROM '{out2}/failures/*.parquet'")
    )
    # extracting with other pixel settings than the stage was made with: refused, nothing written
    other = tmp_path / "other.toml"
    other.write_text("[rasterize]\ndpi = 72\nmax_pixels = 200704\nworkers = 1\n")
    out3 = tmp_path / "out3"
    r = _cli("extract", str(stage), "--out", str(out3), "-c", str(other), "--engine", "tests.scripted_engine:from_truth", env_extra=env)
    assert r.returncode == EXIT_COULD_NOT_START, r.stderr
    assert "max_pixels: stage 50176, config 200704" in r.stderr
    assert not (out3 / "results").exists()


def test_cli_errors_are_clear(tmp_path):
    r = _cli("run", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--engine", "tests.scripted_engine:from_truth")
    assert r.returncode == EXIT_COULD_NOT_START and "input not found" in r.stderr
    write_pdf(tmp_path / "a.pdf")
    r = _cli("run", str(tmp_path / "a.pdf"), "--out", str(tmp_path / "o"), "--engine", "no.such:thing")
    assert r.returncode == EXIT_COULD_NOT_START and "cannot import 'no.such'" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine]\nmodle = 'x'\n")
    r = _cli("run", str(tmp_path / "a.pdf"), "--out", str(tmp_path / "o"), "-c", str(bad))
    assert r.returncode == EXIT_COULD_NOT_START and "unknown key 'engine.modle'" in r.stderr
    r = _cli("schema", "receipt")
    assert r.returncode == 0 and json.loads(r.stdout)["properties"]["total"]["type"] == "number"


def test_stage_pages_round_trip_losslessly(tmp_path):
    import pyarrow.parquet as pq

    from pipeline.discover import discover
    from pipeline.rasterize import RasterSettings, rasterize
    from pipeline.stage import decode_image, write_stage

    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf", pages=2)
    settings = RasterSettings(dpi=72, max_pixels=50176)
    rep = write_stage([str(d)], tmp_path / "stage", settings, workers=1, timeout_s=30)
    assert (rep.documents, rep.pages) == (1, 2)
    [part] = (tmp_path / "stage" / "pages").glob("*.parquet")
    rows = pq.read_table(part).to_pylist()
    [doc] = discover([str(d)]).documents
    original = rasterize(doc, settings).pages
    for row, page in zip(sorted(rows, key=lambda r: r["page_index"]), original):
        img = decode_image(row["image"], row["width"], row["height"], row["encoding"])
        assert img.tobytes() == page.image.tobytes()


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


def test_engine_that_will_not_load_writes_nothing(corpus, tmp_path):
    out = tmp_path / "out"
    r = _cli("run", str(corpus["dir"]), "--out", str(out), "--engine", "tests.scripted_engine:does_not_exist")
    assert r.returncode == EXIT_COULD_NOT_START and "does_not_exist" in r.stderr
    assert not (out / "failures").exists() or not any((out / "failures").glob("*.parquet"))
    assert not (out / "run.json").exists()


def test_page_queue_bounds_pages_and_documents_but_never_blocks_an_empty_queue():
    import queue as _q

    from pipeline.feed import PageQueue as _PageQueue
    from pipeline.records import RasterizedDoc

    def item(n):
        return ("doc", RasterizedDoc(document=None, pages=[None] * n, total_pages=n))  # type: ignore[arg-type]

    q = _PageQueue(max_items=3, max_pages=5)
    q.put(item(9), timeout=0)  # over the page limit, but the queue is empty: admitted
    with pytest.raises(_q.Full):
        q.put(item(1), timeout=0.05)
    assert len(q.get(timeout=0)[1].pages) == 9
    q.put(item(3), timeout=0)
    q.put(item(2), timeout=0)  # 5 pages: exactly the limit
    with pytest.raises(_q.Full):
        q.put(item(1), timeout=0.05)
    q.put("end", timeout=None, force=True)  # control items always get in
    assert [len(q.get(timeout=0)[1].pages) for _ in range(2)] == [3, 2]
    assert q.get(timeout=0) == "end"
    for _ in range(3):
        q.put(item(0), timeout=0)
    with pytest.raises(_q.Full):  # the document bound still holds for page-less items
        q.put(item(0), timeout=0.05)
    with pytest.raises(_q.Empty):
        _PageQueue(1, 1).get(timeout=0.01)


def test_batches_respect_the_page_budget(tmp_path):
    # 20 documents of 1-3 pages, batch_size 8, max_batch_pages 7: no batch over 7 pages, each batch
    # as full as the budgets allow, every document exactly once.
    d = tmp_path / "in"
    d.mkdir()
    sizes = [1, 3, 2, 1, 1, 3, 3, 2, 1, 2, 3, 1, 1, 1, 2, 3, 3, 1, 2, 1]
    for i, n in enumerate(sizes):
        write_pdf(d / f"doc{i:02d}.pdf", pages=n, text=f"doc {i}")
    engine = ScriptedEngine(callback=lambda req: "{}")
    out = tmp_path / "out"
    cfg = small_config(**{"run.batch_size": 8, "run.first_batch_size": 8, "run.max_batch_pages": 7, "run.max_attempts": 1})
    s = run_job([str(d)], out, cfg, engine=engine)
    assert s.inputs == 20 and s.succeeded + s.failed == 20
    docs_per_batch = [len(b) for b in engine.batches]
    pages_per_batch = [sum(len(r.images) for r in b) for b in engine.batches]
    assert all(p <= 7 for p in pages_per_batch), pages_per_batch
    for k in range(len(engine.batches) - 1):  # full: 8 documents, or the next one would not have fit
        next_pages = len(engine.batches[k + 1][0].images)
        assert docs_per_batch[k] == 8 or pages_per_batch[k] + next_pages > 7, (k, docs_per_batch, pages_per_batch)
    seen = [r.doc_id for b in engine.batches for r in b]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 20
    # without the page budget the same documents go in batches of 8
    engine2 = ScriptedEngine(callback=lambda req: "{}")
    cfg2 = small_config(**{"run.batch_size": 8, "run.first_batch_size": 8, "run.max_attempts": 1})
    run_job([str(d)], tmp_path / "out2", cfg2, engine=engine2)
    assert [len(b) for b in engine2.batches] == [8, 8, 4]
    # the first batches ramp up: 2, 4, then batch_size
    engine3 = ScriptedEngine(callback=lambda req: "{}")
    cfg3 = small_config(**{"run.batch_size": 8, "run.first_batch_size": 2, "run.max_attempts": 1})
    run_job([str(d)], tmp_path / "out3", cfg3, engine=engine3)
    assert [len(b) for b in engine3.batches] == [2, 4, 8, 6]


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


def test_reasks_and_carried_documents_stay_within_the_batch_budgets(tmp_path):
    # Every first answer is invalid, so every document comes back as a re-ask and is carried into a
    # later batch together with whatever did not fit: those batches must keep both limits too.
    from tests.conftest import invoice_truth

    d = tmp_path / "in"
    d.mkdir()
    for i in range(7):
        write_pdf(d / f"doc{i}.pdf", pages=2, text=f"doc {i}")
    seen: Counter = Counter()

    def answer(req):
        seen[req.doc_id] += 1
        return "{}" if seen[req.doc_id] == 1 else invoice_truth()

    engine = ScriptedEngine(callback=answer)
    cfg = small_config(**{"run.batch_size": 3, "run.max_batch_pages": 5, "run.max_attempts": 2})
    s = run_job([str(d)], tmp_path / "out", cfg, engine=engine)
    assert (s.succeeded, s.failed) == (7, 0) and all(n == 2 for n in seen.values())
    pages = [sum(len(r.images) for r in b) for b in engine.batches]
    assert all(len(b) <= 3 for b in engine.batches) and all(p <= 5 for p in pages), pages
