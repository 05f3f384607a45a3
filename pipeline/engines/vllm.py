"""Offline vLLM engine, fed continuously.  The only module that imports vLLM.

Profiles:
* ``gpu``: vLLM's defaults (engine core in its own process, compiled graphs, CUDA graphs).
* ``cpu``: vLLM's CPU build: eager mode, engine core in this process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), a small KV cache (``VLLM_CPU_KVCACHE_SPACE``).
  Measured here: engine start 8 s instead of 74-139 s.

Feeding: requests are added one by one with ``LLM.enqueue_chat`` and the engine is stepped
(``LLM.llm_engine.step()``) until the batch asked for is answered.  ``prefetch`` hands over the
next batch from another thread; its requests are added at the next step, so vLLM's scheduler
fills the slots the current batch's short answers free instead of idling through the batch's
longest answer (with one ``LLM.chat`` per batch, occupancy falls towards the end of every batch).

Bad requests: vLLM checks a request when it is added (an image the processor rejects, a prompt
longer than ``max_model_len``) and raises for that request alone, so it becomes a
``request_invalid`` generation and nothing else is affected.  Anything raised while stepping is an
engine error: every request in flight is aborted and the error goes up to the retry layer
(``ResilientEngine``: backoff, OOM halving, rebuild); answers already finished are kept.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Sequence
from typing import Any

from pipeline.config import EngineConfig
from pipeline.engines.base import EngineBase
from pipeline.errors import EngineLoadError
from pipeline.records import ErrorType, Generation, Request

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "vLLM is not installed. On a GPU machine: pip install 'docextract[vllm]'. "
    "On a CPU-only machine: bash scripts/setup (installs vLLM's CPU build, see README 'vLLM on a CPU')."
)


def cpu_environment(config: EngineConfig) -> dict[str, str]:
    """Environment variables the CPU profile needs; set before vLLM is imported."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }


def llm_kwargs(config: EngineConfig) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` built from the job's engine config."""
    cpu = config.profile == "cpu"
    kwargs: dict[str, Any] = {
        "model": config.model,
        "dtype": config.dtype,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization or (0.5 if cpu else 0.9),
        "enforce_eager": cpu if config.enforce_eager is None else config.enforce_eager,
        "enable_prefix_caching": config.enable_prefix_caching,
        "trust_remote_code": config.trust_remote_code,
        "seed": config.seed,
        "limit_mm_per_prompt": {"image": config.max_images, "video": 0},
        "structured_outputs_config": {
            "backend": config.structured_outputs_backend,
            "disable_any_whitespace": config.disable_any_whitespace,
        },
    }
    if config.mm_min_pixels or config.mm_max_pixels:
        mm = {}
        if config.mm_min_pixels:
            mm["min_pixels"] = config.mm_min_pixels
        if config.mm_max_pixels:
            mm["max_pixels"] = config.mm_max_pixels
        kwargs["mm_processor_kwargs"] = mm
    if config.quantization:
        kwargs["quantization"] = config.quantization
    if config.max_model_len:
        kwargs["max_model_len"] = config.max_model_len
    if config.max_num_seqs:
        kwargs["max_num_seqs"] = config.max_num_seqs
    if config.download_dir:
        kwargs["download_dir"] = config.download_dir
    kwargs.update(config.extra)
    return kwargs


def to_vllm_messages(request: Request) -> list[dict[str, Any]]:
    """Our neutral image parts -> vLLM's ``image_pil`` parts (no encoding round trip)."""
    out = []
    for m in request.messages:
        content = m["content"]
        if isinstance(content, list):
            parts = []
            for p in content:
                if p.get("type") == "image":
                    parts.append({"type": "image_pil", "image_pil": p["image"]})
                else:
                    parts.append(p)
            out.append({"role": m["role"], "content": parts})
        else:
            out.append({"role": m["role"], "content": content})
    return out


def sampling_params(request: Request) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    s = request.sampling
    return SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        seed=s.seed,
        structured_outputs=StructuredOutputsParams(json=request.json_schema),
    )


def _describe_load_failure(config: EngineConfig, exc: BaseException) -> str:
    model = config.model
    msg = f"{type(exc).__name__}: {exc}"
    if not os.path.isdir(model):
        cached = False
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = isinstance(try_to_load_from_cache(model, "config.json"), str)
        except Exception:
            pass
        if not cached:
            return (
                f"could not load model {model!r}: its weights are not in the Hugging Face cache and could not be "
                f"downloaded ({msg}). Pass --model /path/to/local/checkpoint, or pre-fetch with "
                f"'huggingface-cli download {model}' on a machine with access."
            )
    try:
        from vllm.platforms import current_platform

        if not getattr(current_platform, "device_type", ""):
            return (
                f"could not load model {model!r}: vLLM found no GPU and this is not vLLM's CPU build ({msg}). "
                "Run on a GPU machine, or install the CPU build (bash scripts/setup) and pass --profile cpu."
            )
    except Exception:
        pass
    return f"could not load model {model!r}: {msg}"


class VLLMEngine(EngineBase):
    name = "vllm"

    def __init__(self, config: EngineConfig):
        self.config = config
        if config.profile == "cpu":
            for k, v in cpu_environment(config).items():
                os.environ.setdefault(k, v)
        try:
            import vllm
        except ImportError as e:
            raise EngineLoadError(f"{INSTALL_HINT} ({e})") from e
        self.vllm_version = getattr(vllm, "__version__", "unknown")
        t0 = time.perf_counter()
        try:
            self.llm = vllm.LLM(**llm_kwargs(config))
        except Exception as e:
            raise EngineLoadError(_describe_load_failure(config, e)) from e
        self.load_seconds = time.perf_counter() - t0
        self.calls = 0
        self.rejected = 0  # requests vLLM refused (request_invalid)
        self.added = 0  # requests added to vLLM
        self._prefetched: queue.SimpleQueue[list[Request]] = queue.SimpleQueue()
        self._in_flight: dict[str, tuple[Request, str, float]] = {}  # vLLM request id -> (request, internal id, added)
        self._in_flight_uids: set[str] = set()  # Request.uid of the requests in flight
        self._done: dict[str, Generation] = {}  # Request.uid -> answer not yet collected by generate()
        self._collected: dict[str, None] = {}  # uids answered and collected lately (ordered: oldest first)

    # -- feeding -----------------------------------------------------------------------

    def prefetch(self, requests: Sequence[Request]) -> None:
        """The next batch, handed over from another thread while ``generate`` runs: added at the next
        step.  Only an optimisation: ``generate`` adds whatever of its batch is not in flight yet."""
        self._prefetched.put(list(requests))

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        if not requests:
            return []
        self.calls += 1
        engine = self.llm.llm_engine
        try:
            for r in requests:  # this batch first: vLLM schedules in arrival order
                self._add(r)
            self._add_prefetched()
            while not all(self._is_done(r) for r in requests):
                if not engine.has_unfinished_requests():
                    raise RuntimeError("vLLM has no unfinished requests, but some of this batch are unanswered")
                for out in engine.step():
                    if out.finished:
                        self._finished(out)
                self._add_prefetched()
        except BaseException:
            self._abort_in_flight()
            raise
        answers = [self._done[r.uid] for r in requests]
        for r in requests:
            self._done.pop(r.uid, None)
            self._collected[r.uid] = None
        while len(self._collected) > 8192:  # enough to outlive any late prefetch of a batch
            self._collected.pop(next(iter(self._collected)))
        return answers

    def _is_done(self, r: Request) -> bool:
        return r.uid in self._done

    def _take_prefetched(self) -> list[Request]:
        """Every request handed over by ``prefetch`` since the last call, in order."""
        out: list[Request] = []
        while True:
            try:
                out.extend(self._prefetched.get_nowait())
            except queue.Empty:
                return out

    def _add_prefetched(self) -> None:
        for r in self._take_prefetched():
            self._add(r)

    def _add(self, r: Request) -> None:
        """Add one request unless it is in flight or answered; a request vLLM rejects is answered
        with ``request_invalid`` (its own row), an engine failure raises."""
        if r.uid in self._in_flight_uids or self._is_done(r) or r.uid in self._collected:
            return  # in flight, answered, or answered and collected (a prefetch that arrived late)
        try:
            ids = self.llm.enqueue_chat([to_vllm_messages(r)], sampling_params=[sampling_params(r)], use_tqdm=False)
        except Exception as e:
            if _engine_is_dead(e) or not _is_request_error(e):
                raise
            log.warning("request for %s rejected by vLLM: %s", r.doc_id[:12], e)
            self.rejected += 1
            self._done[r.uid] = Generation(
                r.doc_id, "", "error", error=f"{type(e).__name__}: {e}"[:2000], error_type=ErrorType.REQUEST_INVALID
            )
            return
        internal = ids[0]
        self._in_flight[_external_id(internal)] = (r, internal, time.perf_counter())
        self._in_flight_uids.add(r.uid)
        self.added += 1

    def _finished(self, out: Any) -> None:
        got = self._in_flight.pop(out.request_id, None)
        if got is None:
            return  # not ours (or aborted meanwhile)
        r, _, t0 = got
        self._in_flight_uids.discard(r.uid)
        comp = out.outputs[0] if out.outputs else None
        self._done[r.uid] = Generation(
            doc_id=r.doc_id,
            text=comp.text if comp else "",
            finish_reason=(comp.finish_reason or "unknown") if comp else "error",
            prompt_tokens=len(out.prompt_token_ids or []),
            output_tokens=len(comp.token_ids) if comp else 0,
            latency_s=time.perf_counter() - t0,
        )

    def abort_pending(self) -> None:
        """Drop everything not collected by a ``generate`` call (prefetched work of a run that stopped
        early), so the next caller of this ``LLM`` does not step or receive it."""
        self._abort_in_flight()
        self._done.clear()

    def _abort_in_flight(self) -> None:
        internal = [i for _, i, _ in self._in_flight.values()]
        self._in_flight.clear()
        self._in_flight_uids.clear()
        self._take_prefetched()  # dropped: prefetched batches are not added now; their generate() adds them
        if internal and self.llm is not None:
            try:
                self.llm.llm_engine.abort_request(internal, internal=True)
            except Exception:  # a dead engine: the rebuild replaces it
                log.debug("aborting requests after an engine error raised", exc_info=True)

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.abort_pending()
        self.llm = None
        try:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None)
            if callable(shutdown):
                shutdown()
        except Exception:  # shutting down must never mask the run's outcome
            log.debug("vLLM shutdown raised", exc_info=True)


def _external_id(internal: str) -> str:
    """``LLM.enqueue_chat`` returns the engine's internal id (``"7-1f3a9c2e"``); outputs carry the
    external one (``"7"``)."""
    return internal.split("-", 1)[0]


def _is_request_error(e: BaseException) -> bool:
    """The request itself was rejected (bad image, prompt too long), as opposed to the engine failing."""
    if isinstance(e, (ValueError, TypeError)):
        return True
    try:
        from vllm.exceptions import VLLMValidationError  # not a ValueError subclass in vLLM 0.3x
    except ImportError:
        return type(e).__name__ == "VLLMValidationError"
    return isinstance(e, VLLMValidationError)


def _engine_is_dead(e: BaseException) -> bool:
    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:
        return False
    return isinstance(e, EngineDeadError)
