"""The engine protocol: a batch of requests in, one generation per request out.

An engine never raises for one bad request: it returns a ``Generation`` with
``error`` set (``finish_reason == "error"``) for that request and answers the
rest.  It may raise for the whole batch only when the engine itself is broken.

``Engine`` is all an engine must have (``name``, ``generate``, ``close``).  ``EngineBase``
adds the optional capabilities with do-nothing defaults; engines that have one override
it, and ``as_engine_base`` gives any ``Engine`` those defaults, so the runner calls them
without asking whether they exist.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from pipeline.config import EngineConfig
from pipeline.errors import EngineLoadError, PluginError
from pipeline.plugins import resolve_named
from pipeline.records import Generation, Request


@runtime_checkable
class Engine(Protocol):
    """What an engine must have."""

    name: str

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """One ``Generation`` per request, in the same order."""
        ...

    def close(self) -> None: ...


class EngineBase:
    """An engine with every optional capability, each a no-op unless overridden."""

    name: str = "engine"
    #: settings the engine chose itself (derived defaults), written to ``run.json``; an engine
    #: sets its own dict here
    settings: Mapping[str, Any] = MappingProxyType({})

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        raise NotImplementedError

    def close(self) -> None:
        return None

    def prefetch(self, requests: Sequence[Request]) -> None:
        """Take the next batch early, while ``generate`` runs (called from another thread); it is
        sent again to ``generate`` later.  Default: ignore it."""

    def abort_pending(self) -> None:
        """Drop prefetched work that a stopped run will not collect.  Default: nothing to drop."""

    def counters(self) -> Mapping[str, int]:
        """The engine's own counters (requests added, reused prefetches, ...), for logs."""
        return {}


class _WithDefaults(EngineBase):
    """An ``Engine`` that is not an ``EngineBase``: its own methods, the defaults for the rest."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.name = engine.name
        self.settings = dict(getattr(engine, "settings", None) or {})

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        return self.engine.generate(requests)

    def close(self) -> None:
        self.engine.close()

    def prefetch(self, requests: Sequence[Request]) -> None:
        if callable(own := getattr(self.engine, "prefetch", None)):
            own(requests)

    def abort_pending(self) -> None:
        if callable(own := getattr(self.engine, "abort_pending", None)):
            own()

    def counters(self) -> Mapping[str, int]:
        own = getattr(self.engine, "counters", None)
        return dict(own()) if callable(own) else {}


def as_engine_base(engine: Engine) -> EngineBase:
    """``engine`` itself when it is an ``EngineBase``, else a wrapper giving it the defaults."""
    return engine if isinstance(engine, EngineBase) else _WithDefaults(engine)


def _vllm(config: EngineConfig) -> Engine:
    from pipeline.engines.vllm import VLLMEngine  # the only module that imports vllm

    return VLLMEngine(config)


REGISTRY: dict[str, Any] = {"vllm": _vllm}


def load_engine(config: EngineConfig) -> EngineBase:
    """``vllm`` or ``package.module:factory``; the factory is called with the ``EngineConfig``."""
    name = config.name
    try:
        factory = resolve_named(name, REGISTRY, "engine")
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
    return as_engine_base(engine)
