"""Batch tails: the real vLLM engine (CPU build, tiny random Qwen2.5-VL) when answer lengths vary.

Invoices give answers of very different lengths (a one-line receipt vs a 40-item invoice).  A batch sent
as one synchronous call ends with the engine running only its longest answers; the next batch waits.
``VLLMEngine.prefetch`` hands the next batch over while the current one runs, so vLLM fills the slots
the short answers free.  Same 64 pre-rendered one-page requests for all three, one in eight with a long
answer (``max_tokens`` 96, the rest 8; the random model runs to the limit on this schema):

* batches of 16, one after the other (each batch waits for its longest answer);
* batches of 16 with the next one prefetched (what ``run_job`` does);
* one call over all 64 (the bound: no batch boundaries at all).

    .venv/bin/python bench/tail.py [--rounds R]
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from _common import CACHE, corpus, documents, job_config, machine_line, table  # noqa: E402

from pipeline.rasterize import RasterSettings, rasterize  # noqa: E402

SCHEMA = "tests.tiny_schema:TinyDoc"
BATCH = 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from pipeline.engines.vllm import VLLMEngine
    from pipeline.prompts import build_request, json_schema_for
    from pipeline.records import Sampling
    from pipeline.tinymodel import build_tiny_qwen25vl
    from schemas import resolve

    model_dir = build_tiny_qwen25vl(CACHE / "tiny-qwen", seed=0)
    cfg = job_config(**{"schema": SCHEMA, "engine.model": str(model_dir), "engine.profile": "cpu",
                        "engine.dtype": "float32", "engine.max_model_len": 4096, "rasterize.max_pixels": 28 * 28 * 64})
    r = cfg.rasterize
    s = RasterSettings(dpi=r.dpi, min_pixels=r.min_pixels, max_pixels=r.max_pixels, max_pages=r.max_pages)
    docs = documents([d.path for d in [d for d in corpus(640) if d.pages == 1][:64]])
    model = resolve(SCHEMA)
    schema = json_schema_for(model)
    engine = VLLMEngine(cfg.engine_config())
    logging.getLogger("vllm").setLevel(logging.ERROR)
    pages = [rasterize(d, s).pages for d in docs]

    def requests() -> list[Any]:
        return [build_request(d.doc_id, p, model, schema, Sampling(temperature=0.0, max_tokens=96 if i % 8 == 0 else 8, seed=0))
                for i, (d, p) in enumerate(zip(docs, pages))]

    def batches(prefetch: bool) -> tuple[float, int]:
        rs = requests()
        chunks = [rs[i : i + BATCH] for i in range(0, len(rs), BATCH)]
        t0 = time.perf_counter()
        toks = 0
        for k, b in enumerate(chunks):
            if prefetch and k + 1 < len(chunks):
                engine.prefetch(chunks[k + 1])
            toks += sum(g.output_tokens for g in engine.generate(b))
        return time.perf_counter() - t0, toks

    def one_call() -> tuple[float, int]:
        rs = requests()
        t0 = time.perf_counter()
        toks = sum(g.output_tokens for g in engine.generate(rs))
        return time.perf_counter() - t0, toks

    methods = {
        f"batches of {BATCH}, one after the other": lambda: batches(False),
        f"batches of {BATCH}, next one prefetched (run_job)": lambda: batches(True),
        "one call over all 64 (bound)": one_call,
    }
    for fn in methods.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    tokens: dict[str, int] = {}
    names = list(methods)
    for i in range(args.rounds):
        for name in names[i % 3:] + names[: i % 3]:
            engine.llm.reset_prefix_cache()
            engine.llm.reset_mm_cache()
            dt, tokens[name] = methods[name]()
            times[name].append(dt)
    print(machine_line())
    print(f"vLLM {engine.vllm_version} (CPU), tiny Qwen2.5-VL; 64 one-page requests, 1 in 8 with max_tokens 96, "
          f"the rest 8; median of {args.rounds}, order rotated")
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med[names[0]]
    rows = [[k, round(med[k], 3), tokens[k], f"{base / med[k]:.2f}x"] for k in names]
    print(table(rows, ["method", "seconds", "output tokens", "vs one after the other"]))
    print(f"\nprefetch recovers {(base - med[names[1]]) / (base - med[names[2]]):.0%} of what batch boundaries cost")
    engine.close()


if __name__ == "__main__":
    main()
