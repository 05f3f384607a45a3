"""Stages 4-6 for a stream of batches: infer -> validate -> commit, pipelined.

Batch k is submitted to the engine (its own thread) as soon as batch k-1's answers are back;
batch k-1 is then validated and committed while the engine works on k, and batch k+1 is
assembled from pages the rasterizing processes made meanwhile.  The engine is handed batch
k+1 early (``prefetch``), so it is never without work between two batches nor during a
batch's tail.  Invalid answers are re-asked with their errors (``run.max_attempts``) in the
next batch that is assembled.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from pipeline.batching import Batch, BatchAssembler, Pending
from pipeline.engines.base import EngineBase
from pipeline.errors import EngineUnavailable
from pipeline.prompts import reask_request
from pipeline.records import ErrorType, Extraction, Failure, Generation, Request, Sampling, Stage
from pipeline.rows import RowBuilder, unwritable
from pipeline.summary import RunStats
from pipeline.validate import validate_generation

log = logging.getLogger(__name__)

REASK_TYPES = {ErrorType.INVALID_JSON, ErrorType.SCHEMA_MISMATCH, ErrorType.RULE_VIOLATION}

Commit = Callable[[list[dict[str, Any]] | pa.Table, list[dict[str, Any]], pa.Table | None], None]
InFlight = tuple[list[Pending], "Future[tuple[list[Generation], float]]"]


class Extractor:
    def __init__(
        self,
        engine: EngineBase,
        model: type[BaseModel],
        rows: RowBuilder,
        commit: Commit,
        stats: RunStats,
        stop: threading.Event,
        max_attempts: int,
        sampling: Callable[[int], Sampling],
        truncated_temperature: float,
    ):
        self.engine, self.model, self.rows, self.commit = engine, model, rows, commit
        self.stats, self.stop = stats, stop
        self.max_attempts, self.sampling = max_attempts, sampling
        self.truncated_temperature = truncated_temperature
        self.engine_died: str | None = None

    # -- the loop ---------------------------------------------------------------------------

    def run(self, batches: BatchAssembler) -> None:
        """Until the input is exhausted, the run is stopped, or the engine dies (``engine_died``)."""
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="docextract-engine") as pool:
                self._loop(batches, pool)
        finally:
            self.engine.abort_pending()  # a stop may leave a prefetched batch behind

    def _loop(self, batches: BatchAssembler, pool: ThreadPoolExecutor) -> None:
        in_flight: InFlight | None = None
        while True:
            batch = batches.next_batch()
            self._commit_raster_failures(batch)
            if in_flight is not None and batch.requests and not self.stop.is_set():
                self._prefetch(batch.requests)
            finished = None
            if in_flight is not None:
                finished, in_flight = self._collect(in_flight), None
                if finished is None:
                    return  # the engine died: this batch and everything after it stay pending
            if batch.requests and not self.stop.is_set():
                in_flight = (batch.requests, pool.submit(self._generate, [p.request for p in batch.requests]))
            if finished is not None:
                batches.carry += self._validate_and_commit(*finished)
            if self.stop.is_set():
                if in_flight is not None and (last := self._collect(in_flight)) is not None:
                    self._validate_and_commit(*last)  # finish the batch the engine has, then stop
                return  # not committed, so pending for the next run: re-asks, answers the stop aborted
            if batches.done and in_flight is None:
                return

    def _commit_raster_failures(self, batch: Batch) -> None:
        failures = batch.raster_failures
        if self.stop.is_set():  # a process that died while the run is being stopped: not the document's fault
            failures = [(d, e) for d, e in failures if e.error_type is not ErrorType.WORKER_CRASHED]
        if failures:
            self.commit([], [self.rows.failure(d, Failure(d.doc_id, Stage.RASTERIZE, e.error_type, e.message))
                             for d, e in failures], None)

    def _prefetch(self, pending: list[Pending]) -> None:
        try:  # the engine starts on it as soon as it has room
            self.engine.prefetch([p.request for p in pending])
        except Exception as e:  # only an optimisation: generate() sends the batch anyway
            log.warning("could not hand the next batch to the engine early: %s", e)

    def _generate(self, requests: list[Request]) -> tuple[list[Generation], float]:
        """In the engine thread; the time measured is the engine's own busy time.  Per-batch errors come
        back as ``engine_error`` generations (``ResilientEngine``); only ``EngineUnavailable`` is raised."""
        t0 = time.perf_counter()
        gens = self.engine.generate(requests)
        return gens, time.perf_counter() - t0

    def _collect(self, flight: InFlight) -> tuple[list[Pending], list[Generation]] | None:
        """The answers of the batch in flight, or None when the engine died (the run stops)."""
        pending, fut = flight
        try:
            gens, busy = fut.result()
        except EngineUnavailable as e:
            log.error("%s; stopping, the remaining documents stay pending", e)
            self.engine_died = str(e)
            self.stop.set()
            return None
        self.stats.timings["engine"] += busy
        return pending, gens

    # -- validate and commit ----------------------------------------------------------------

    def _validate_and_commit(self, batch: list[Pending], gens: list[Generation]) -> list[Pending]:
        """Validate a batch's answers, commit results and final failures; return the re-asks."""
        with self.stats.timed("validate"):
            rows: list[tuple[Pending, Generation, dict[str, Any]]] = []
            evidence: dict[str, list[dict[str, Any]]] = {}
            failed: list[tuple[Pending, Failure]] = []
            for p, gen in zip(batch, gens, strict=True):
                outcome = self._validate(p, gen)
                if outcome is None:
                    continue
                if isinstance(outcome, Extraction):
                    try:
                        row, evidence[p.document.doc_id] = self._result(p, outcome, gen)
                        rows.append((p, gen, row))
                        continue
                    except (ValueError, TypeError, OverflowError, ArithmeticError) as e:
                        outcome = unwritable(p, gen, e)
                failed.append((p, outcome))
            table, culprits = self.rows.results_table(rows)
            failures, reasks = self._failures_and_reasks(failed + culprits)
            ev_table = self.rows.evidence_table(evidence, table) if evidence else None
        if table.num_rows or failures:
            self.commit(table, failures, ev_table)
        return reasks

    def _result(self, p: Pending, ext: Extraction, gen: Generation) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        t0 = time.thread_time()  # this thread's CPU: the engine's thread works meanwhile
        try:
            return self.rows.result(p, ext, gen)
        finally:
            self.stats.timings["result_cpu"] += time.thread_time() - t0

    def _validate(self, p: Pending, gen: Generation) -> Extraction | Failure | None:
        """One answer: its extraction or failure, or None when it was not attempted (stays pending)."""
        if gen.doc_id != p.document.doc_id:  # an engine bug; never commit one document's answer for another
            gen = Generation(p.document.doc_id, "", "error", error=f"engine answered for {gen.doc_id!r} "
                             "in this document's place", error_type=ErrorType.ENGINE_ERROR)
        if gen.finish_reason == "abort":
            return None  # the engine was stopped under this request
        p.attempts += 1
        p.prompt_tokens += gen.prompt_tokens
        p.output_tokens += gen.output_tokens
        self.stats.prompt_tokens += gen.prompt_tokens
        self.stats.output_tokens += gen.output_tokens
        return validate_generation(gen, self.model)

    def _failures_and_reasks(self, failed: list[tuple[Pending, Failure]]) -> tuple[list[dict[str, Any]], list[Pending]]:
        failures: list[dict[str, Any]] = []
        reasks: list[Pending] = []
        for p, outcome in failed:
            p.errors.extend(f"attempt {p.attempts}: {e}" for e in outcome.errors)
            if outcome.error_type is ErrorType.RULE_VIOLATION:
                p.rule_failures.extend(outcome.errors)
            if p.attempts < self.max_attempts and (request := self._reask(p, outcome)) is not None:
                p.request = request
                reasks.append(p)
                continue
            failures.append(self.rows.final_failure(p, outcome))
        return failures, reasks

    def _reask(self, p: Pending, outcome: Failure) -> Request | None:
        """The next attempt's request, or None when this failure is final.

        An invalid answer is shown to the model with its errors; an answer cut at ``max_tokens`` (a model
        looping) is asked again once, unchanged, at ``run.truncated_temperature`` (olmOCR's remedy)."""
        if outcome.error_type in REASK_TYPES and outcome.raw_output:
            return reask_request(p.request, outcome.raw_output, outcome.errors, self.sampling(p.attempts + 1))
        if outcome.error_type is ErrorType.TRUNCATED and not p.truncation_retried:
            p.truncation_retried = True
            hotter = dataclasses.replace(p.request.sampling, temperature=self.truncated_temperature)
            return dataclasses.replace(p.request, sampling=hotter, attempt=p.attempts + 1, uid=uuid.uuid4().hex)
        return None
