"""The Ray backend (``backend = "ray"``, ``pipeline.backends.ray_backend``) on a local 2-CPU Ray
instance, through the same ``run_job`` as the local backend: Ray Data rasterizing, a pool of engine
actors, and the local runner's writing and resume."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipeline.backends.ray_backend import ray_backend
from pipeline.errors import CouldNotStart
from pipeline.runner import run_job
from tests.helpers import (
    SCRIPTED,
    run_cli,
    scripted_config,
    small_config,
    tiny_config,
    write_image,
    write_invoices,
    write_pdf,
    write_tiff,
)
from tests.raster_faults import faulty

pytestmark = pytest.mark.slow

def on_ray(cfg: Any, actors: int = 1, **over: Any) -> Any:
    """``cfg`` with ``backend = "ray"``: ``actors`` engine actors that reserve no CPU (2 CPUs here)."""
    data = cfg.model_dump()
    data["backend"] = "ray"
    data["ray"].update(engine_actors=actors, cpus_per_actor=0)
    for key, value in over.items():
        section, _, name = key.partition(".")
        data[section][name] = value
    return type(cfg).model_validate(data)


def rows(out: Path | str, value: str = "total") -> list[tuple[Any, ...]]:
    """(doc_id, source file name, error_type or None, ``value`` column or None) of every row, sorted."""
    res = duckdb.sql(f"SELECT doc_id, source_path, NULL, {value} FROM '{out}/results/*.parquet'").fetchall()
    fail = duckdb.sql(f"SELECT doc_id, source_path, error_type, NULL FROM '{out}/failures/*.parquet'").fetchall()
    return sorted((d, Path(p).name, e, t) for d, p, e, t in res + fail)


def small_corpus(d: Path, n: int) -> Path:
    """``n`` invoices of 1 or 2 pages with their truth files."""
    return write_invoices(d, n, pages_cycle=2)


def test_ray_backend_writes_the_same_rows_as_a_local_run(ray_cluster, corpus, tmp_path):
    cfg = scripted_config(corpus["dir"])
    local = run_job([str(corpus["dir"])], tmp_path / "local", cfg)
    # two engine actors: each batch is split in two chunks and reassembled in order
    remote = run_job([str(corpus["dir"])], tmp_path / "ray", on_ray(cfg, actors=2))
    assert (remote.inputs, remote.succeeded, remote.failed) == (local.inputs, local.succeeded, local.failed) == (9, 5, 4)
    assert remote.failures_by_type == local.failures_by_type
    assert remote.run_key == local.run_key
    got, want = rows(tmp_path / "ray"), rows(tmp_path / "local")
    assert got == want  # same documents, same outcome, same values (order of answers kept)
    assert len({r[0] for r in got}) == len(got) == 9  # exactly once
    manifest = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert manifest["status"] == "ok" and manifest["engine"] == f"ray[2x]:{SCRIPTED}"
    assert remote.pages == local.pages == 8 and remote.timings["engine_load"] > 0


def test_prefetch_hands_each_actor_its_next_chunk_once(ray_cluster, tmp_path):
    from pipeline.backends.ray_backend import RayEngine
    from pipeline.records import Request, Sampling

    cfg = small_config(**{"engine.name": "tests.scripted_engine:prefetching"})
    eng = RayEngine(cfg.engine_config(), num_actors=2, cpus_per_actor=0)
    try:
        eng.start()
        a = [Request(f"a{i}", [], {}, Sampling()) for i in range(4)]
        b = [Request(f"b{i}", [], {}, Sampling()) for i in range(4)]
        eng.prefetch(b)  # while a runs, each actor gets its half of b
        deadline = time.monotonic() + 60  # (in a run nobody waits: a late prefetch is ignored by the engine)
        while time.monotonic() < deadline:
            if [c["prefetched"] for c in ray_cluster.get([x.counters.remote() for x in eng.actors])] == [2, 2]:
                break
            time.sleep(0.05)
        got = eng.generate(a) + eng.generate(b)
        assert [g.doc_id for g in got] == [r.doc_id for r in a + b]
        assert eng.reused_chunks == 2  # b's two chunks went to generate as the refs prefetch had put
        counters = ray_cluster.get([actor.counters.remote() for actor in eng.actors])
        assert [c["prefetched"] for c in counters] == [2, 2]
        assert [c["generated_after_prefetch"] for c in counters] == [2, 2]
        assert sum(c["generated"] for c in counters) == 8
    finally:
        eng.close()


def test_ray_run_with_a_prefetching_engine_and_small_batches_is_exactly_once(ray_cluster, corpus, tmp_path):
    cfg = scripted_config(corpus["dir"], **{"run.batch_size": 2})
    local = run_job([str(corpus["dir"])], tmp_path / "local", cfg)
    remote = run_job([str(corpus["dir"])], tmp_path / "ray",
                     on_ray(cfg, actors=2, **{"engine.name": "tests.scripted_engine:prefetching"}))
    assert (remote.succeeded, remote.failed) == (local.succeeded, local.failed)
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")


def test_resume_skips_everything_finished(ray_cluster, tmp_path):
    d = small_corpus(tmp_path / "in", 3)
    out = tmp_path / "out"
    cfg = scripted_config(d)
    first = run_job([str(d)], out, on_ray(cfg))
    assert (first.processed, first.succeeded) == (3, 3)
    before = rows(out)
    again = run_job([str(d)], out, on_ray(cfg))
    assert (again.inputs, again.skipped, again.processed) == (3, 3, 0)
    assert "engine_load" not in again.timings  # no engine actor was started for nothing
    local = run_job([str(d)], out, cfg)  # same run key: the local backend resumes the Ray output too
    assert (local.skipped, local.processed) == (3, 0)
    assert rows(out) == before


def test_a_hanging_or_crashing_file_costs_only_its_row(ray_cluster, tmp_path):
    d = small_corpus(tmp_path / "in", 1)
    write_pdf(d / "hang.pdf", text="hangs the library")
    write_pdf(d / "segv.pdf", text="crashes the library")
    write_tiff(d / "scan.tiff", frames=2)
    write_image(d / "photo.png")
    cfg = scripted_config(d, **{"rasterize.timeout_s": 3})
    cfg = on_ray(cfg)
    s = run_job([str(d)], tmp_path / "out", cfg, backend=ray_backend(cfg, tmp_path / "out", raster_func=faulty))
    failed = {name: et for _, name, et, _ in rows(tmp_path / "out") if et}
    assert failed["hang.pdf"] == "timeout" and failed["segv.pdf"] == "worker_crashed"
    assert "inv0.pdf" not in failed and s.processed == 5


def test_engine_that_cannot_load_is_could_not_start(ray_cluster, tmp_path):
    d = small_corpus(tmp_path / "in", 1)
    with pytest.raises(CouldNotStart, match="no_such_module"):
        run_job([str(d)], tmp_path / "out", on_ray(scripted_config(d), **{"engine.name": "tests.no_such_module:f"}))
    assert not list((tmp_path / "out" / "results").glob("part-*.parquet"))


@pytest.mark.vllm
def test_real_vllm_engine_in_a_ray_actor(ray_cluster, tiny_model, tmp_path):
    from tests.tiny_schema import TinyDoc

    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "one.pdf", pages=1, text="Invoice 1")
    write_pdf(d / "two.pdf", pages=2, text="Invoice 2")
    write_image(d / "receipt.png", "PNG", size=(300, 600))
    (d / "broken.pdf").write_text("not a pdf")
    out = tmp_path / "out"
    cfg = tiny_config(tiny_model, schema="tests.tiny_schema:TinyDoc")
    s = run_job([str(d)], out, on_ray(cfg))  # engine.name = "vllm": loaded inside the actor
    assert (s.inputs, s.processed) == (4, 4)
    all_rows = rows(out, value="code")
    assert len(all_rows) == 4 == len({r[0] for r in all_rows})  # every document exactly once
    results = duckdb.sql(f"SELECT raw_json, code, kind, paid, output_tokens FROM '{out}/results/*.parquet'").fetchall()
    failures = duckdb.sql(f"SELECT source_path, error_type FROM '{out}/failures/*.parquet'").fetchall()
    assert [Path(p).name for p, _ in failures] == ["broken.pdf"], failures
    assert len(results) == 3
    for raw, code, kind, paid, otoks in results:
        assert TinyDoc.model_validate_json(raw).code == code
        assert kind in ("invoice", "receipt") and isinstance(paid, bool) and otoks > 5
    assert json.loads((out / "run.json").read_text())["engine"] == "ray[1x]:vllm"


def test_cli_backend_ray(tmp_path):
    """`docextract run --backend ray` from the shell (its own local Ray instance), same rows as local."""
    d = small_corpus(tmp_path / "in", 4)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[rasterize]\ndpi = 72\nmax_pixels = 50176\nworkers = 1\n[ray]\nengine_actors = 1\ncpus_per_actor = 0\n"
                   f"[engine.options]\ntruth_dir = {json.dumps(str(d))}\n")
    common = ["-c", cfg, "--engine", SCRIPTED]
    r = run_cli("run", d, "--out", tmp_path / "ray", "--backend", "ray", *common)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("run", d, "--out", tmp_path / "local", *common)
    assert r.returncode == 0, r.stderr[-3000:]
    assert rows(tmp_path / "ray") == rows(tmp_path / "local") and len(rows(tmp_path / "local")) == 4
