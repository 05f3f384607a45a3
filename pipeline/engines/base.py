"""The engine protocol: a batch of requests in, one generation per request out.

An engine never raises for one bad request: it returns a ``Generation`` with
``error`` set (``finish_reason == "error"``) for that request and answers the
rest.  It may raise for the whole batch only when the engine itself is broken.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from pipeline.config import EngineConfig
from pipeline.records import Generation, Request


class EngineLoadError(RuntimeError):
    """The engine could not be created; the message says what to install or pass."""


@runtime_checkable
class Engine(Protocol):
    """What the runner needs from an engine.  Optional, looked up with ``getattr``:
    ``prefetch(requests)`` (the next batch, handed over while ``generate`` runs, from another thread)
    and ``abort_pending()`` (drop prefetched work a stopped run will not collect)."""

    name: str

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """One ``Generation`` per request, in the same order."""
        ...

    def close(self) -> None: ...


def optional_method(engine: object, name: str) -> Callable[..., Any] | None:
    """One of an engine's optional methods (``prefetch``, ``abort_pending``, ``counters``), or None
    when this engine has none: wrappers pass them on, and callers skip them, through this."""
    method = getattr(engine, name, None)
    return method if callable(method) else None


def load_engine(config: EngineConfig) -> Engine:
    """``vllm`` or ``package.module:factory``; the factory is called with the ``EngineConfig``."""
    name = config.name
    if name == "vllm":
        from pipeline.engines.vllm import VLLMEngine

        return VLLMEngine(config)
    if ":" not in name:
        raise EngineLoadError(f"unknown engine {name!r}: use 'vllm' or 'package.module:factory'")
    from pipeline.plugins import PluginError, import_object

    try:
        factory = import_object(name, "engine")
    except PluginError as e:
        raise EngineLoadError(str(e)) from e
    if not callable(factory):
        raise EngineLoadError(f"engine {name!r} is not callable")
    params = inspect.signature(factory).parameters
    engine = factory(config) if params else factory()
    missing = [m for m in ("generate", "close") if not callable(getattr(engine, m, None))]
    if missing:
        raise EngineLoadError(f"engine {name!r} does not implement the Engine protocol (missing {', '.join(missing)})")
    if not hasattr(engine, "name"):
        engine.name = name
    return engine
