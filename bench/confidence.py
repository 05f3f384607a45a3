"""Model confidence (``pipeline.confidence``): what the logprobs cost, and whether the scores rank right above wrong.

``cost``: tokens/s through the real vLLM CPU engine on the tiny checkpoint with ``engine.logprobs`` off
(baseline) and on, the same requests, one shared ``VLLMEngine``, rounds interleaved (off, on, on, off,
...), wall and CPU seconds of this process (the engine core runs in it on the cpu profile).  Two
workloads: ``tests.tiny_schema:TinyDoc`` (short answers that finish) and ``invoice`` (a random model
writes until ``max_tokens``: long answers).

``run``: a job whose engine is wrapped to keep each document's per-field scores (the final attempt's,
``min`` / ``mean`` / ``prod``) in ``OUT/field_scores.jsonl``.  ``auroc``: with ground truth (``docextract
eval``'s truth folders), each scored field of each result is right or wrong (normalised as eval does;
line items paired as eval pairs them) and the AUROC of the score for right against wrong is printed, with
mean scores of each class.  0.5 is no better than chance.  On the tiny random model this can only show
that the path works: its answers are noise, so right values are rare and their scores mean nothing.

    .venv/bin/python bench/confidence.py cost [--quick] [--model Qwen/Qwen2.5-VL-3B-Instruct]
    .venv/bin/python bench/confidence.py run DOCS --out OUT -c job.toml [--set k=v ...]   # GPU: the real model
    .venv/bin/python bench/confidence.py auroc --truth DOCS --results OUT
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import CACHE, machine_line, table  # noqa: E402

from pipeline.confidence import generation_scores  # noqa: E402
from pipeline.engines.base import EngineBase, as_engine_base  # noqa: E402

SCORES_FILE = "field_scores.jsonl"
HOWS = ("min", "mean", "prod")


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ------------------------------------------------------------------------------------------ cost


def cost(quick: bool, model: str | None) -> None:
    from PIL import Image

    from pipeline.config import load_config
    from pipeline.engines.vllm import VLLMEngine
    from pipeline.prompts import build_request, json_schema_for
    from pipeline.records import Page, Sampling
    from pipeline.tinymodel import build_tiny_qwen25vl
    from schemas import resolve

    if model:  # e.g. the real model on a GPU: vLLM's defaults for it
        cfg = load_config(None, {"engine.model": model, "rasterize.max_pixels": 28 * 28 * 16})
    else:
        model_dir = build_tiny_qwen25vl(CACHE / "tiny-qwen", seed=0)
        cfg = load_config(None, {"engine.model": str(model_dir), "engine.profile": "cpu", "engine.dtype": "float32",
                                 "engine.max_model_len": 4096, "rasterize.max_pixels": 28 * 28 * 16})  # fmt: skip
    engine = VLLMEngine(cfg.engine_config())
    n, rounds = (16, 2) if quick else (48, 4)

    def requests(schema: str, max_tokens: int, tag: str) -> list[Any]:
        model = resolve(schema)
        js = json_schema_for(model)
        out = []
        for i in range(n):
            img = Image.new("RGB", (112, 140), (i * 37 % 256, 200, (i * 91) % 256))
            page = Page(f"{tag}{i}", 0, img, 112, 140)
            out.append(build_request(f"{tag}{i}", [page], model, js, Sampling(max_tokens=max_tokens)))
        return out

    print(machine_line())
    print(f"vLLM {engine.vllm_version}, {model or 'tiny Qwen2.5-VL (CPU)'}; {n} single-image requests per call; {rounds} rounds "
          "per setting, interleaved; medians")
    rows = []
    for schema, max_tokens in (("tests.tiny_schema:TinyDoc", 64), ("invoice", 256)):
        engine.generate(requests(schema, max_tokens, "warm"))  # grammar compiled, allocations made
        res: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
        for r in range(rounds):
            for lp in ((False, True) if r % 2 == 0 else (True, False)):
                engine.config = engine.config.model_copy(update={"logprobs": lp})
                engine.llm.reset_prefix_cache()
                engine.llm.reset_mm_cache()
                reqs = requests(schema, max_tokens, f"r{r}{lp}")
                c0, t0 = _cpu(), time.perf_counter()
                gens = engine.generate(reqs)
                wall, cpu = time.perf_counter() - t0, _cpu() - c0
                toks = sum(g.output_tokens for g in gens)
                assert all((g.token_logprobs is not None) == lp for g in gens if g.error is None)
                res[lp].append((wall, cpu, toks))
        med = {lp: (statistics.median(w for w, _, _ in v), statistics.median(c for _, c, _ in v),
                    statistics.median(t for _, _, t in v)) for lp, v in res.items()}  # fmt: skip
        for lp in (False, True):
            wall, cpu, toks = med[lp]
            rows.append([schema.rsplit(":", 1)[-1], "on" if lp else "off (baseline)", int(toks), round(wall, 2),
                         round(cpu, 2), round(toks / wall, 1), round(toks / cpu, 1)])  # fmt: skip
        off, on = med[False], med[True]
        rows.append(["", "on / off", "", f"{on[0] / off[0]:.2f}x", f"{on[1] / off[1]:.2f}x",
                     f"{(on[2] / on[0]) / (off[2] / off[0]):.2f}x", f"{(on[2] / on[1]) / (off[2] / off[1]):.2f}x"])  # fmt: skip
    print(table(rows, ["schema", "engine.logprobs", "output tokens", "wall s", "CPU s", "tokens/s", "tokens/CPU s"]))
    engine.close()


# ------------------------------------------------------------------------------------------ run


class Recording(EngineBase):
    """Any engine; keeps the per-field scores of each document's latest generation (re-asks overwrite)."""

    def __init__(self, inner: EngineBase):
        self.inner, self.name, self.settings = inner, inner.name, inner.settings
        self.scores: dict[str, dict[str, dict[str, float]]] = {}

    def generate(self, requests: Sequence[Any]) -> list[Any]:
        gens = self.inner.generate(requests)
        for g in gens:
            self.scores[g.doc_id] = {how: generation_scores(g, how) for how in HOWS}  # type: ignore[arg-type]
        return gens

    def prefetch(self, requests: Sequence[Any]) -> None:
        self.inner.prefetch(requests)

    def abort_pending(self) -> None:
        self.inner.abort_pending()

    def close(self) -> None:
        self.inner.close()


def run(inputs: list[str], out: Path, config: str | None, sets: list[str]) -> None:
    from pipeline.config import load_config
    from pipeline.engines.base import load_engine
    from pipeline.runner import run_job

    cfg = load_config(config, sets=sets, environ=os.environ)
    engine = Recording(as_engine_base(load_engine(cfg.engine_config())))
    summary = run_job(inputs, out, cfg, engine=engine)
    with open(out / SCORES_FILE, "w", encoding="utf-8") as f:
        for doc_id, s in engine.scores.items():
            f.write(json.dumps({"doc_id": doc_id, **s}) + "\n")
    print(f"{summary.succeeded} results, {summary.failed} failures; scores of {len(engine.scores)} documents in "
          f"{out / SCORES_FILE}")  # fmt: skip


# ------------------------------------------------------------------------------------------ auroc


def auroc(right: list[float], wrong: list[float]) -> float | None:
    """P(a right field scores above a wrong one), ties counted half (Mann-Whitney); None without both."""
    if not right or not wrong:
        return None
    pairs = sorted([(s, 1) for s in right] + [(s, 0) for s in wrong])
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg = (i + 1 + j) / 2  # ranks i+1..j share their mean
        rank_sum += avg * sum(c for _, c in pairs[i:j])
        i = j
    n1, n0 = len(right), len(wrong)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)


def _get(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def labelled(truth: Path, results: Path, how: str) -> list[tuple[str, float, bool, bool]]:
    """(field, score, right, present) for every scored leaf of every result with truth and scores;
    ``present``: the model wrote a value (not null)."""
    from pipeline.evaluate.matching import match_items
    from pipeline.evaluate.normalize import normalize
    from pipeline.evaluate.scoring import prepare

    scores = {}
    for line in (results / SCORES_FILE).read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        scores[rec["doc_id"]] = rec[how]
    warnings: list[str] = []
    s = prepare(truth, results, None, warnings)
    out: list[tuple[str, float, bool, bool]] = []
    for doc, outcome, _, _ in s.pairs(warnings):
        if outcome is None or outcome.kind == "failure" or outcome.row["doc_id"] not in scores:
            continue
        got, row = scores[outcome.row["doc_id"]], outcome.row
        for leaf in s.plan.scalars:
            if leaf.name in got:
                p = normalize(leaf.kind, _get(row, leaf.path))
                out.append((leaf.name, got[leaf.name], p == normalize(leaf.kind, _get(doc.data, leaf.path)), p is not None))
        for lf in s.plan.lists:
            t_items = [tuple(normalize(x.kind, _get(it, x.path)) for x in lf.leaves) for it in _get(doc.data, lf.path) or []]
            p_items = [tuple(normalize(x.kind, _get(it, x.path)) for x in lf.leaves) for it in _get(row, lf.path) or []]
            paired = {j: i for i, j in match_items(t_items, p_items, lf.key)}
            for j, item in enumerate(p_items):
                for k, x in enumerate(lf.leaves):
                    key = f"{lf.name}[{j}].{x.name}"
                    if key in got:
                        right = j in paired and t_items[paired[j]][k] == item[k]
                        out.append((f"{lf.name}.{x.name}", got[key], right, item[k] is not None))
    return out


def report(truth: Path, results: Path) -> None:
    rows = []
    for how in HOWS:
        data = labelled(truth, results, how)
        for subset, keep in (("all fields", lambda r: True), ("model wrote a value", lambda r: r[3])):
            d = [r for r in data if keep(r)]
            right = [r[1] for r in d if r[2]]
            wrong = [r[1] for r in d if not r[2]]
            a = auroc(right, wrong)
            rows.append([how, subset, len(right), len(wrong), "n/a" if a is None else f"{a:.3f}",
                         f"{statistics.fmean(right):.3f}" if right else "-", f"{statistics.fmean(wrong):.3f}" if wrong else "-"])  # fmt: skip
    print(table(rows, ["score", "fields", "right", "wrong", "AUROC", "mean score right", "mean score wrong"]))
    by: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for name, score, right, _ in labelled(truth, results, "min"):
        by[name].append((score, right))
    per = [[n, sum(r for _, r in v), sum(not r for _, r in v), f"{a:.3f}" if (a := auroc([s for s, r in v if r], [s for s, r in v if not r])) is not None else "n/a"]
           for n, v in sorted(by.items())]  # fmt: skip
    print("\nper field (min):")
    print(table(per, ["field", "right", "wrong", "AUROC"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--quick", action="store_true")
    c.add_argument("--model", help="a checkpoint (directory or hub name) instead of the tiny random one")
    r = sub.add_parser("run")
    r.add_argument("inputs", nargs="+")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("-c", "--config")
    r.add_argument("--set", action="append", default=[], dest="sets")
    a = sub.add_parser("auroc")
    a.add_argument("--truth", type=Path, required=True)
    a.add_argument("--results", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd == "cost":
        cost(args.quick, args.model)
    elif args.cmd == "run":
        run(args.inputs, args.out, args.config, args.sets)
    else:
        report(args.truth, args.results)


if __name__ == "__main__":
    main()
