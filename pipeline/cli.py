"""Command line: thin over the Python API (``pipeline.runner.run_job`` and friends).

stdout carries each command's output (tables, reports, ``--json`` documents); stderr carries logs,
progress, the run summary and errors (see ``pipeline/logs.py``).  Every command takes ``-q``/``-v``/``--log-format``.

Exit codes: 0 ok; 1 an unexpected error (one line; ``-v`` shows the traceback); 2 could not start
(bad config, no inputs, engine would not load, a schema that cannot be imported); 3 failure rate above
``--max-failure-rate``; 4 interrupted (SIGINT/SIGTERM, partial work committed; run again to resume).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline import cli_tools
from pipeline.cli_base import (
    AllowSchemaChangeOpt,
    ConfigOpt,
    EngineOpt,
    JsonOpt,
    MetricsOpt,
    ModelOpt,
    ProfileOpt,
    SchemaOpt,
    SetOpt,
    command,
    job_config,
    print_json,
    run_config,
    state,
)
from pipeline.cli_base import fail as _fail
from pipeline.config import ConfigError, JobConfig, config_toml, resolve_config
from pipeline.errors import CouldNotStart
from pipeline.summary import Progress, RunSummary

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Invoices and receipts -> typed Parquet, via vLLM.")
config_app = typer.Typer(no_args_is_help=True, help="The effective job configuration.")
app.add_typer(config_app, name="config")
err = typer.echo
log = logging.getLogger("docextract")
progress_log = logging.getLogger("docextract.progress")
_config = job_config


def _version(value: bool) -> None:
    if value:
        from pipeline import __version__

        typer.echo(f"docextract {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Invoices and receipts -> typed Parquet, via vLLM."""


def _job_overrides(
    schema: str | None,
    model: str | None,
    engine: str | None,
    profile: str | None,
    batch_size: int | None,
    max_failure_rate: float | None,
    metrics_file: Path | None = None,
    allow_schema_change: bool = False,
) -> dict[str, Any]:
    """CLI flags shared by run and extract, as dotted config keys (None = not given)."""
    return {
        "run.metrics_file": str(metrics_file) if metrics_file is not None else None,
        "output.schema_change": "add_columns" if allow_schema_change else None,
        "schema": schema,
        "engine.model": model,
        "engine.name": engine,
        "engine.profile": profile,
        "run.batch_size": batch_size,
        "run.max_failure_rate": max_failure_rate,
    }


def _progress_printer(enabled: bool):  # type: ignore[no-untyped-def]
    """A progress bar on a terminal; elsewhere (or with --log-format json) a log line every 5 s
    (``docextract.progress``, INFO: ``-q`` silences it)."""
    if not enabled or not sys.stderr.isatty() or state.verbosity < 0 or state.log_format == "json":
        last = {"t": 0.0}

        def plain(p: Progress) -> None:
            import time

            now = time.monotonic()
            if now - last["t"] >= 5 or p.done == p.total:
                last["t"] = now
                progress_log.info(
                    "[%s] %d/%d documents, %d failed, %d pages", p.stage, p.done, p.total, p.failed, p.pages
                )

        return plain, None
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar = Bar(*columns, transient=False)
    task = bar.add_task("documents", total=None)

    def update(p: Progress) -> None:
        bar.update(task, total=p.total, completed=p.done, description=f"{p.stage} ({p.failed} failed)")

    return update, bar


def summary_dict(s: RunSummary) -> dict[str, Any]:
    """The run summary as plain JSON-able data (paths as strings), with the failure rate."""
    data = json.loads(json.dumps(dataclasses.asdict(s), default=str))
    return {**data, "status": s.status, "failure_rate": s.failure_rate, "reject_rate": s.reject_rate}


def _print_summary(s: RunSummary, as_json: bool = False) -> None:
    """Text on stderr (with the logs: stdout stays free for --json), or the JSON document on stdout."""
    if as_json:
        print_json(summary_dict(s))
        return
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
    inputs: list[str],
    out: str,
    cfg: JobConfig,
    force: bool,
    retry_failed: bool,
    stage_dir: str | None = None,
    as_json: bool = False,
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
    _print_summary(summary, as_json)
    raise typer.Exit(summary.exit_code)


@command(app)
def run(
    inputs: Annotated[list[str], typer.Argument(help="Folders, globs, files or manifests (.txt/.csv/.parquet).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output directory or s3://bucket/prefix.")],
    config: ConfigOpt = None,
    schema: SchemaOpt = None,
    model: ModelOpt = None,
    engine: EngineOpt = None,
    profile: ProfileOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Documents per engine call.")] = None,
    workers: Annotated[int | None, typer.Option(help="Rasterizing processes (0 = all cores).")] = None,
    max_pages: Annotated[int | None, typer.Option(help="Pages kept per document.")] = None,
    max_failure_rate: Annotated[float | None, typer.Option(help="Exit 3 above this failed fraction.")] = None,
    metrics_file: MetricsOpt = None,
    backend: Annotated[str | None, typer.Option(help="local | ray")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Attach to this Ray cluster (with --backend ray).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Reprocess documents already done.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Re-run retryable failures.")] = False,
    rehash: Annotated[
        bool, typer.Option("--rehash", help="Read and hash every input, even those the identity cache knows.")
    ] = False,
    allow_schema_change: AllowSchemaChangeOpt = False,
    sets: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Discover, rasterize, extract and validate in one streamed pass."""
    overrides = _job_overrides(schema, model, engine, profile, batch_size, max_failure_rate, metrics_file,
                               allow_schema_change)
    cfg = run_config(
        metrics_file,
        out,
        config,
        sets,
        **overrides,
        **{"rasterize.workers": workers, "rasterize.max_pages": max_pages, "backend": backend},
        **{"ray.address": ray_address, "run.rehash": rehash or None},
    )
    _execute(inputs, out, cfg, force, retry_failed, as_json=as_json)


@command(app)
def rasterize(
    inputs: Annotated[list[str], typer.Argument(help="Folders, globs, files or manifests.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Stage directory to write (a local folder; replaced).")],
    config: ConfigOpt = None,
    workers: Annotated[int | None, typer.Option(help="Rasterizing processes (0 = all cores).")] = None,
    max_pages: Annotated[int | None, typer.Option(help="Pages kept per document.")] = None,
    sets: SetOpt = None,
) -> None:
    """Rasterize only (cheap CPU nodes): write a stage directory and print a pre-flight report."""
    from pipeline.errors import InputError, StageError
    from pipeline.rasterize import RasterSettings
    from pipeline.stage import write_stage

    cfg = _config(config, sets, **{"rasterize.workers": workers, "rasterize.max_pages": max_pages})
    r = cfg.rasterize
    try:
        rep = write_stage(inputs, out, RasterSettings.from_config(r, cfg.words_wanted), cfg.effective_workers(), r.timeout_s)
    except (StageError, InputError, OSError) as e:
        _fail(str(e))
        return
    err(f"pre-flight report for {out}")
    err(f"  documents: {rep.documents} ({', '.join(f'{k}={v}' for k, v in sorted(rep.by_kind.items()))})")
    err(f"  pages kept: {rep.pages}; pages dropped by max_pages: {rep.pages_dropped}")
    failed = sum(rep.failed.values())
    by_type = ", ".join(f"{k}={v}" for k, v in sorted(rep.failed.items()))
    err(f"  unreadable/failed: {failed}" + (f" ({by_type})" if failed else ""))
    err(f"  image tokens: {rep.image_tokens:,} (~{rep.image_tokens / max(rep.pages, 1):.0f}/page, 28x28 px each)")
    err(f"  estimated prompt tokens: {rep.estimated_prompt_tokens():,}")
    err(f"  time: {rep.seconds:.1f}s ({rep.pages / max(rep.seconds, 1e-9):.1f} pages/s)")


@command(app)
def extract(
    stage: Annotated[str, typer.Argument(help="Stage directory written by 'docextract rasterize' (local).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output directory or s3://bucket/prefix.")],
    config: ConfigOpt = None,
    schema: SchemaOpt = None,
    model: ModelOpt = None,
    engine: EngineOpt = None,
    profile: ProfileOpt = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    max_failure_rate: Annotated[float | None, typer.Option()] = None,
    metrics_file: MetricsOpt = None,
    force: Annotated[bool, typer.Option("--force")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed")] = False,
    allow_schema_change: AllowSchemaChangeOpt = False,
    sets: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Inference and validation from a stage directory (GPU nodes)."""
    overrides = _job_overrides(schema, model, engine, profile, batch_size, max_failure_rate, metrics_file,
                               allow_schema_change)
    cfg = run_config(metrics_file, out, config, sets, **overrides)
    _execute([stage], out, cfg, force, retry_failed, stage_dir=stage, as_json=as_json)


@command(app, "schema")
def schema_cmd(name: Annotated[str, typer.Argument(help="invoice | receipt | module:Class")] = "invoice") -> None:
    """Print the JSON Schema sent to the engine for constrained decoding."""
    from pipeline.prompts import schema_json_text
    from schemas import SchemaNotFound, resolve

    try:
        typer.echo(schema_json_text(resolve(name)))
    except SchemaNotFound as e:
        _fail(str(e))


def _inspect_data(out: str, rows: int) -> tuple[dict[str, Any], list[Any]]:
    """Counts, failures by (stage, type), a few failures and rows, the last run: what inspect shows; and
    the parts that were skipped as not ours (damaged, foreign), which are reported, never fatal."""
    from pipeline.status import read_manifest, run_status
    from pipeline.store import SkippedPart, read_table

    skipped: list[SkippedPart] = []
    try:
        res = read_table(out, "results", skipped)
        fail = read_table(out, "failures", skipped)
    except (ValueError, OSError) as e:  # an unreadable store
        _fail(f"cannot read {out}: {e}")
        raise  # unreachable
    try:
        last = read_manifest(out)
    except CouldNotStart as e:
        err(f"warning: {e}", err=True)
        last = None
    if res is None and fail is None and not skipped:
        _fail(f"{out} has no results/ or failures/ parts")
    data: dict[str, Any] = {"results": 0, "failures": 0, "failures_by_type": [], "failure_samples": [], "rows": []}
    if fail is not None and fail.num_rows:
        data["failures"] = fail.num_rows
        c = Counter(zip(fail.column("stage").to_pylist(), fail.column("error_type").to_pylist(), strict=True))
        data["failures_by_type"] = [{"stage": st, "error_type": et, "count": n} for (st, et), n in c.most_common()]
        keep = ("doc_id", "source_path", "stage", "error_type", "message")
        data["failure_samples"] = [{k: r[k] for k in keep} for r in fail.slice(0, rows).to_pylist()]
    if res is not None and res.num_rows:
        data["results"] = res.num_rows
        skip = {"raw_json", "warnings", "run_key", "run_id", "extracted_at", "schema_name", "model"}
        data["rows"] = [{k: v for k, v in r.items() if k not in skip} for r in res.slice(0, rows).to_pylist()]
    if last is not None:
        data["last_run"] = {k: last.get(k) for k in ("run_id", "status", "exit_code", "throughput")}
        data["last_run"]["status"] = run_status(out, last)  # "abandoned": says running, held by no run
    data["skipped_parts"] = [{"location": str(s.location), "reason": s.reason} for s in skipped]
    return json.loads(json.dumps(data, default=str)), skipped


@command(app)
def inspect(
    out: Annotated[str, typer.Argument(help="Output directory (or s3:// prefix) of a run.")],
    rows: Annotated[int, typer.Option(help="Sample rows to show.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Counts, failure reasons and a few rows of a run's output."""
    data, skipped = _inspect_data(out, rows)
    if as_json:
        print_json(data)
        return
    typer.echo(f"results: {data['results']} rows; failures: {data['failures']} rows")
    for f in data["failures_by_type"]:
        typer.echo(f"  {f['stage']:10s} {f['error_type']:18s} {f['count']}")
    for r in data["failure_samples"]:
        typer.echo(f"  - {r['source_path']}: [{r['error_type']}] {(r.get('message') or '')[:160]}")
    for r in data["rows"]:
        typer.echo("  " + json.dumps(r, default=str, ensure_ascii=False)[:400])
    if "last_run" in data:
        m = data["last_run"]
        typer.echo(f"last run {m.get('run_id')}: status {m.get('status')}, throughput {m.get('throughput')}")
    for s in skipped:
        err(f"warning: {s.location} skipped: {s.reason}", err=True)


@command(app, "status")
def status_cmd(
    out: Annotated[str, typer.Argument(help="Output directory (or s3:// prefix) of a run.")],
    inputs: Annotated[list[str] | None, typer.Argument(help="Inputs (default: those of the last run).")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Done, failed (by type) and pending documents under the current run key."""
    from pipeline.status import status

    if sets and not config:
        _fail("status takes --set only with -c FILE (without -c it uses the config stored in run.json)")
    cfg = _config(config, sets) if config else None
    try:
        st = status(out, inputs or None, cfg)
    except (CouldNotStart, ValueError, ImportError, SyntaxError) as e:
        # ValueError: a schema that cannot be imported (SchemaNotFound), a damaged run.json
        _fail(f"status of {out}: {e}")
        return
    if as_json:
        print_json(dataclasses.asdict(st))
        return
    failed = sum(st.failed_by_type.values())
    by_type = ", ".join(f"{k}={v}" for k, v in sorted(st.failed_by_type.items()))
    typer.echo(f"run key {st.run_key}")
    typer.echo(f"done:    {st.done}")
    typer.echo(f"failed:  {failed}" + (f" ({by_type})" if failed else ""))
    typer.echo(f"pending: {st.pending if st.pending is not None else 'unknown (inputs not found)'}")
    if st.other_keys:
        typer.echo(f"rows under other run keys (older schema/model/settings): {st.other_keys}")
    if st.last_run:
        lr = st.last_run
        state = st.last_run_status
        if state == "abandoned":
            state = f"abandoned (run.json says running, but no run holds {out}: killed or its machine lost)"
        code = "" if lr.get("exit_code") is None else f", exit code {lr.get('exit_code')}"
        typer.echo(f"last run {lr.get('run_id')}: {state}{code}, started {lr.get('started_at')}, "
                   f"updated {lr.get('updated_at')}")
    for s in st.damaged:
        err(f"warning: {s.location} skipped: {s.reason}", err=True)


cli_tools.register(app)


@command(config_app, "show")
def config_show(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the effective config (defaults < -c FILE < DOCEXTRACT_* variables < --set), as TOML with
    where each value not left at its default came from, or as JSON (--json)."""
    try:
        cfg, sources = resolve_config(config, sets=sets or (), environ=os.environ)
    except ConfigError as e:
        _fail(str(e))
        return
    if as_json:
        print_json({"config": cfg.model_dump(mode="json", by_alias=True), "sources": sources})
    else:
        typer.echo(config_toml(cfg, sources), nl=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
