"""Batch assembly: rasterized documents -> prompts -> batches for the engine.

A batch closes at ``run.batch_size`` documents (ramped: ``first_batch_size``, doubling) or
``run.max_batch_pages`` pages.  Documents carried over (re-asks, and the one that would have
overflowed the last batch) go first, within the same limits.  A document that could not be
rasterized is handed back as a failure on the way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pipeline.errors import RasterError
from pipeline.records import Document, RasterizedDoc, Request
from pipeline.summary import Progress, RunStats

Outcome = tuple[Document, RasterizedDoc | RasterError]


@dataclass
class Pending:
    """A document between rasterization and its final row."""

    rdoc: RasterizedDoc
    request: Request
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    truncation_retried: bool = False  # an answer cut at max_tokens is asked again once
    rule_failures: list[str] = field(default_factory=list)  # business rules that failed on earlier attempts

    @property
    def document(self) -> Document:
        return self.rdoc.document

    @property
    def pages(self) -> int:
        return len(self.rdoc.pages)


@dataclass
class Batch:
    requests: list[Pending]
    raster_failures: list[tuple[Document, RasterError]]


class BatchAssembler:
    """Pulls rasterized documents from ``items`` and turns them into batches of requests."""

    def __init__(
        self,
        items: Iterator[Outcome],
        prompt: Callable[[RasterizedDoc], Request],
        batch_size: int,
        first_batch_size: int,
        max_batch_pages: int,
        stop: threading.Event,
        stats: RunStats,
        progress: Progress,
    ):
        self.items, self.prompt = items, prompt
        self.max_size, self.max_pages = batch_size, max_batch_pages
        self.size = min(first_batch_size, batch_size)
        self.stop, self.stats, self.progress = stop, stats, progress
        self.carry: list[Pending] = []  # re-asks and a document that did not fit the last batch
        self.exhausted = False

    @property
    def done(self) -> bool:
        """Nothing left to assemble: the input is exhausted and nothing is carried."""
        return self.exhausted and not self.carry

    def next_batch(self) -> Batch:
        """Up to the current size and ``max_batch_pages`` pages, carried documents first; the size
        then doubles up to ``batch_size``."""
        with self.stats.timed("assemble"):
            batch = self._take_carried()
            failures: list[tuple[Document, RasterError]] = []
            if not self.carry:  # the carried ones all fitted: fill up from the input
                self._fill(batch, failures)
        self.size = min(2 * self.size, self.max_size)
        return Batch(batch, failures)

    def _full(self, batch: list[Pending], pages: int, adding: int) -> bool:
        return bool(batch) and (len(batch) >= self.size or pages + adding > self.max_pages)

    def _take_carried(self) -> list[Pending]:
        carried, self.carry = self.carry, []
        batch: list[Pending] = []
        pages = 0
        for i, p in enumerate(carried):  # always at least one, so nothing is stuck
            if self._full(batch, pages, p.pages):
                self.carry = carried[i:]
                break
            batch.append(p)
            pages += p.pages
        return batch

    def _fill(self, batch: list[Pending], failures: list[tuple[Document, RasterError]]) -> None:
        pages = sum(p.pages for p in batch)
        while len(batch) < self.size and pages < self.max_pages and not self.exhausted and not self.stop.is_set():
            try:
                doc, out = next(self.items)
            except StopIteration:
                self.exhausted = True
                return
            except Exception:
                if self.stop.is_set():  # a stop signal also reached the rasterizers: what is left stays pending
                    self.exhausted = True
                    return
                raise
            if isinstance(out, RasterError):
                failures.append((doc, out))
                continue
            self.stats.timings["rasterize_cpu"] += out.seconds
            self.stats.pages += len(out.pages)
            self.progress.pages += len(out.pages)
            with self.stats.timed("prompt"):
                pending = Pending(out, self.prompt(out))
            if batch and pages + pending.pages > self.max_pages:
                self.carry.append(pending)  # first in the next batch
                return
            batch.append(pending)
            pages += pending.pages
