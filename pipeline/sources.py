"""Where a run's documents and pages come from.

A ``Source`` does the first two stages for the runner:

* ``discover(inputs)``: the documents (with their discovery failures), and
* ``rasterize(docs)``: a stream of ``(Document, RasterizedDoc | RasterError)``, produced ahead
  of the engine and bounded in pages, closed with ``close()``.

``LocalSource``: discovery with the identity cache, pages from this machine's worker processes.
``StageSource``: documents and pages read back from a ``docextract rasterize`` stage directory.
``RaySource`` (``pipeline.backends.ray_backend``): pages from Ray Data tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pipeline import fs
from pipeline.config import JobConfig
from pipeline.discover import Discovered, IdentityCache, discover
from pipeline.errors import CouldNotStart, InputError, StageError
from pipeline.feed import Outcome, RasterFeed
from pipeline.rasterize import RasterSettings
from pipeline.records import Document
from pipeline.workers import default_memory_limit, rasterize_stream

log = logging.getLogger(__name__)


class RasterStream(Protocol):
    def __iter__(self) -> Iterator[Outcome]: ...

    def wait_started(self) -> None:
        """Block until the stream produced its first outcome; raise if it could not start."""
        ...

    def close(self) -> None: ...


class Source(Protocol):
    name: str

    def discover(self, inputs: list[str]) -> Discovered: ...

    def rasterize(self, docs: list[Document]) -> RasterStream: ...

    def save_state(self) -> None:
        """Keep what discovery learned (the identity cache), once the run is sure to write."""
        ...


def feed_limits(config: JobConfig) -> tuple[int, int]:
    """Documents and pages the feed may hold ahead: a quarter batch."""
    return config.run.batch_size // 4, config.run.max_batch_pages // 4


class LocalSource:
    """Inputs on this machine or object storage; pages from local worker processes."""

    name = "local"

    def __init__(self, config: JobConfig, out_dir: Path | str):
        self.config, self.out_dir = config, out_dir
        self.settings = RasterSettings.from_config(config.rasterize, config.words_wanted)
        self._identities: IdentityCache | None = None

    def discover(self, inputs: list[str]) -> Discovered:
        self._identities = IdentityCache() if self.config.run.rehash else IdentityCache.load(self.out_dir)
        try:
            found = discover(inputs, cache=self._identities, exclude=[] if fs.is_uri(self.out_dir) else [self.out_dir],
                             follow_symlinks=self.config.discover.follow_symlinks)
        except (InputError, OSError) as e:
            raise CouldNotStart(str(e)) from e
        log.info("identified %d file(s): %d read and hashed, %d unchanged since the last run (identity cache)",
                 found.hashed + found.cached, found.hashed, found.cached)
        return found

    def save_state(self) -> None:
        if self._identities is None:
            return
        try:
            self._identities.save(self.out_dir)
        except OSError as e:  # only a cache: the next run reads every file again
            log.warning("could not save the identity cache: %s", e)

    def rasterize(self, docs: list[Document]) -> RasterFeed:
        cfg = self.config

        def stream() -> Iterator[Outcome]:
            return rasterize_stream(docs, self.settings, workers=cfg.effective_workers(),
                                    timeout_s=cfg.rasterize.timeout_s, memory_limit_bytes=default_memory_limit())

        return RasterFeed(stream, *feed_limits(cfg))


class _Closing:
    """A generator as a ``RasterStream``."""

    def __init__(self, gen: Iterator[Outcome]):
        self._gen = gen

    def __iter__(self) -> Iterator[Outcome]:
        return self._gen

    def wait_started(self) -> None:
        return None  # read lazily: nothing to wait for

    def close(self) -> None:
        close = getattr(self._gen, "close", None)
        if close is not None:
            close()


class StageSource:
    """A stage directory written by ``docextract rasterize``: no discovery, no rendering."""

    name = "stage"

    def __init__(self, config: JobConfig, stage_dir: Path | str):
        from pipeline.stage import check_settings, read_stage

        if fs.is_uri(stage_dir):
            raise CouldNotStart(f"{stage_dir}: a stage directory is a local folder (rasterize writes one; copy it "
                                "here first); outputs (--out) may be object storage")
        self.stage_dir = Path(stage_dir)
        try:
            self._found, self._rows = read_stage(self.stage_dir)
            check_settings(self.stage_dir, RasterSettings.from_config(config.rasterize, config.words_wanted))
        except (StageError, OSError) as e:
            raise CouldNotStart(str(e)) from e

    def discover(self, inputs: list[str]) -> Discovered:
        return self._found

    def save_state(self) -> None:
        return None

    def rasterize(self, docs: list[Document]) -> _Closing:
        from pipeline.stage import stage_items

        return _Closing(stage_items(self.stage_dir, docs, self._rows))
