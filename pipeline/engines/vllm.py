"""Offline vLLM engine, fed continuously.  The only module that imports vLLM.

Profiles:
* ``gpu``: vLLM's defaults (engine core in its own process, compiled graphs, CUDA graphs).
* ``cpu``: vLLM's CPU build: eager mode, engine core in this process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), a small KV cache (``VLLM_CPU_KVCACHE_SPACE``).
  Measured here: engine start 8 s instead of 74-139 s.
* ``auto`` (the default): ``cpu`` where vLLM's own platform detection
  (``vllm.platforms.current_platform``) finds the CPU platform, else ``gpu``.

Context: ``engine.max_model_len`` unset means the smaller of 16384 and the model's own context
(read from its ``config.json``, in a local directory or the Hugging Face cache, never downloaded).
What was chosen, and why, is in ``VLLMEngine.settings``.

Feeding: requests are added one by one with ``LLM.enqueue_chat`` and the engine is stepped
(``LLM.llm_engine.step()``) until the batch asked for is answered.  ``prefetch`` hands over the
next batch from another thread; its requests are added at the next step, so vLLM's scheduler
fills the slots the current batch's short answers free instead of idling through the batch's
longest answer (with one ``LLM.chat`` per batch, occupancy falls towards the end of every batch).

Fitting: before a request is added its prompt is counted the way vLLM will count it (the chat
template rendered by vLLM's renderer and the engine's tokenizer, plus Qwen2.5-VL's image tokens);
a document that does not fit ``max_model_len`` with ``max_tokens`` left for the answer gets smaller
pages, then fewer (``pipeline.fit``), and says so in ``Generation.warnings``.

Bad requests: vLLM checks a request when it is added (an image the processor rejects, a prompt
longer than ``max_model_len``) and raises for that request alone, so it becomes a
``request_invalid`` generation and nothing else is affected; so does a document that cannot fit.
Anything raised while stepping is an engine error: every request in flight is aborted and the
error goes up to the retry layer (``ResilientEngine``: backoff, OOM halving, rebuild); answers
already finished are kept.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from pipeline.confidence import sampled_logprobs
from pipeline.config import EngineConfig
from pipeline.engines.base import EngineBase
from pipeline.engines.context import resolve_max_model_len
from pipeline.errors import EngineLoadError
from pipeline.fit import Fit, fit_request, pixel_floor, qwen_vl_image_tokens
from pipeline.records import ErrorType, Generation, Request

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "vLLM is not installed. On a GPU machine: pip install 'docextract[vllm]'. "
    "On a CPU-only machine: bash scripts/setup (installs vLLM's CPU build, see README 'vLLM on a CPU')."
)


#: Model types whose image tokens ``pipeline.fit`` counts (Qwen2-VL's rule); others are not fitted.
FITTED_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl"})


def resolve_profile(config: EngineConfig) -> tuple[str, str]:
    """``gpu`` or ``cpu``, and why: ``auto`` asks vLLM's platform detection."""
    if config.profile != "auto":
        return config.profile, "engine.profile"
    try:
        from vllm.platforms import current_platform

        is_cpu = current_platform.is_cpu()
        name = current_platform.device_type or "unspecified (no GPU found, not the CPU build)"
    except Exception as e:  # an odd platform: vLLM itself will say more when the engine is built
        return "gpu", f"auto: vLLM's platform could not be detected ({type(e).__name__}: {e})"
    return ("cpu" if is_cpu else "gpu"), f"auto: vLLM platform is {name}"


def resolve_settings(config: EngineConfig) -> tuple[EngineConfig, dict[str, Any]]:
    """The engine config with ``profile`` and ``max_model_len`` resolved, and what was chosen and why."""
    profile, profile_source = resolve_profile(config)
    max_model_len, max_model_len_source = resolve_max_model_len(config)
    settings = {
        "max_model_len": max_model_len,
        "max_model_len_source": max_model_len_source,
        "profile": profile,
        "profile_source": profile_source,
    }
    return config.model_copy(update={"profile": profile, "max_model_len": max_model_len}), settings


def cpu_environment(config: EngineConfig) -> dict[str, str]:
    """Environment variables the CPU profile needs; set before vLLM is imported."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }


def llm_kwargs(config: EngineConfig) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` built from the job's engine config, its profile resolved
    (``resolve_settings``)."""
    if config.profile not in ("gpu", "cpu"):
        raise ValueError(f"engine.profile {config.profile!r} is not resolved: pass the config from resolve_settings")
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


def sampling_params(request: Request, logprobs: bool = False) -> Any:
    """vLLM's sampling for one request; ``logprobs``: the sampled token's log-probability at every step.

    ``logprobs=0`` asks for the sampled token only (no top-k alternatives), in vLLM's flat form (a few
    lists per request instead of a dict per token).  vLLM 0.32 applies the structured-output bitmask to
    the logits (``apply_grammar_bitmask``, v1/worker/gpu_model_runner.py ``sample_tokens``) before the
    sampler computes logprobs from them (v1/sample/sampler.py ``Sampler.forward``), so every
    ``logprobs_mode`` is renormalised over the tokens the schema allows; the default ``raw_logprobs``
    is taken before temperature and top-p, so a re-ask at another temperature scores on the same scale."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    s = request.sampling
    extra: dict[str, Any] = {"logprobs": 0, "flat_logprobs": True} if logprobs else {}
    return SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        seed=s.seed,
        structured_outputs=StructuredOutputsParams(json=request.json_schema),
        **extra,
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
                "Run on a GPU machine, or install the CPU build (bash scripts/setup): the auto profile picks cpu there."
            )
    except Exception:
        pass
    return f"could not load model {model!r}: {msg}"


class PromptCounter:
    """Counts a request's prompt tokens as vLLM will (``pipeline.fit.TokenCounter``): the chat template
    rendered by vLLM's own renderer and tokenized by the engine's tokenizer, image placeholders left out,
    plus Qwen2-VL's image tokens with the processor's pixel bounds (the LLM's ``mm_processor_kwargs``
    included).  Checked against vLLM's ``prompt_token_ids`` in tests/test_vllm_engine.py."""

    def __init__(self, llm: Any, min_pixels: int, max_pixels: int):
        from vllm.renderers import ChatParams

        self.llm = llm
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.image_token_id = getattr(llm.llm_engine.model_config.hf_config, "image_token_id", None)
        kwargs = {"add_generation_prompt": True, "continue_final_message": False, "tools": None, "tokenize": False}
        self.params = ChatParams(chat_template=getattr(llm, "chat_template", None), chat_template_kwargs=kwargs)

    def text_tokens(self, request: Request) -> int:
        _, prompt = self.llm.renderer.render_messages(to_vllm_messages(request), self.params)
        ids = prompt.get("prompt_token_ids")
        if ids is None:
            ids = self.llm.get_tokenizer().encode(prompt["prompt"], add_special_tokens=False)
        return len(ids) - (ids.count(self.image_token_id) if self.image_token_id is not None else 0)

    def image_tokens(self, width: int, height: int) -> int:
        return qwen_vl_image_tokens(width, height, self.min_pixels, self.max_pixels)


def prompt_counter(llm: Any, config: EngineConfig) -> tuple[PromptCounter | None, str]:
    """The counter the fit uses, or None (and why) for a model whose image tokens it cannot count."""
    model_type = getattr(llm.llm_engine.model_config.hf_config, "model_type", "")
    if model_type not in FITTED_MODEL_TYPES:
        return None, f"off: image tokens of model type {model_type!r} are not counted here; vLLM checks the length"
    size = llm.renderer.get_mm_processor().info.get_image_processor().size
    low = getattr(size, "shortest_edge", None) or config.mm_min_pixels
    high = getattr(size, "longest_edge", None) or config.mm_max_pixels
    if not (low and high):
        return None, "off: the image processor's pixel bounds are unknown; vLLM checks the length"
    return PromptCounter(llm, low, high), f"on: {low:,}-{high:,} px per image"


class _InFlight(NamedTuple):
    request: Request
    internal_id: str
    added: float  # perf_counter
    fit: Fit


class VLLMEngine(EngineBase):
    name = "vllm"

    def __init__(self, config: EngineConfig):
        self.config = config
        try:
            import vllm
        except ImportError as e:
            raise EngineLoadError(f"{INSTALL_HINT} ({e})") from e
        resolved, self.settings = resolve_settings(config)  # what was chosen and why (run.json)
        if resolved.profile == "cpu":  # read when the engine is built, not when vllm is imported
            for k, v in cpu_environment(resolved).items():
                os.environ.setdefault(k, v)
        self.vllm_version = getattr(vllm, "__version__", "unknown")
        t0 = time.perf_counter()
        try:
            self.llm: Any = vllm.LLM(**llm_kwargs(resolved))
        except Exception as e:
            raise EngineLoadError(_describe_load_failure(resolved, e)) from e
        self.load_seconds = time.perf_counter() - t0
        self.max_model_len: int = self.llm.llm_engine.model_config.max_model_len
        self.fit_floor_pixels = pixel_floor(config.mm_min_pixels)
        self.counter, fit = prompt_counter(self.llm, resolved)
        self.settings.update(max_model_len=self.max_model_len, fit=fit, fit_floor_pixels=self.fit_floor_pixels)
        self.calls = 0
        self.rejected = 0  # requests vLLM refused or that could not fit (request_invalid)
        self.added = 0  # requests added to vLLM
        self._prefetched: queue.SimpleQueue[list[Request]] = queue.SimpleQueue()
        self._in_flight: dict[str, _InFlight] = {}  # vLLM request id -> what was added
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
        """Add one request unless it is in flight or answered; a request that cannot fit or that vLLM
        rejects is answered with ``request_invalid`` (its own row), an engine failure raises."""
        if r.uid in self._in_flight_uids or self._is_done(r) or r.uid in self._collected:
            return  # in flight, answered, or answered and collected (a prefetch that arrived late)
        fit = self._fit(r)
        if fit.request is None:
            self._reject(r, fit.error or "the request does not fit engine.max_model_len")
            return
        try:
            messages = [to_vllm_messages(fit.request)]
            params = [sampling_params(r, self.config.logprobs)]
            ids = self.llm.enqueue_chat(messages, sampling_params=params, use_tqdm=False)
        except Exception as e:
            if _engine_is_dead(e) or not _is_request_error(e):
                raise
            self._reject(r, f"{type(e).__name__}: {e}")
            return
        internal = ids[0]
        self._in_flight[_external_id(internal)] = _InFlight(r, internal, time.perf_counter(), fit)
        self._in_flight_uids.add(r.uid)
        self.added += 1

    def _fit(self, r: Request) -> Fit:
        """``r`` made to fit ``max_model_len`` (``pipeline.fit``); ``r`` unchanged when the fit is off or
        cannot count it (an image the processor will reject: vLLM says why when it is added)."""
        if self.counter is None:
            return Fit(r, 0)
        try:
            return fit_request(r, self.counter, self.max_model_len, self.fit_floor_pixels)
        except Exception:
            log.debug("could not count the prompt for %s; vLLM checks it", r.doc_id[:12], exc_info=True)
            return Fit(r, 0)

    def _reject(self, r: Request, message: str) -> None:
        log.warning("request for %s rejected: %s", r.doc_id[:12], message)
        self.rejected += 1
        error_type = ErrorType.REQUEST_INVALID
        self._done[r.uid] = Generation(r.doc_id, "", "error", error=message[:2000], error_type=error_type)

    def _finished(self, out: Any) -> None:
        got = self._in_flight.pop(out.request_id, None)
        if got is None:
            return  # not ours (or aborted meanwhile)
        r, fit = got.request, got.fit
        self._in_flight_uids.discard(r.uid)
        comp = out.outputs[0] if out.outputs else None
        text = comp.text if comp else ""
        scored = sampled_logprobs(text, comp.logprobs) if comp and self.config.logprobs else None
        if comp and comp.logprobs and scored is None:
            log.debug("the sampled tokens of %s do not spell its text: no field scores", r.doc_id[:12])
        self._done[r.uid] = Generation(
            doc_id=r.doc_id,
            text=text,
            finish_reason=(comp.finish_reason or "unknown") if comp else "error",
            prompt_tokens=len(out.prompt_token_ids or []),
            output_tokens=len(comp.token_ids) if comp else 0,
            latency_s=time.perf_counter() - got.added,
            warnings=list(fit.warnings),
            pages_used=fit.pages_used,
            token_offsets=scored[0] if scored else None,
            token_logprobs=scored[1] if scored else None,
        )

    def abort_pending(self) -> None:
        """Drop everything not collected by a ``generate`` call (prefetched work of a run that stopped
        early), so the next caller of this ``LLM`` does not step or receive it."""
        self._abort_in_flight()
        self._done.clear()

    def _abort_in_flight(self) -> None:
        internal = [f.internal_id for f in self._in_flight.values()]
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
