"""Command line: thin over the Python API (``pipeline.runner.run_job`` and friends).

Exit codes: 0 ok; 2 could not start (bad config, no inputs, engine would not load);
3 failure rate above ``--max-failure-rate``; 4 interrupted (SIGINT/SIGTERM, partial
work committed; run again to resume).
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pipeline.config import ConfigError, JobConfig, load_config
from pipeline.errors import CouldNotStart
from pipeline.summary import EXIT_COULD_NOT_START, Progress, RunSummary

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Invoices and receipts -> typed Parquet, via vLLM.")
err = typer.echo


def _fail(msg: str, code: int = EXIT_COULD_NOT_START) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML job config (see configs/).")]
SchemaOpt = Annotated[Optional[str], typer.Option("--schema", "-s", help="invoice | receipt | module:Class")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Hub model name or local checkpoint directory.")]
EngineOpt = Annotated[Optional[str], typer.Option("--engine", "-e", help="vllm | module:factory")]
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", help="gpu | cpu (vLLM's CPU build).")]


def _config(config: Path | None, **overrides: Any) -> JobConfig:
    try:
        return load_config(config, overrides)
    except ConfigError as e:
        _fail(str(e))
        raise  # unreachable


def _job_overrides(
    schema: str | None,
    model: str | None,
    engine: str | None,
    profile: str | None,
    batch_size: int | None,
    max_failure_rate: float | None,
) -> dict[str, Any]:
    """CLI flags shared by run and extract, as dotted config keys (None = not given)."""
    return {
        "schema": schema,
        "engine.model": model,
        "engine.name": engine,
        "engine.profile": profile,
        "run.batch_size": batch_size,
        "run.max_failure_rate": max_failure_rate,
    }


def _progress_printer(enabled: bool):  # type: ignore[no-untyped-def]
    if not enabled or not sys.stderr.isatty():
        last = {"t": 0.0}

        def plain(p: Progress) -> None:
            import time

            now = time.monotonic()
            if now - last["t"] >= 5 or p.done == p.total:
                last["t"] = now
                err(f"[{p.stage}] {p.done}/{p.total} documents, {p.failed} failed, {p.pages} pages", err=True)

        return plain, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

    bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False)
    task = bar.add_task("documents", total=None)

    def update(p: Progress) -> None:
        bar.update(task, total=p.total, completed=p.done, description=f"{p.stage} ({p.failed} failed)")

    return update, bar


def _print_summary(s: RunSummary) -> None:
    t = s.timings
    err(
        f"{s.inputs} documents: {s.succeeded} extracted, {s.failed} failed, {s.skipped} skipped (already done); "
        f"{s.pages} pages in {t.get('wall', 0):.1f}s",
        err=True,
    )
    if s.failures_by_type:
        err("failures: " + ", ".join(f"{k}={v}" for k, v in sorted(s.failures_by_type.items())), err=True)
    wall = t.get("wall", 0) or 1
    if s.pages:
        engine_s = t.get("engine", 0) or 1e-9
        err(
            f"throughput: {s.pages / wall:.2f} pages/s, {s.processed / wall:.2f} docs/s, "
            f"tokens/s in {s.prompt_tokens / engine_s:.0f} out {s.output_tokens / engine_s:.0f}, "
            f"engine busy {t.get('engine', 0) / wall:.0%}",
            err=True,
        )
        stages = ("discover", "engine_load", "rasterize_cpu", "assemble", "engine", "validate", "write")
        err("time per stage (s): " + ", ".join(f"{k} {t[k]:.2f}" for k in stages if k in t), err=True)
    for w in s.warnings[:10]:
        err(f"warning: {w}", err=True)
    err(f"output: {s.out_dir}/results, {s.out_dir}/failures, manifest {s.out_dir}/run.json", err=True)
    if s.interrupted:
        err("interrupted: committed work is kept; run the same command again to resume", err=True)


def _execute(
    inputs: list[str], out: str, cfg: JobConfig, force: bool, retry_failed: bool, stage_dir: str | None = None
) -> None:
    from pipeline.runner import run_job

    update, bar = _progress_printer(cfg.run.progress)
    try:
        if bar is not None:
            bar.start()
        summary = run_job(
            inputs, out, cfg, force=force, retry_failed=retry_failed, on_progress=update, stage_dir=stage_dir
        )
    except CouldNotStart as e:
        if bar is not None:
            bar.stop()
        _fail(str(e))
        return
    finally:
        if bar is not None:
            bar.stop()
    _print_summary(summary)
    raise typer.Exit(summary.exit_code)


@app.command()
def run(
    inputs: Annotated[list[str], typer.Argument(help="Folders, globs, files or manifests (.txt/.csv/.parquet).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output directory or s3://bucket/prefix.")],
    config: ConfigOpt = None,
    schema: SchemaOpt = None,
    model: ModelOpt = None,
    engine: EngineOpt = None,
    profile: ProfileOpt = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Documents per engine call.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Rasterizing processes (0 = all cores).")] = None,
    max_pages: Annotated[Optional[int], typer.Option(help="Pages kept per document.")] = None,
    max_failure_rate: Annotated[Optional[float], typer.Option(help="Exit 3 above this failed fraction.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="local | ray")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Attach to this Ray cluster (with --backend ray).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Reprocess documents already done.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Re-run retryable failures.")] = False,
    rehash: Annotated[
        bool, typer.Option("--rehash", help="Read and hash every input, even those the identity cache knows.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Discover, rasterize, extract and validate in one streamed pass."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    overrides = _job_overrides(schema, model, engine, profile, batch_size, max_failure_rate)
    cfg = _config(
        config,
        **overrides,
        **{"rasterize.workers": workers, "rasterize.max_pages": max_pages, "backend": backend, "ray.address": ray_address,
           "run.rehash": rehash or None},
    )
    _execute(inputs, out, cfg, force, retry_failed)


@app.command()
def rasterize(
    inputs: Annotated[list[str], typer.Argument(help="Folders, globs, files or manifests.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Stage directory to write (a local folder; replaced).")],
    config: ConfigOpt = None,
    workers: Annotated[Optional[int], typer.Option(help="Rasterizing processes (0 = all cores).")] = None,
    max_pages: Annotated[Optional[int], typer.Option(help="Pages kept per document.")] = None,
) -> None:
    """Rasterize only (cheap CPU nodes): write a stage directory and print a pre-flight report."""
    from pipeline.errors import InputError, StageError
    from pipeline.rasterize import RasterSettings
    from pipeline.stage import write_stage

    cfg = _config(config, **{"rasterize.workers": workers, "rasterize.max_pages": max_pages})
    r = cfg.rasterize
    try:
        rep = write_stage(inputs, out, RasterSettings.from_config(r), cfg.effective_workers(), r.timeout_s)
    except (StageError, InputError, OSError) as e:
        _fail(str(e))
        return
    err(f"pre-flight report for {out}")
    err(f"  documents: {rep.documents} ({', '.join(f'{k}={v}' for k, v in sorted(rep.by_kind.items()))})")
    err(f"  pages kept: {rep.pages}; pages dropped by max_pages: {rep.pages_dropped}")
    failed = sum(rep.failed.values())
    err(f"  unreadable/failed: {failed}" + (f" ({', '.join(f'{k}={v}' for k, v in sorted(rep.failed.items()))})" if failed else ""))
    err(f"  image tokens: {rep.image_tokens:,} (~{rep.image_tokens / max(rep.pages, 1):.0f}/page, 28x28 px each)")
    err(f"  estimated prompt tokens: {rep.estimated_prompt_tokens():,}")
    err(f"  time: {rep.seconds:.1f}s ({rep.pages / max(rep.seconds, 1e-9):.1f} pages/s)")


@app.command()
def extract(
    stage: Annotated[str, typer.Argument(help="Stage directory written by 'docextract rasterize' (local).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output directory or s3://bucket/prefix.")],
    config: ConfigOpt = None,
    schema: SchemaOpt = None,
    model: ModelOpt = None,
    engine: EngineOpt = None,
    profile: ProfileOpt = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    max_failure_rate: Annotated[Optional[float], typer.Option()] = None,
    force: Annotated[bool, typer.Option("--force")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed")] = False,
) -> None:
    """Inference and validation from a stage directory (GPU nodes)."""
    cfg = _config(config, **_job_overrides(schema, model, engine, profile, batch_size, max_failure_rate))
    _execute([stage], out, cfg, force, retry_failed, stage_dir=stage)


@app.command("schema")
def schema_cmd(name: Annotated[str, typer.Argument(help="invoice | receipt | module:Class")] = "invoice") -> None:
    """Print the JSON Schema sent to the engine for constrained decoding."""
    from pipeline.prompts import schema_json_text
    from schemas import SchemaNotFound, resolve

    try:
        typer.echo(schema_json_text(resolve(name)))
    except SchemaNotFound as e:
        _fail(str(e))


@app.command()
def inspect(
    out: Annotated[str, typer.Argument(help="Output directory (or s3:// prefix) of a run.")],
    rows: Annotated[int, typer.Option(help="Sample rows to show.")] = 3,
) -> None:
    """Counts, failure reasons and a few rows of a run's output."""
    from pipeline.status import read_manifest
    from pipeline.store import SkippedPart, read_table

    skipped: list[SkippedPart] = []
    res = read_table(out, "results", skipped)
    fail = read_table(out, "failures", skipped)
    if res is None and fail is None and not skipped:
        _fail(f"{out} has no results/ or failures/ parts")
    n_res = res.num_rows if res is not None else 0
    n_fail = fail.num_rows if fail is not None else 0
    typer.echo(f"results: {n_res} rows; failures: {n_fail} rows")
    if fail is not None and n_fail:
        c = Counter(zip(fail.column("stage").to_pylist(), fail.column("error_type").to_pylist(), strict=True))
        for (stage, et), n in c.most_common():
            typer.echo(f"  {stage:10s} {et:18s} {n}")
        for r in fail.slice(0, rows).to_pylist():
            typer.echo(f"  - {r['source_path']}: [{r['error_type']}] {(r.get('message') or '')[:160]}")
    if res is not None and n_res:
        skip = {"raw_json", "warnings", "run_key", "run_id", "extracted_at", "schema_name", "model"}
        for r in res.slice(0, rows).to_pylist():
            shown = {k: v for k, v in r.items() if k not in skip}
            typer.echo("  " + json.dumps(shown, default=str, ensure_ascii=False)[:400])
    try:
        m = read_manifest(out)
    except CouldNotStart as e:
        err(f"warning: {e}", err=True)
        m = None
    if m is not None:
        typer.echo(f"last run {m.get('run_id')}: status {m.get('status')}, throughput {m.get('throughput')}")
    for s in skipped:
        err(f"warning: {s.location} skipped: {s.reason}", err=True)


@app.command("status")
def status_cmd(
    out: Annotated[str, typer.Argument(help="Output directory (or s3:// prefix) of a run.")],
    inputs: Annotated[Optional[list[str]], typer.Argument(help="Inputs (default: those of the last run).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Done, failed (by type) and pending documents under the current run key."""
    from pipeline.status import status

    cfg = _config(config) if config else None
    try:
        st = status(out, inputs or None, cfg)
    except CouldNotStart as e:
        _fail(str(e))
        return
    failed = sum(st.failed_by_type.values())
    typer.echo(f"run key {st.run_key}")
    typer.echo(f"done:    {st.done}")
    by_type = ", ".join(f"{k}={v}" for k, v in sorted(st.failed_by_type.items()))
    typer.echo(f"failed:  {failed}" + (f" ({by_type})" if failed else ""))
    typer.echo(f"pending: {st.pending if st.pending is not None else 'unknown (inputs not found)'}")
    if st.other_keys:
        typer.echo(f"rows under other run keys (older schema/model/settings): {st.other_keys}")
    if st.last_run:
        lr = st.last_run
        typer.echo(f"last run {lr.get('run_id')}: {lr.get('status')}, exit code {lr.get('exit_code')}, "
                   f"updated {lr.get('updated_at')}")
    for s in st.damaged:
        err(f"warning: {s.location} skipped: {s.reason}", err=True)


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the documents and their ground truth.")],
    count: Annotated[int, typer.Option(help="Number of documents.")] = 100,
    seed: Annotated[int, typer.Option(help="Same seed, same documents.")] = 0,
    kinds: Annotated[str, typer.Option(help="invoice,receipt (comma-separated).")] = "invoice,receipt",
    workers: Annotated[int, typer.Option(help="Processes.")] = 1,
    samples: Annotated[bool, typer.Option("--samples", help="Write the fixed sample set (data/samples).")] = False,
) -> None:
    """Generate invoices and receipts with exact ground truth (<name>.truth.json next to each)."""
    import time

    from pipeline.synth import generate, write_samples

    t0 = time.perf_counter()
    if samples:
        docs = write_samples(out)
    else:
        kind_list = tuple(k.strip() for k in kinds.split(",") if k.strip())
        try:
            docs = generate(out, count, seed=seed, kinds=kind_list, workers=workers)
        except ValueError as e:
            _fail(str(e))
            return
    dt = time.perf_counter() - t0
    pages = sum(d.pages for d in docs)
    by = Counter(d.variant for d in docs)
    typer.echo(f"{len(docs)} documents, {pages} pages in {dt:.1f}s ({pages / max(dt, 1e-9):.1f} pages/s) -> {out}")
    typer.echo("  " + ", ".join(f"{k}={v}" for k, v in sorted(by.items())))


@app.command("eval")
def eval_cmd(
    truth: Annotated[Path, typer.Option("--truth", "-t", help="Documents with <name>.truth.json, truth.jsonl, or SROIE-style JSON.")],
    results: Annotated[Path, typer.Option("--results", "-r", help="Output directory of a run.")],
    schema: SchemaOpt = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the report (.json or .parquet).")] = None,
) -> None:
    """Field-level precision/recall/F1 against ground truth; failures count as misses."""
    from pipeline.evaluate import EvalError, evaluate, format_table, write_report

    try:
        rep = evaluate(truth, results, schema)
    except EvalError as e:
        _fail(str(e))
        return
    typer.echo(format_table(rep))
    if report is not None:
        write_report(rep, report)
        typer.echo(f"report written to {report}")


@app.command("make-tiny-model")
def make_tiny_model(
    out: Annotated[Path, typer.Argument(help="Directory for the checkpoint.")],
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Build a tiny random Qwen2.5-VL checkpoint (no download) for smoke tests on a CPU."""
    from pipeline.tinymodel import build_tiny_qwen25vl

    path = build_tiny_qwen25vl(out, seed=seed, overwrite=True)
    typer.echo(str(path))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
