"""What every docextract command shares: -q/-v/--log-format, error reporting, the common options.

A command declared with :func:`command` gets ``-v``/``-q``/``--log-format`` (logging is set up before
the command body runs, hence before vLLM is imported), and an unexpected exception in it becomes one
``error: <type>: <message>`` line and exit code 1 (``-v``: with the traceback) instead of a traceback.
User errors go through :func:`fail` (a message, exit code 2 unless told otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from pipeline.config import ConfigError, JobConfig, load_config
from pipeline.logs import setup_logging

EXIT_UNEXPECTED = 1
EXIT_USAGE = 2  # = runner.EXIT_COULD_NOT_START (not imported: keep this module light)
log = logging.getLogger("docextract")


@dataclasses.dataclass
class Output:
    """How this invocation reports: set from -q/-v/--log-format before the command runs."""

    verbosity: int = 0
    log_format: str = "text"


state = Output()


def error(msg: str) -> None:
    """One error line on stderr (a JSON record with --log-format json); with -v, the traceback of the
    exception being handled, if any, before it."""
    exc = sys.exc_info()[1] if state.verbosity > 0 else None
    if state.log_format == "json":
        log.error(msg, exc_info=exc)
        return
    if exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)


def fail(msg: str, code: int = EXIT_USAGE) -> None:
    error(msg)
    raise typer.Exit(code)


def _unexpected(e: Exception) -> None:
    hint = "" if state.verbosity > 0 else " (run again with -v for the traceback)"
    fail(f"{type(e).__name__}: {e}{hint}", EXIT_UNEXPECTED)


def _start(verbose: int, quiet: bool, log_format: str) -> None:
    if log_format not in ("text", "json"):
        fail(f"--log-format must be text or json, not {log_format!r}")
    state.log_format = log_format
    if quiet and verbose:
        fail("-q and -v contradict each other; pass one")
    state.verbosity = -1 if quiet else verbose
    setup_logging(state.verbosity, "json" if log_format == "json" else "text")


VerboseOpt = Annotated[
    int,
    typer.Option("--verbose", "-v", count=True, help="-v: library logs at INFO, ours at DEBUG, tracebacks; -vv: all."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only; no progress.")]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="text | json (a JSON object per log line, on stderr).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML job config (see configs/).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="KEY=VALUE config override, repeatable (--set run.batch_size=64); over -c and env."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]
SchemaOpt = Annotated[str | None, typer.Option("--schema", "-s", help="invoice | receipt | module:Class")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Hub model name or local checkpoint directory.")]
EngineOpt = Annotated[str | None, typer.Option("--engine", "-e", help="vllm | module:factory")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="gpu | cpu (vLLM's CPU build).")]
MetricsOpt = Annotated[
    Path | None,
    typer.Option("--metrics-file", help="Write the run's figures here (Prometheus text format, *.prom) at the end."),
]
AllowSchemaChangeOpt = Annotated[
    bool,
    typer.Option("--allow-schema-change", help="Add new nullable columns to an output holding fewer "
                 "(output.schema_change = \"add_columns\"); type changes and dropped columns are still refused."),
]
_COMMON = {"verbose": (VerboseOpt, 0), "quiet": (QuietOpt, False), "log_format": (LogFormatOpt, "text")}


def command(group: typer.Typer, name: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``group.command(name)`` with ``-v``/``-q``/``--log-format`` added and the error guard around it."""

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        sig = inspect.signature(fn, eval_str=True)
        kw = inspect.Parameter.KEYWORD_ONLY
        extra = [inspect.Parameter(n, kw, default=d, annotation=a) for n, (a, d) in _COMMON.items()]

        @functools.wraps(fn)
        def run(*args: Any, verbose: int = 0, quiet: bool = False, log_format: str = "text", **kwargs: Any) -> None:
            _start(verbose, quiet, log_format)
            try:
                fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
                raise
            except Exception as e:  # the command line's last resort
                _unexpected(e)

        run.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])  # type: ignore[attr-defined]
        run.__annotations__ = {**fn.__annotations__, **{n: a for n, (a, _) in _COMMON.items()}}
        group.command(name)(run)
        return run

    return decorate


def print_json(doc: Any) -> None:
    """One JSON document on stdout."""
    typer.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))


def job_config(config: Path | None, sets: list[str] | None = None, **overrides: Any) -> JobConfig:
    """defaults < -c FILE < DOCEXTRACT_* environment < --set < explicit flags (None = not given)."""
    try:
        return load_config(config, overrides, sets=sets or (), environ=os.environ)
    except ConfigError as e:
        fail(str(e))
        raise  # unreachable


def run_config(metrics_file: Path | None, out: str, config: Path | None, sets: list[str] | None,
               **overrides: Any) -> JobConfig:
    """The job config of ``run``/``extract``.  One that cannot be loaded is a run that could not start: the
    metrics file named on the command line says so (exit code 2) before the error ends the command."""
    try:
        return load_config(config, overrides, sets=sets or (), environ=os.environ)
    except ConfigError as e:
        if metrics_file is not None:
            from pipeline.errors import CouldNotStart
            from pipeline.metrics import MetricsFile

            with contextlib.suppress(CouldNotStart):  # a metrics path that cannot be written: the error says enough
                metrics = MetricsFile.for_run(metrics_file, out)
                if metrics is not None:
                    metrics.write_failed(None, CouldNotStart(str(e)), None)
        fail(str(e))
        raise  # unreachable
