"""The run, stage by stage, and ``run_job``: the Python API that the CLI and orchestrators call.

One document's path through a run (each stage a module of its own)::

    discover   inputs -> Documents (+ discovery failures)           Source.discover   (sources.py, discover.py)
    skip       what the output already holds under the run key      Output.open       (output.py)
    rasterize  Documents -> RasterizedDocs (+ page words), streamed Source.rasterize  (sources.py, workers.py, words.py, ocr.py)
    prompt     RasterizedDoc -> Request, batched                    BatchAssembler    (batching.py, prompts.py)
    infer      Requests -> Generations (engine thread, prefetch)    Extractor         (extract.py, engines/)
    validate   Generation -> Extraction | Failure (re-asks)         Extractor         (validate.py)
    evidence   Extraction + page words -> evidence rows, needs_review  RowBuilder   (trust.py, evidence.py, confidence.py)
    write      rows -> atomic Parquet parts, run.json               RowBuilder, Output, Manifest

Every input document ends in exactly one row of ``results`` or ``failures``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from pipeline.backends import Backend, open_backend
from pipeline.batching import BatchAssembler
from pipeline.columns import results_schema
from pipeline.compact import CompactError
from pipeline.config import JobConfig, stable_hash
from pipeline.engines.base import Engine, EngineBase
from pipeline.engines.resilient import ResilientEngine
from pipeline.errors import CouldNotStart, OutputUnwritable, SchemaMappingError, SchemaNotFound
from pipeline.extract import Extractor
from pipeline.manifest import Manifest
from pipeline.metrics import MetricsFile
from pipeline.output import Output, OutputOptions
from pipeline.prompts import PROMPT_VERSION, build_request, json_schema_for
from pipeline.records import Document, Failure, RasterizedDoc, Request, Sampling
from pipeline.rows import RowBuilder
from pipeline.store import new_run_id, now_utc
from pipeline.summary import (
    EXIT_COULD_NOT_START,
    EXIT_ENGINE_DIED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT_FAILED,
    EXIT_TOO_MANY_FAILURES,
    EXIT_UNEXPECTED,
    STATUS,
    Progress,
    RunStats,
    RunSummary,
)
from schemas import resolve

log = logging.getLogger(__name__)

__all__ = [
    "EXIT_COULD_NOT_START", "EXIT_ENGINE_DIED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_OUTPUT_FAILED",
    "EXIT_TOO_MANY_FAILURES",
    "CouldNotStart", "Progress", "RunSummary", "Runner", "run_job", "run_key_for",
]


def run_key_for(config: JobConfig, model: type[BaseModel]) -> str:
    return stable_hash(
        {"config": config.fingerprint(), "schema": json_schema_for(model), "prompt_version": PROMPT_VERSION}
    )


class Runner:
    """One run of the job over one output location, with the backend's source and engine."""

    def __init__(self, config: JobConfig, out_dir: str | Path, backend: Backend,
                 on_progress: Callable[[Progress], None] | None = None):
        self.config, self.backend = config, backend
        self.started_at, self.t_start = now_utc(), time.perf_counter()
        self.manifest: Manifest | None = None
        try:
            self.model = resolve(config.schema_name)
            self.arrow_schema = results_schema(self.model)
        except (SchemaNotFound, SchemaMappingError) as e:
            raise CouldNotStart(str(e)) from e
        self.json_schema = json_schema_for(self.model)
        self.run_key = run_key_for(config, self.model)
        self.run_id = new_run_id()
        self.output = Output(out_dir, self.run_id, self.arrow_schema, config.output.compression,
                             config.run.lease_ttl_s, on_lease_lost=lambda why: self.stop(),
                             schema_name=config.schema_name, options=OutputOptions.from_config(config.output))
        self.out_dir = self.output.location
        self.rows = RowBuilder(config, self.arrow_schema, self.run_key, self.run_id)
        self.stats = RunStats()
        self.progress = Progress()
        self.on_progress = on_progress or (lambda p: None)
        self._stop = threading.Event()
        self._engine: ResilientEngine | None = None

    def stop(self) -> None:
        """Ask the run to finish the current batch, commit it and return."""
        self._stop.set()

    def run(self, inputs: list[str], force: bool = False, retry_failed: bool = False) -> RunSummary:
        self.summary = summary = RunSummary(self.run_id, self.run_key, self.out_dir)
        with self.stats.timed("discover"):
            found = self.backend.source.discover(inputs)  # 1. discover
        if found.total == 0:
            raise CouldNotStart(f"no input documents found in {', '.join(map(str, inputs))}")
        finished, warnings = self.output.open(self.run_key, force, retry_failed)  # 2. skip what is done
        summary.inputs, summary.warnings = found.total, found.warnings + warnings
        todo = [d for d in found.documents if not finished.skip(d.doc_id)]
        rejects = [(d, f) for d, f in found.failures if not finished.skip(d.doc_id)]
        summary.skipped = found.total - len(todo) - len(rejects)
        self.progress = Progress(total=len(todo) + len(rejects))
        self.manifest = Manifest(self.out_dir, self.config, self.run_id, self.run_key, inputs, found,
                                 self.backend.engine_name, self.started_at, self.t_start)
        try:
            if todo and not self._stop.is_set():
                self._extract(todo, rejects)  # 3-6. rasterize, prompt, infer, validate, write
            else:
                self.backend.source.save_state()
                self._commit_rejects(rejects)
            with self.stats.timed("write"):
                self._finish_output()
        except OutputUnwritable as e:
            log.error("%s; stopping, committed work is kept, the rest stays pending", e)
            summary.output_error = str(e)
        except CouldNotStart:  # the engine would not load: nothing was written, nor is run.json
            raise
        except Exception as e:  # a bug or a custom engine raising: run.json says so instead of "running"
            self._record_crash(e)
            raise
        return self._summarize(summary)

    def _extract(self, todo: list[Document], rejects: list[tuple[Document, Failure]]) -> None:
        pages = self.backend.source.rasterize(todo)  # rasterizing starts now, while the engine loads
        try:
            extractor = self._extractor(self._load_engine())  # nothing is written before the engine loads
            pages.wait_started()  # ... nor before the rasterizers have started
            self.backend.source.save_state()
            self._commit_rejects(rejects)
            try:
                extractor.run(self._batches(iter(pages)))
            finally:
                self.summary.engine_died = extractor.engine_died
        finally:
            pages.close()

    # -- the stages' parts ------------------------------------------------------------------

    def _load_engine(self) -> ResilientEngine:
        if self._engine is None:
            self.progress.stage = "loading engine"
            self.on_progress(self.progress)
            with self.stats.timed("engine_load"):
                engine = self.backend.load_engine()
            run = self.config.run
            self._engine = ResilientEngine(engine, factory=self.backend.rebuild_engine, retries=run.engine_retries,
                                           backoff_s=run.engine_backoff_s, max_restarts=run.engine_restarts)
            if self._engine.settings and self.manifest is not None:
                self.manifest.base["engine_settings"] = dict(self._engine.settings)
        return self._engine

    def _extractor(self, engine: EngineBase) -> Extractor:
        run = self.config.run
        return Extractor(engine, self.model, self.rows, self._commit, self.stats, self._stop, run.max_attempts,
                         self._sampling, run.truncated_temperature)

    def _batches(self, pages: Iterator[Any]) -> BatchAssembler:
        self.progress.stage = "extracting"
        run = self.config.run
        return BatchAssembler(pages, self._prompt, run.batch_size, run.first_batch_size, run.max_batch_pages,
                              self._stop, self.stats, self.progress)

    def _sampling(self, attempt: int) -> Sampling:
        return Sampling.from_config(self.config.sampling, self.config.run.reask_temperature_step, attempt)

    def _prompt(self, rdoc: RasterizedDoc) -> Request:
        p = self.config.prompt
        return build_request(rdoc.document.doc_id, rdoc.pages, self.model, self.json_schema, self._sampling(1),
                             system=p.system, extra_instructions=p.instructions,
                             anchor_max_tokens=p.anchor_max_tokens if p.anchor_text else None)

    def _finish_output(self) -> None:
        try:
            self.output.finish()
        except OSError as e:
            raise OutputUnwritable(f"cannot finish the output in {self.out_dir}: {e}") from e
        if self._stop.is_set():
            return  # stopping (a signal, a lost lease): no compaction now, the next run does it
        try:  # everything is committed: a compaction that fails leaves the tables as they were
            for rep in self.output.compact_if_needed():
                log.info("compacted %s/%s: %d small parts into %d", self.out_dir, rep.table, rep.parts_rewritten,
                         rep.parts_written)
        except (OSError, pa.ArrowException, CompactError) as e:
            log.warning("could not compact %s: %s", self.out_dir, e)
            self.summary.warnings.append(f"compaction skipped: {e}")

    def _commit_rejects(self, rejects: list[tuple[Any, Failure]]) -> None:
        if rejects:
            self._commit([], [self.rows.failure(d, f) for d, f in rejects])

    def _commit(self, results: list[dict[str, Any]] | pa.Table, failures: list[dict[str, Any]],
                evidence: pa.Table | None = None) -> None:
        with self.stats.timed("write"):
            try:
                self.output.commit(results, failures, evidence)
            except OSError as e:
                self.stop()
                raise OutputUnwritable(f"cannot write a part to {self.out_dir}: {e}") from e
        self.stats.committed(len(results), failures)
        self.progress.done += len(results) + len(failures)
        self.progress.failed += len(failures)
        self.on_progress(self.progress)
        try:
            assert self.manifest is not None
            self.manifest.write(self.summary, self.stats, "running")
        except OSError as e:
            self.stop()
            raise OutputUnwritable(f"cannot write run.json in {self.out_dir}: {e}") from e

    def _summarize(self, summary: RunSummary) -> RunSummary:
        assert self.manifest is not None
        summary.interrupted = self._stop.is_set() and self.stats.processed < self.progress.total
        self.stats.timings["wall"] = self.manifest.elapsed()
        summary.take(self.stats)
        status = summary.decide_exit(self.config.run.max_failure_rate, self.config.run.max_reject_rate)
        try:
            self.manifest.write(summary, self.stats, status)
        except OSError as e:  # the disk that refused a part may refuse this too: the summary still says it
            log.error("could not write run.json in %s: %s", self.out_dir, e)
            summary.warnings.append(f"run.json not written: {e}")
            if summary.exit_code == EXIT_OK:
                summary.exit_code, summary.output_error = EXIT_OUTPUT_FAILED, str(e)
            if self.manifest.last is not None:  # what the metrics file reports
                self.manifest.last.update(status=summary.status, exit_code=summary.exit_code,
                                          error=summary.output_error)
        return summary

    def _record_crash(self, e: Exception) -> None:
        if self.manifest is None:
            return
        self.summary.exit_code = EXIT_UNEXPECTED
        try:
            self.manifest.write(self.summary, self.stats, STATUS[EXIT_UNEXPECTED], f"{type(e).__name__}: {e}")
        except OSError as oe:
            log.error("could not write run.json in %s: %s", self.out_dir, oe)

    def close(self) -> None:
        self.output.close()
        if self._engine is not None:
            if self.backend.owns_engine or self._engine.restarts:
                self._engine.close()  # ours, or a rebuilt one (the caller's original was closed at the rebuild)
            self._engine = None
        self.backend.close()


@contextlib.contextmanager
def stop_on_signals(runner: Runner, enabled: bool = True) -> Iterator[None]:
    """SIGINT/SIGTERM finish the batch in flight, commit it and return (exit code 4)."""
    installed: dict[signal.Signals, Any] = {}
    if enabled and threading.current_thread() is threading.main_thread():

        def handler(signum: int, frame: Any) -> None:
            log.warning("signal %d: finishing the current batch, then stopping", signum)
            runner.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            installed[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in installed.items():
            signal.signal(sig, old)


def run_job(
    inputs: list[str],
    out_dir: str | Path,
    config: JobConfig,
    engine: Engine | None = None,
    force: bool = False,
    retry_failed: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    handle_signals: bool = True,
    stage_dir: str | Path | None = None,
    engine_factory: Callable[[], Engine] | None = None,
    backend: Backend | None = None,
) -> RunSummary:
    """Run the whole job on the backend ``config.backend`` names (or ``backend``).

    ``engine``: an engine object to use instead of loading ``[engine]`` (``engine_factory`` rebuilds
    it if it dies); ``stage_dir``: read documents and pages from a ``docextract rasterize`` stage
    instead of ``inputs``.  Raises ``CouldNotStart`` (bad config, no inputs, engine would not load;
    nothing written but the metrics file).  SIGINT/SIGTERM finish the current batch, commit it, and
    return.  ``config.run.metrics_file``: the run's figures in Prometheus' text format, written at the end
    of every run, a run that could not start or crashed included (``pipeline.metrics``)."""
    metrics = MetricsFile.for_run(config.run.metrics_file, out_dir)
    runner: Runner | None = None
    try:
        backend = backend or open_backend(config, out_dir, stage_dir, engine, engine_factory)
        try:
            runner = Runner(config, out_dir, backend, on_progress=on_progress)
        except BaseException:
            backend.close()
            raise
        try:
            with stop_on_signals(runner, handle_signals):
                summary = runner.run([str(stage_dir)] if stage_dir is not None else inputs, force, retry_failed)
        finally:
            runner.close()
    except BaseException as e:
        if metrics is not None:
            metrics.write_failed(runner.manifest.last if runner and runner.manifest else None, e, config)
        raise
    if metrics is not None and runner.manifest is not None and runner.manifest.last is not None:
        metrics.write(runner.manifest.last)
    return summary

