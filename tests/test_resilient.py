"""pipeline/engines/resilient.py: transient errors retried with backoff, out of memory halves the batch, a dead engine rebuilt once; and what a run does when its engine dies."""

import json

import pytest

from pipeline.engines.resilient import ResilientEngine
from pipeline.errors import EngineDead, EngineUnavailable
from pipeline.records import ErrorType
from pipeline.runner import EXIT_ENGINE_DIED, run_job
from tests.helpers import all_rows, invoice_truth, make_docs, small_config
from tests.scripted_engine import ScriptedEngine


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
