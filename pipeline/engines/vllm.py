"""Offline vLLM engine (``vllm.LLM.chat`` over whole batches).  The only module that imports vLLM.

Profiles:
* ``gpu``: vLLM's defaults (engine core in its own process, compiled graphs, CUDA graphs).
* ``cpu``: vLLM's CPU build: eager mode, engine core in this process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), a small KV cache (``VLLM_CPU_KVCACHE_SPACE``).
  Measured here: engine start 8 s instead of 74-139 s.

Batch isolation (request errors only; engine errors go up to the retry layer): in vLLM one malformed request (an image the processor rejects, a
prompt longer than ``max_model_len``) makes the whole ``chat`` call raise, and no
output comes back for the others.  We bisect: the failing batch is split in halves
and each half retried, so only the bad request ends with an error.  A failed call
costs only input processing (vLLM aborts the requests it had added), so good
requests are generated once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from pipeline.config import EngineConfig
from pipeline.engines.base import EngineLoadError
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


class VLLMEngine:
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
        self.splits = 0

    # -- batch -------------------------------------------------------------------------

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        if not requests:
            return []
        return self._generate_isolated(list(requests))

    def _chat(self, requests: list[Request]) -> list[Generation]:
        self.calls += 1
        t0 = time.perf_counter()
        outputs = self.llm.chat(
            [to_vllm_messages(r) for r in requests],
            sampling_params=[sampling_params(r) for r in requests],
            use_tqdm=False,
        )
        dt = time.perf_counter() - t0
        gens = []
        for req, out in zip(requests, outputs, strict=True):
            comp = out.outputs[0] if out.outputs else None
            gens.append(
                Generation(
                    doc_id=req.doc_id,
                    text=comp.text if comp else "",
                    finish_reason=(comp.finish_reason or "unknown") if comp else "error",
                    prompt_tokens=len(out.prompt_token_ids or []),
                    output_tokens=len(comp.token_ids) if comp else 0,
                    latency_s=dt,
                )
            )
        return gens

    def _generate_isolated(self, requests: list[Request]) -> list[Generation]:
        try:
            return self._chat(requests)
        except Exception as e:
            if _engine_is_dead(e) or not _is_request_error(e):
                raise  # engine-level: the retry layer (backoff, OOM halving, rebuild) handles it
            if len(requests) == 1:
                r = requests[0]
                log.warning("request for %s rejected by vLLM: %s", r.doc_id[:12], e)
                return [
                    Generation(
                        r.doc_id,
                        "",
                        "error",
                        error=f"{type(e).__name__}: {e}"[:2000],
                        error_type=ErrorType.REQUEST_INVALID,
                    )
                ]
            self.splits += 1
            mid = len(requests) // 2
            log.info("vLLM rejected a batch of %d (%s); splitting to isolate the bad request", len(requests), e)
            return self._generate_isolated(requests[:mid]) + self._generate_isolated(requests[mid:])

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        try:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None)
            if callable(shutdown):
                shutdown()
        except Exception:  # shutting down must never mask the run's outcome
            log.debug("vLLM shutdown raised", exc_info=True)


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
