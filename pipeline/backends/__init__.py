"""Where the work runs: the one place that turns ``backend = "local" | "ray"`` (and a stage
directory for ``extract``) into a source of pages and an engine.  ``run_job`` (the Python API)
and the CLI both go through ``open_backend``.

* ``local``: pages from this machine's worker processes (``LocalSource``) or a stage directory
  (``StageSource``); the engine from ``[engine]`` (``vllm`` or ``module:factory``), rebuilt from
  the same config if it dies.
* ``ray``: pages from Ray Data tasks, one engine per Ray actor (``pipeline.backends.ray_backend``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import JobConfig
from pipeline.engines.base import Engine, EngineBase, as_engine_base, load_engine
from pipeline.errors import CouldNotStart, EngineLoadError
from pipeline.sources import LocalSource, Source, StageSource


@dataclass
class Backend:
    name: str
    source: Source
    load_engine: Callable[[], EngineBase]  # raises CouldNotStart; called once, after rasterizing started
    rebuild_engine: Callable[[], Engine] | None  # a replacement for an engine that died, if this backend makes one
    engine_name: str
    close: Callable[[], None] = field(default=lambda: None)
    owns_engine: bool = True  # False: the caller's engine object (or closed by ``close``), left open by the run


def local_backend(
    config: JobConfig,
    out_dir: Path | str,
    stage_dir: Path | str | None = None,
    engine: Engine | None = None,
    engine_factory: Callable[[], Engine] | None = None,
) -> Backend:
    source: Source = StageSource(config, stage_dir) if stage_dir is not None else LocalSource(config, out_dir)
    if engine is not None:  # the caller's engine; rebuilt only with the caller's factory
        given = as_engine_base(engine)
        return Backend("local", source, lambda: given, engine_factory, given.name, owns_engine=False)

    def load() -> EngineBase:
        try:
            return load_engine(config.engine_config())
        except EngineLoadError as e:
            raise CouldNotStart(str(e)) from e

    return Backend("local", source, load, engine_factory or load, config.engine.name)


def open_backend(
    config: JobConfig,
    out_dir: Path | str,
    stage_dir: Path | str | None = None,
    engine: Engine | None = None,
    engine_factory: Callable[[], Engine] | None = None,
) -> Backend:
    if config.backend == "ray":
        if stage_dir is not None:
            raise CouldNotStart("extract from a stage directory runs on the local backend only")
        if engine is not None:
            raise CouldNotStart("backend 'ray' builds its engines in Ray actors from [engine]; pass no engine object")
        from pipeline.backends.ray_backend import ray_backend

        return ray_backend(config, out_dir)
    return local_backend(config, out_dir, stage_dir, engine, engine_factory)
