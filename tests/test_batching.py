"""Batch assembly (pipeline/batching.py) seen through run_job: batch_size, max_batch_pages, the first-batch ramp, re-asks carried into later batches."""

from collections import Counter

from pipeline.runner import run_job
from tests.helpers import invoice_truth, small_config, write_pdf
from tests.scripted_engine import ScriptedEngine


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


def test_reasks_and_carried_documents_stay_within_the_batch_budgets(tmp_path):
    # Every first answer is invalid, so every document comes back as a re-ask and is carried into a
    # later batch together with whatever did not fit: those batches must keep both limits too.
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
