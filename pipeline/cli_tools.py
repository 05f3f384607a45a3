"""The commands around a run: review, compact, synth, eval, make-tiny-model (registered on ``cli.app``)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli_base import ConfigOpt, JsonOpt, SchemaOpt, SetOpt, command, job_config, print_json
from pipeline.cli_base import fail as _fail
from pipeline.errors import CouldNotStart

_config = job_config
log = logging.getLogger("docextract")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    for name, fn in COMMANDS:
        command(app, name)(fn)


def review(
    out: Annotated[Path, typer.Argument(help="Output directory of a run.")],
    html: Annotated[Path, typer.Option("--html", help="Directory for the report (index.html, docs/).")],
    only_flagged: Annotated[
        bool, typer.Option("--only-flagged", help="Only results that need review, and failures.")
    ] = False,
    source_root: Annotated[
        Path | None, typer.Option(help="Read relative source paths under this directory (default: the current one).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """A static HTML report to check the extraction: page images with each value's evidence boxed."""
    from pipeline.review import write_review

    try:
        w = write_review(out, html, only_flagged, None if source_root is None else str(source_root))
    except CouldNotStart as e:
        _fail(f"review of {out}: {e}")
        return
    if as_json:
        print_json({**dataclasses.asdict(w), "index": str(w.index)})
        return
    typer.echo(f"{w.index}  ({w.shown} of {w.documents} documents: {w.flagged} flagged, {w.failed} failed; "
               f"{w.images} page images, {w.bytes / 1e6:.1f} MB in {w.seconds:.1f}s)")
    if w.without_images:
        typer.echo(f"{w.without_images} document(s) shown without page images (source not found, changed or unreadable)")


def compact(
    out: Annotated[str, typer.Argument(help="Output directory (or s3:// prefix) to compact.")],
    target_size: Annotated[
        float | None, typer.Option("--target-size", help="Target part size in MB (default output.compact_target_mb).")
    ] = None,
    partition_by: Annotated[
        str | None, typer.Option("--partition-by", help="Rewrite results into this layout: none | extracted_date | FIELD.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be rewritten.")] = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Merge small parts into large ones (atomically, under the output's lock); one row per document."""
    from pipeline.compact import CompactError
    from pipeline.compact import compact as run_compact

    cfg = _config(config, sets, **{"output.compact_target_mb": target_size, "output.partition_by": partition_by})
    try:
        rep = run_compact(out, cfg.output.compact_target_mb, dry_run, partition_by and cfg.output.partition_by,
                          cfg.output.compression, cfg.run.lease_ttl_s)
    except (CouldNotStart, CompactError, OSError) as e:
        _fail(f"compact {out}: {e}")
        return
    if as_json:
        print_json(dataclasses.asdict(rep))
    else:
        typer.echo("\n".join(rep.lines()))


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


def eval_cmd(
    truth: Annotated[
        Path, typer.Option("--truth", "-t", help="Documents with <name>.truth.json, truth.jsonl, or SROIE-style JSON.")
    ],
    results: Annotated[Path, typer.Option("--results", "-r", help="Output directory of a run.")],
    schema: SchemaOpt = None,
    report: Annotated[Path | None, typer.Option(help="Also write the report (.json or .parquet).")] = None,
    compare: Annotated[
        Path | None,
        typer.Option(help="Output directory of a second run on the same documents: compare it (B) with --results (A)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Field-level precision/recall/F1 against ground truth; failures count as misses.  With --compare: both
    runs' F1 per field, the difference with a bootstrap interval, and per-document wins and losses."""
    from pipeline.evaluate import EvalError, evaluate, format_table, write_report

    if compare is not None:
        _eval_compare(truth, results, compare, schema, report, as_json)
        return
    try:
        rep = evaluate(truth, results, schema)
    except EvalError as e:
        _fail(str(e))
        return
    if report is not None:
        try:
            write_report(rep, report)
        except (ValueError, OSError) as e:  # a format it cannot write (.csv), a directory it cannot create
            _fail(f"cannot write the report: {e}")
        log.info("report written to %s", report)
    if as_json:
        print_json(rep.to_dict())
    else:
        typer.echo(format_table(rep))


def _eval_compare(truth: Path, a: Path, b: Path, schema: str | None, report: Path | None, as_json: bool) -> None:
    from pipeline.evaluate import EvalError
    from pipeline.evaluate.compare import compare, format_comparison
    from pipeline.fs import write_bytes_atomic

    if report is not None and report.suffix.lower() != ".json":
        _fail(f"{report}: a comparison report is written as .json")
    try:
        c = compare(truth, a, b, schema)
    except EvalError as e:
        _fail(str(e))
        return
    if report is not None:
        try:
            write_bytes_atomic(report, (json.dumps(c.to_dict(), indent=2, ensure_ascii=False) + "\n").encode())
        except OSError as e:
            _fail(f"cannot write the report: {e}")
    if as_json:
        print_json(c.to_dict())
    else:
        typer.echo(format_comparison(c))


def make_tiny_model(
    out: Annotated[Path, typer.Argument(help="Directory for the checkpoint.")],
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Build a tiny random Qwen2.5-VL checkpoint (no download) for smoke tests on a CPU."""
    from pipeline.tinymodel import build_tiny_qwen25vl

    path = build_tiny_qwen25vl(out, seed=seed, overwrite=True)
    typer.echo(str(path))


COMMANDS: list[tuple[str, Callable[..., None]]] = [
    ("review", review), ("compact", compact), ("synth", synth), ("eval", eval_cmd),
    ("make-tiny-model", make_tiny_model),
]
