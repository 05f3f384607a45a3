"""What a run reports: live progress, the figures it gathers, and the summary it returns."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.records import ErrorType

EXIT_OK = 0
EXIT_COULD_NOT_START = 2
EXIT_TOO_MANY_FAILURES = 3
EXIT_INTERRUPTED = 4
EXIT_ENGINE_DIED = 5
EXIT_OUTPUT_FAILED = 6
EXIT_UNEXPECTED = 1

#: ``run.json``'s ``status`` once a run has ended: one name per exit code.  While the run goes on the
#: status is ``running`` (and ``exit_code`` is null); ``docextract status`` calls a ``running`` run that no
#: longer holds the output's lock or lease ``abandoned`` (killed, or its machine lost).
STATUS = {
    EXIT_OK: "ok",
    EXIT_UNEXPECTED: "error",
    EXIT_COULD_NOT_START: "could_not_start",
    EXIT_TOO_MANY_FAILURES: "too_many_failures",
    EXIT_INTERRUPTED: "interrupted",
    EXIT_ENGINE_DIED: "engine_died",
    EXIT_OUTPUT_FAILED: "output_failed",
}
RUNNING = "running"
ABANDONED = "abandoned"


def failure_rate(processed: int, failed: int, rejected: int) -> float:
    """Processing failures over the documents that were not rejected as inputs."""
    accepted = processed - rejected
    return (failed - rejected) / accepted if accepted else 0.0


def reject_rate(processed: int, rejected: int) -> float:
    return rejected / processed if processed else 0.0


@dataclass
class Progress:
    total: int = 0  # documents to process in this run
    done: int = 0
    failed: int = 0
    pages: int = 0
    stage: str = "starting"


@dataclass
class RunStats:
    """Everything a run counts, in one place: rows committed, failures by type and stage, pages,
    tokens, and seconds per stage."""

    succeeded: int = 0
    failed: int = 0  # every failure row, input rejects included
    rejected: int = 0  # failures that are input rejects (ErrorType.input_reject)
    pages: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    failed_by_type: Counter[str] = field(default_factory=Counter)
    failed_by_stage: Counter[str] = field(default_factory=Counter)
    timings: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed

    @property
    def failure_rate(self) -> float:
        return failure_rate(self.processed, self.failed, self.rejected)

    def committed(self, results: int, failures: list[dict[str, Any]]) -> None:
        self.succeeded += results
        self.failed += len(failures)
        for r in failures:
            self.failed_by_type[r["error_type"]] += 1
            self.failed_by_stage[r["stage"]] += 1
            self.rejected += ErrorType(r["error_type"]).input_reject

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - t0


@dataclass
class RunSummary:
    run_id: str
    run_key: str
    out_dir: Path | str  # a str for an object-store URI
    inputs: int = 0  # distinct documents found
    skipped: int = 0  # already finished under this run key
    processed: int = 0
    succeeded: int = 0
    failed: int = 0  # every failure row, input rejects included
    rejected: int = 0  # of which input rejects (empty, unsupported, encrypted, corrupt, no pages, too large)
    failures_by_type: dict[str, int] = field(default_factory=dict)
    failures_by_stage: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    engine_died: str | None = None  # why the engine became unavailable (the rest stays pending)
    output_error: str | None = None  # why the output could not be written (the rest stays pending)
    exit_code: int = EXIT_OK
    warnings: list[str] = field(default_factory=list)

    @property
    def failure_rate(self) -> float:
        return failure_rate(self.processed, self.failed, self.rejected)

    @property
    def reject_rate(self) -> float:
        return reject_rate(self.processed, self.rejected)

    def take(self, stats: RunStats) -> None:
        """Copy the run's figures in."""
        self.processed = stats.processed
        self.succeeded = stats.succeeded
        self.failed = stats.failed
        self.rejected = stats.rejected
        self.failures_by_type = dict(stats.failed_by_type)
        self.failures_by_stage = dict(stats.failed_by_stage)
        self.pages = stats.pages
        self.prompt_tokens = stats.prompt_tokens
        self.output_tokens = stats.output_tokens
        self.timings = {k: round(v, 4) for k, v in stats.timings.items()}

    @property
    def pending(self) -> int:
        """Documents found that this run neither skipped nor finished (interrupted, engine died, ...)."""
        return max(self.inputs - self.skipped - self.processed, 0)

    @property
    def status(self) -> str:
        return STATUS.get(self.exit_code, "error")

    def decide_exit(self, max_failure_rate: float, max_reject_rate: float = 1.0) -> str:
        """Set ``exit_code``; return the run's final status for ``run.json`` (``STATUS``)."""
        if self.output_error:
            self.exit_code = EXIT_OUTPUT_FAILED
            self.warnings.append(f"output not writable: {self.output_error}; unfinished documents stay pending")
        elif self.engine_died:
            self.exit_code = EXIT_ENGINE_DIED
            self.warnings.append(f"engine unavailable: {self.engine_died}; unfinished documents stay pending")
        elif self.interrupted:
            self.exit_code = EXIT_INTERRUPTED
        elif self.failure_rate > max_failure_rate or self.reject_rate > max_reject_rate:
            self.exit_code = EXIT_TOO_MANY_FAILURES
        else:
            self.exit_code = EXIT_OK
        return self.status
