"""The Ray backend: the same job as ``run_job``, with rasterizing and inference spread over a
Ray cluster.

* **Rasterize** with Ray Data: the documents become a dataset, ``map_batches`` runs
  ``pipeline.workers.rasterize_one`` on them in CPU tasks, and the outcomes stream back to
  the driver (pickled into a bytes column: PIL images travel as raw pixels).  A bad file
  is a value (a failure row), never an exception.  With ``isolate_rasterize`` (default)
  each task rasterizes in a child process with the job's per-document time limit and
  memory cap, as locally, so a file that hangs or crashes the PDF library costs only its
  own row (``timeout``, ``worker_crashed``) instead of failing the Ray task.
* **Generate** with ``RayEngine``: a pool of Ray actors, each owning ONE engine built inside
  the actor from the ``[engine]`` config (``vllm`` or ``module:factory``) with
  ``num_gpus=gpus_per_actor``; a batch is split across the actors and reassembled in order.
  A dead actor is restarted by Ray (``run.engine_restarts`` times) and its call retried.
* **Everything else** (discovery, prompts, validation and re-asks, Parquet parts, run
  manifest, resume by run key, reconcile) is ``pipeline.runner.Runner``'s, in the driver.

``ray_backend(config)`` is what ``pipeline.backends.open_backend`` returns for ``backend = "ray"``.

Discovery (listing and hashing the inputs) runs in the driver, as locally.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import pipeline
from pipeline.backends import Backend
from pipeline.config import EngineConfig, JobConfig
from pipeline.engines.base import EngineBase, load_engine
from pipeline.engines.resilient import is_dead
from pipeline.errors import CouldNotStart, EngineDead, EngineLoadError, RasterError
from pipeline.rasterize import RasterSettings
from pipeline.records import Document, Generation, RasterizedDoc, Request
from pipeline.sources import LocalSource
from pipeline.workers import (
    Outcome,
    RasterFunc,
    RasterPool,
    decode_outcome,
    default_memory_limit,
    encode_outcome,
    rasterize_one,
)

log = logging.getLogger(__name__)

#: Environment variables copied from the driver to the Ray workers when set: object-store
#: endpoint and region, and where Hugging Face models are.  Credentials are
#: NOT forwarded by default (they would show in the cluster's job metadata); a local
#: cluster inherits them from the driver, cluster nodes should have their own (IAM role),
#: or pass ``forward_env=FORWARD_ENV + CREDENTIAL_ENV``.
FORWARD_ENV: tuple[str, ...] = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "HF_HOME",
    "HF_HUB_OFFLINE",
)
CREDENTIAL_ENV: tuple[str, ...] = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


# --------------------------------------------------------------------------- connecting


def worker_runtime_env(forward_env: Sequence[str] = FORWARD_ENV, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``runtime_env`` for our tasks and actors: the forwarded variables, and ``PYTHONPATH``
    pointing at the code the driver runs (this checkout's ``pipeline``/``schemas``/``tests`` and
    the working directory, where ``module:factory`` engines are looked up)."""
    root = str(Path(pipeline.__file__).resolve().parent.parent)
    paths = [root, os.getcwd()] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = {k: os.environ[k] for k in forward_env if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    runtime_env = dict(extra or {})
    runtime_env["env_vars"] = {**env, **runtime_env.get("env_vars", {})}
    return runtime_env


def connect(ray_address: str | None = None, runtime_env: dict[str, Any] | None = None) -> bool:
    """``ray.init`` (a local cluster when ``ray_address`` is None, unless ``RAY_ADDRESS`` is set).
    Returns True when this call started/connected Ray (the caller then shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=ray_address, ignore_reinit_error=True, runtime_env=runtime_env, log_to_driver=True)
    return True


# --------------------------------------------------------------------------- rasterizing


def _rasterize_batch(
    batch: dict[str, np.ndarray],
    settings: RasterSettings,
    timeout_s: float | None,
    memory_limit: int | None,
    func: RasterFunc,
) -> dict[str, np.ndarray]:
    """Ray Data UDF: pickled ``Document`` s in, pickled ``(Document, payload)`` out.

    ``payload`` is ``("ok", RasterizedDoc)`` or ``("err", error_type, message)``.  The memory
    cap defaults to the node's own (``default_memory_limit``), computed where the task runs."""
    docs: list[Document] = [pickle.loads(b) for b in batch["doc"]]
    outcomes: list[Outcome]
    if timeout_s is None:
        outcomes = [func(d, settings) for d in docs]
    else:  # a child process per task: per-document time limit, memory cap, crash isolation
        limit = memory_limit if memory_limit is not None else default_memory_limit()
        with RasterPool(settings, 1, timeout_s, limit, func=func) as pool:
            outcomes = list(pool.imap(docs))
    blobs = [pickle.dumps(encode_outcome(o), protocol=pickle.HIGHEST_PROTOCOL) for o in outcomes]
    return {"outcome": np.array(blobs, dtype=object)}


def _decode(blob: bytes) -> tuple[Document, RasterizedDoc | RasterError]:
    return decode_outcome(pickle.loads(blob))


def ray_raster_items(
    docs: list[Document],
    settings: RasterSettings,
    timeout_s: float | None = 120.0,
    memory_limit: int | None = None,
    docs_per_task: int = 4,
    runtime_env: dict[str, Any] | None = None,
    func: RasterFunc = rasterize_one,
    progress_bars: bool = False,
) -> Iterator[tuple[Document, RasterizedDoc | RasterError]]:
    """Rasterize ``docs`` with Ray Data CPU tasks; yields ``(Document, RasterizedDoc | RasterError)``
    as tasks finish (streamed: memory is bounded by Ray Data's backpressure, not the backlog).

    ``timeout_s=None`` runs ``func`` in the Ray worker itself (no per-document limit)."""
    import ray

    if not docs:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress_bars
    items = [{"doc": pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL)} for d in docs]
    blocks = max(1, math.ceil(len(items) / docs_per_task))
    ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        _rasterize_batch,  # type: ignore[arg-type]
        batch_size=docs_per_task,
        batch_format="numpy",
        fn_kwargs={"settings": settings, "timeout_s": timeout_s, "memory_limit": memory_limit, "func": func},
        num_cpus=1,
        runtime_env=runtime_env,
    )
    for row in ds.iter_rows():
        yield _decode(row["outcome"])


# --------------------------------------------------------------------------- inference


class _EngineActor:
    """Owns one engine, built inside the actor process (so the model loads where it runs)."""

    def __init__(self, config: EngineConfig):
        self.engine: EngineBase | None = None
        self.error: str | None = None
        # The actor takes two calls at once so that a prefetch reaches the engine during a generate;
        # everything else holds this lock: an engine is driven by one thread at a time.
        self._busy = threading.Lock()
        try:
            self.engine = load_engine(config)
        except Exception as e:  # reported by ready(), so the driver can say why
            self.error = f"{type(e).__name__}: {e}"

    def ready(self) -> str | None:
        return self.error

    def _engine(self) -> EngineBase:
        if self.engine is None:
            raise EngineDead(f"the engine did not load in this actor: {self.error}")
        return self.engine

    def prefetch(self, requests: list[Request]) -> None:
        """Runs beside ``generate`` (the actor takes two calls at once): hands the next chunk to the engine."""
        self._engine().prefetch(requests)

    def abort_pending(self) -> None:
        with self._busy:
            self._engine().abort_pending()

    def counters(self) -> dict[str, int]:
        """The engine's own counters (for logs)."""
        return dict(self._engine().counters())

    def generate(self, requests: list[Request]) -> list[Generation]:
        try:
            with self._busy:
                return self._engine().generate(requests)
        except Exception as e:
            if is_dead(e):  # the engine is gone: end the process, Ray restarts the actor and retries
                log.error("engine died in its actor (%s); exiting for Ray to restart it", e)
                os._exit(1)
            raise

    def close(self) -> None:
        if self.engine is not None:
            with self._busy:
                self.engine.close()


class RayEngine(EngineBase):
    """The Engine protocol over a pool of Ray actors, one engine per actor.

    ``generate`` splits a batch into one contiguous chunk per actor, runs the chunks in
    parallel and returns the generations in request order.  An exception raised by an
    engine inside its actor is re-raised here as itself (so ``ResilientEngine`` sees an
    out-of-memory error as one); an actor that is gone for good raises ``EngineDead``.
    Actors start on ``start()`` (or the first ``generate``).

    ``prefetch`` splits the next batch the same way and hands each actor its chunk while it
    is still generating the current one (actors take two calls at once), so each engine fills
    the slots its short answers free.  The chunk is put in Ray's object store once and the
    same reference goes to ``generate`` later: the pages are serialized once, not twice."""

    def __init__(
        self,
        config: EngineConfig,
        num_actors: int = 1,
        gpus_per_actor: float = 0.0,
        cpus_per_actor: float = 1.0,
        max_restarts: int = 1,
        runtime_env: dict[str, Any] | None = None,
        start_timeout_s: float = 1800.0,
    ):
        if num_actors < 1:
            raise ValueError("num_actors must be at least 1")
        self.config = config
        self.num_actors = num_actors
        self.gpus_per_actor = gpus_per_actor
        self.cpus_per_actor = cpus_per_actor
        self.max_restarts = max_restarts
        self.runtime_env = runtime_env
        self.start_timeout_s = start_timeout_s
        self.name = f"ray[{num_actors}x]:{config.name}"
        self.actors: list[Any] = []
        self.load_seconds = 0.0
        self._chunk_refs: dict[tuple[str, ...], Any] = {}  # uids of a prefetched chunk -> its object ref
        self._lock = threading.Lock()  # prefetch comes from the runner's main thread, generate from its engine thread
        self.reused_chunks = 0

    def start(self) -> None:
        """Create the actors and wait until every engine is loaded.  Raises ``EngineLoadError``."""
        if self.actors:
            return
        import time

        import ray

        t0 = time.perf_counter()
        options: dict[str, Any] = {
            "num_cpus": self.cpus_per_actor,
            "num_gpus": self.gpus_per_actor,
            "max_restarts": self.max_restarts,
            "max_task_retries": 1 if self.max_restarts else 0,
            "max_concurrency": 2,  # a prefetch is taken while a generate runs
        }
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        actor_cls = ray.remote(_EngineActor).options(**options)
        self.actors = [actor_cls.remote(self.config) for _ in range(self.num_actors)]
        try:
            errors = ray.get([a.ready.remote() for a in self.actors], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise EngineLoadError(
                f"{self.num_actors} engine actor(s) with {self.gpus_per_actor:g} GPU(s) and {self.cpus_per_actor:g} "
                f"CPU(s) each were not ready within {self.start_timeout_s:g}s; cluster resources: "
                f"{ray.cluster_resources()}"
            ) from None
        except ray.exceptions.RayError as e:
            self.close()
            raise EngineLoadError(f"engine actor failed to start: {e}") from e
        failed = [e for e in errors if e]
        if failed:
            self.close()
            raise EngineLoadError(f"engine {self.config.name!r} could not be loaded in a Ray actor: {failed[0]}")
        self.load_seconds = time.perf_counter() - t0

    def _chunks(self, requests: list[Request]) -> list[list[Request]]:
        size = math.ceil(len(requests) / min(len(self.actors), len(requests)))
        return [requests[i : i + size] for i in range(0, len(requests), size)]

    def prefetch(self, requests: Sequence[Request]) -> None:
        import ray

        requests = list(requests)
        if not requests or not self.actors:
            return
        for actor, chunk in zip(self.actors, self._chunks(requests), strict=False):  # fewer chunks than actors
            ref = ray.put(chunk)
            with self._lock:
                self._chunk_refs[tuple(r.uid for r in chunk)] = ref
                while len(self._chunk_refs) > 4 * len(self.actors):  # never collected (a retry split otherwise)
                    self._chunk_refs.pop(next(iter(self._chunk_refs)))
            actor.prefetch.remote(ref)  # fire and forget: generate() sends the chunk (or its ref) anyway

    def abort_pending(self) -> None:
        import ray

        with self._lock:
            self._chunk_refs.clear()
        with contextlib.suppress(Exception):
            ray.get([a.abort_pending.remote() for a in self.actors], timeout=60)

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        import ray

        requests = list(requests)
        if not requests:
            return []
        self.start()
        refs = []
        for actor, chunk in zip(self.actors, self._chunks(requests), strict=False):  # fewer chunks than actors
            with self._lock:
                ref = self._chunk_refs.pop(tuple(r.uid for r in chunk), None)
            if ref is not None:
                self.reused_chunks += 1
            refs.append(actor.generate.remote(chunk if ref is None else ref))
        try:
            results = ray.get(refs)
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
            # One actor failed; the others may still be generating. Let them finish before the error goes
            # up, so that a retry never overlaps them.
            with contextlib.suppress(Exception):
                ray.wait(refs, num_returns=len(refs), timeout=self.start_timeout_s)
            if isinstance(e, ray.exceptions.RayActorError):
                raise EngineDead(f"engine actor died: {e}") from e
            cause = getattr(e, "cause", None)
            raise (cause if isinstance(cause, BaseException) else e) from None
        return [g for chunk in results for g in chunk]

    def close(self) -> None:
        """Close the engines (best effort) and end the actors."""
        import ray

        actors, self.actors = self.actors, []
        if not actors:
            return
        with contextlib.suppress(Exception):
            ray.get([a.close.remote() for a in actors], timeout=60)
        for a in actors:
            with contextlib.suppress(Exception):
                ray.kill(a)


# --------------------------------------------------------------------------- the backend


class RaySource(LocalSource):
    """Discovery in the driver (as locally, identity cache included); pages from Ray Data tasks."""

    name = "ray"

    def __init__(self, config: JobConfig, out_dir: Path | str, runtime_env: dict[str, Any],
                 raster_func: RasterFunc = rasterize_one):
        super().__init__(config, out_dir)
        self.runtime_env, self.raster_func = runtime_env, raster_func

    def rasterize(self, docs: list[Document]) -> Any:
        from pipeline.sources import _Closing

        cfg = self.config
        return _Closing(ray_raster_items(docs, self.settings, timeout_s=cfg.rasterize.timeout_s,
                                         docs_per_task=cfg.ray.docs_per_task, runtime_env=self.runtime_env,
                                         func=self.raster_func, progress_bars=cfg.run.progress))


def ray_backend(
    config: JobConfig,
    out_dir: Path | str,
    raster_func: RasterFunc = rasterize_one,
    forward_env: Sequence[str] = FORWARD_ENV,
    runtime_env: dict[str, Any] | None = None,
) -> Backend:
    """The job on a Ray cluster (``[ray]``): same outputs, exit codes and resume as locally.

    ``ray.address``: none starts a local cluster (or joins the one ``RAY_ADDRESS`` names, or uses
    Ray already initialised by the caller), ``"auto"``/``"ray://host:10001"`` a running one.
    ``ray.engine_actors`` engines run in parallel, each with ``ray.gpus_per_actor`` GPUs (fractions
    allowed) and ``ray.cpus_per_actor`` CPUs; ``ray.docs_per_task`` documents per Ray Data task.
    ``runtime_env``: extra Ray runtime environment for our tasks and actors (e.g. ``{"py_modules":
    [...]}`` when the cluster lacks this code); the driver's checkout is put on ``PYTHONPATH`` and
    ``forward_env`` variables are copied.  ``raster_func``: the per-document rasterizer run in the
    tasks (a module-level function)."""
    import ray

    env = worker_runtime_env(forward_env, runtime_env)
    started = connect(config.ray.address, env)
    r = config.ray
    engine = RayEngine(config.engine_config(), num_actors=r.engine_actors, gpus_per_actor=r.gpus_per_actor,
                       cpus_per_actor=r.cpus_per_actor, max_restarts=config.run.engine_restarts, runtime_env=env)

    def load() -> EngineBase:
        try:
            engine.start()
        except EngineLoadError as e:
            raise CouldNotStart(str(e)) from e
        return engine

    def close() -> None:
        engine.close()
        if started:
            ray.shutdown()

    source = RaySource(config, out_dir, env, raster_func)
    # no rebuild here: Ray restarts a dead actor itself (``run.engine_restarts``)
    return Backend("ray", source, load, None, engine.name, close, owns_engine=False)  # close() ends the actors
