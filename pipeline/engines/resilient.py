"""Engine faults handled in one place, for any engine.

* transient errors (anything not below): retried with exponential backoff (tenacity), bounded;
* out of memory: the batch is halved and each half retried, down to single requests;
* a dead engine: closed, rebuilt once with its factory, and the unfinished batch resubmitted;
* a persistent (non-fatal) error: the affected documents get ``engine_error`` generations and the run goes on;
* a dead engine that cannot be rebuilt: ``EngineUnavailable``, and the runner stops with the rest pending.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from pipeline.engines.base import Engine, EngineBase, as_engine_base
from pipeline.errors import EngineDead, EngineUnavailable
from pipeline.records import ErrorType, Generation, Request

log = logging.getLogger(__name__)




def is_oom(e: BaseException) -> bool:
    name = type(e).__name__
    text = str(e).lower()
    return name in ("OutOfMemoryError", "MemoryError") or "out of memory" in text


def is_dead(e: BaseException) -> bool:
    if isinstance(e, EngineDead):
        return True
    return type(e).__name__ in ("EngineDeadError", "EngineDead")


class ResilientEngine(EngineBase):
    """Wraps an engine; ``factory`` builds a replacement when the engine dies."""

    def __init__(
        self,
        engine: Engine,
        factory: Callable[[], Engine] | None = None,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_restarts: int = 1,
    ):
        self.engine = engine  # as given (or as the factory made it)
        self._with_defaults = as_engine_base(engine)
        self.factory = factory
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_restarts = max_restarts
        self.restarts = 0
        self.transient_retries = 0
        self.oom_splits = 0
        self.name = self._with_defaults.name
        self.settings = self._with_defaults.settings

    def prefetch(self, requests: Sequence[Request]) -> None:
        """Pass the next batch on to an engine that can take it early (see ``VLLMEngine.prefetch``)."""
        self._with_defaults.prefetch(requests)

    def abort_pending(self) -> None:
        self._with_defaults.abort_pending()

    def counters(self) -> dict[str, int]:
        return {
            **self._with_defaults.counters(),
            "restarts": self.restarts,
            "transient_retries": self.transient_retries,
            "oom_splits": self.oom_splits,
        }

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        return self._generate(list(requests))

    def _call(self, requests: list[Request]) -> list[Generation]:
        def transient(e: BaseException) -> bool:
            return not (is_oom(e) or is_dead(e))

        retrying = Retrying(
            retry=retry_if_exception(transient),
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            reraise=True,
            before_sleep=lambda rs: self._count_retry(rs.outcome.exception() if rs.outcome else None),
        )
        return retrying(self.engine.generate, requests)

    def _count_retry(self, e: BaseException | None) -> None:
        self.transient_retries += 1
        log.warning("engine error, retrying: %s", e)

    def _generate(self, requests: list[Request]) -> list[Generation]:
        try:
            gens = self._call(requests)
            if len(gens) != len(requests):
                raise RuntimeError(f"engine returned {len(gens)} generations for {len(requests)} requests")
            return gens
        except RetryError as e:  # pragma: no cover - reraise=True makes tenacity raise the original
            return self._fail(requests, e)
        except Exception as e:
            if is_dead(e) and self.factory is not None and self.restarts < self.max_restarts:
                self.restarts += 1
                log.error("engine died (%s); rebuilding it and resubmitting %d requests", e, len(requests))
                try:
                    self.engine.close()
                except Exception:
                    pass
                try:
                    self.engine = self.factory()
                    self._with_defaults = as_engine_base(self.engine)
                    self.settings = self._with_defaults.settings
                except Exception as e2:
                    raise EngineUnavailable(f"engine died ({e}) and could not be rebuilt: {e2}") from e2
                return self._generate(requests)
            if is_dead(e):
                raise EngineUnavailable(f"engine died and the restart budget ({self.max_restarts}) is used up: {e}") from e
            if is_oom(e) and len(requests) > 1:
                self.oom_splits += 1
                mid = len(requests) // 2
                log.warning("out of memory on a batch of %d; halving", len(requests))
                return self._generate(requests[:mid]) + self._generate(requests[mid:])
            return self._fail(requests, e)

    def _fail(self, requests: list[Request], e: BaseException, prefix: str = "engine failed") -> list[Generation]:
        msg = f"{prefix}: {type(e).__name__}: {e}"[:2000]
        log.error("%s (%d documents become engine_error failures)", msg, len(requests))
        return [Generation(r.doc_id, "", "error", error=msg, error_type=ErrorType.ENGINE_ERROR) for r in requests]

    def close(self) -> None:
        self.engine.close()
