"""Job configuration: the sections (a key's meaning, default and bounds) and ``JobConfig``, validated with
Pydantic.

An unknown or invalid key is an error that names the key (``engine.max_num_seqs``),
never a silent default.  Loading (TOML file, DOCEXTRACT_* variables, --set and CLI flags) is in
``pipeline/config_load.py``; its API is re-exported here (``from pipeline.config import load_config``).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pipeline import defaults as D
from pipeline.defaults import PATCH
from pipeline.errors import ConfigError

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
# Upper bounds: far above any real setting, low enough that a typo or inf is refused at load instead
# of failing mid-run (an infinite timeout once ended a run with OverflowError, run.json still "running").
MAX_PIXELS = 16384 * PATCH * PATCH  # Qwen2.5-VL's largest processor max_pixels
MAX_PAGES = 1000
MAX_SECONDS = 86400.0
MAX_SEED = 2**32 - 1  # numpy's seed range (vLLM seeds numpy with it)




class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RasterizeConfig(_Section):
    dpi: int = Field(D.DPI, ge=36, le=600, description="Render resolution for PDF pages before fitting to the pixel budget.")
    min_pixels: int = Field(
        D.MIN_PIXELS, ge=PATCH * PATCH, le=MAX_PIXELS, description="Smallest page image, in pixels (width*height)."
    )
    max_pixels: int = Field(
        D.MAX_PIXELS,
        ge=PATCH * PATCH,
        le=MAX_PIXELS,
        description="Largest page image in pixels; ~max_pixels/784 image tokens.",
    )
    max_pages: int = Field(
        D.MAX_PAGES, ge=1, le=MAX_PAGES, description="Pages kept per document; extra pages are dropped with a warning."
    )
    workers: int = Field(
        0, ge=0, le=1024, description="Rasterizing processes; 0 = one per CPU core; 1 = in the main process."
    )
    timeout_s: float = Field(
        120.0, gt=0, le=MAX_SECONDS, description="Time limit for rasterizing one document (worker processes only)."
    )
    direct_scans: bool = Field(
        D.DIRECT_SCANS, description="Decode a page that is one full-page JPEG scan directly instead of rendering it."
    )
    max_source_pixels: int = Field(
        D.MAX_SOURCE_PIXELS,
        ge=1,
        le=2**32,
        description="Refuse images/pages whose decoded size exceeds this (decompression-bomb guard).",
    )

    @model_validator(mode="after")
    def _order(self) -> RasterizeConfig:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) is larger than max_pixels ({self.max_pixels})")
        return self


class WordsConfig(_Section):
    enabled: bool = Field(
        D.WORDS,
        description="Read each page's words with their boxes (the trust layer matches extracted values against "
        "them): a PDF page's own text layer, else OCR of the page image. Off: no words, no OCR, no cost.",
    )
    ocr: Literal["auto", "always", "never"] = Field(
        D.OCR,
        description="'auto': OCR the pages whose text layer cannot serve (images, scans, OCR-layered scans, empty/garbage text, "
        "text hidden under an image); 'always': OCR every page; 'never': text layers only (scans get no words).",
    )
    ocr_engine: Literal["rapidocr"] = Field(D.OCR_ENGINE, description="OCR engine (RapidOCR, models in the package).")
    ocr_threads: int = Field(
        D.OCR_THREADS, ge=1, le=64, description="OCR threads per rasterizing worker (the workers are the parallelism)."
    )


class PromptConfig(_Section):
    system: str | None = Field(None, description="System prompt; None uses the built-in one.")
    instructions: str | None = Field(None, description="Extra instructions appended to the schema-derived ones.")
    anchor_text: bool = Field(
        False,
        description="Put each page's words (text layer or OCR) with coarse positions into the request, before "
        "the page's image (pipeline.anchor). Off by default: measure it with 'docextract eval --compare'.",
    )
    anchor_max_tokens: int = Field(
        2048, ge=32, le=32768, description="Cap on one page's anchor text, in tokens (estimated, on the high side)."
    )


_ENGINE_RANGES = {  # inclusive ranges of the engine's numeric keys
    "tensor_parallel_size": (1, 1024),
    "max_model_len": (256, 1 << 22),
    "max_num_seqs": (1, 1 << 16),
    "cpu_kv_cache_gib": (1, 1 << 14),
    "seed": (0, MAX_SEED),
    "max_images": (1, MAX_PAGES),
    "mm_min_pixels": (PATCH * PATCH, MAX_PIXELS),
    "mm_max_pixels": (PATCH * PATCH, MAX_PIXELS),
}


class EngineConfig(_Section):
    name: str = Field("vllm", description="'vllm', or 'module:factory' for an engine of your own.")
    model: str = Field(DEFAULT_MODEL, description="Hugging Face model name or a local checkpoint directory.")
    profile: Literal["auto", "gpu", "cpu"] = Field(
        "auto",
        description="'gpu': vLLM defaults (compiled graphs, engine process). "
        "'cpu': eager mode, engine core in process, small KV cache (vLLM's CPU build). "
        "'auto': 'cpu' where vLLM's platform is the CPU one, else 'gpu'.",
    )
    dtype: str = "auto"
    quantization: str | None = None
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="None: 0.9 on gpu, 0.5 on cpu.")
    max_model_len: int | None = Field(
        None,
        ge=256,
        description="None: the smaller of 16384 and the model's own context (its config.json); "
        "a value is passed to vLLM unchanged.",
    )
    max_num_seqs: int | None = Field(None, ge=1, description="None: vLLM's default.")
    enable_prefix_caching: bool = True
    enforce_eager: bool | None = Field(None, description="None: follow the profile (True on cpu).")
    cpu_kv_cache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE for the cpu profile.")
    disable_any_whitespace: bool = Field(True, description="Forbid free whitespace in constrained JSON (stops loops).")
    logprobs: bool = Field(
        True,
        description="Ask the engine for the log-probability of every sampled token (the sampled one only), "
        "from which each field gets a model confidence score (pipeline.confidence).",
    )
    structured_outputs_backend: str = "xgrammar"
    trust_remote_code: bool = False
    seed: int = 0
    download_dir: str | None = None
    max_images: int = Field(8, ge=1, description="limit_mm_per_prompt images; the runner sets it to rasterize.max_pages.")
    mm_min_pixels: int | None = Field(None, description="Processor min_pixels; the runner sets it from [rasterize].")
    mm_max_pixels: int | None = Field(None, description="Processor max_pixels; the runner sets it from [rasterize].")
    extra: dict[str, Any] = Field(default_factory=dict, description="Passed through to vllm.LLM(...) unchanged.")
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to a custom engine factory.")

    @field_validator(*_ENGINE_RANGES)
    @classmethod
    def _in_range(cls, value: int | None, info: ValidationInfo) -> int | None:
        low, high = _ENGINE_RANGES[str(info.field_name)]
        if value is not None and not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value


class SamplingConfig(_Section):
    temperature: float = Field(D.TEMPERATURE, ge=0, le=10)
    top_p: float = Field(D.TOP_P, gt=0, le=1)
    max_tokens: int = Field(D.MAX_TOKENS, ge=1, le=1 << 22)
    seed: int | None = Field(D.SEED, ge=0, le=MAX_SEED)


class RunConfig(_Section):
    batch_size: int = Field(256, ge=1, le=100_000, description="Documents per engine call.")
    max_batch_pages: int = Field(
        512,
        ge=1,
        le=1_000_000,
        description="Pages per engine call (a batch closes at batch_size documents or this many pages); a "
        "quarter of it may wait rasterized ahead. Bounds memory: ~4 MB per page in this process at the "
        "default page budget, more inside the engine.",
    )
    first_batch_size: int = Field(
        16,
        ge=1,
        le=100_000,
        description="Documents in the first engine call; each later call doubles up to batch_size. The "
        "engine starts after a few documents and the first results are written sooner; with the next batch "
        "prefetched, small early batches cost the engine nothing.",
    )
    lease_ttl_s: float = Field(
        600.0,
        gt=0,
        le=MAX_SECONDS,
        description="Object-store outputs: a run whose lease heartbeat is older than this is taken for dead "
        "and its lease taken over (the heartbeat is written every ttl/4).",
    )
    rehash: bool = Field(
        False,
        description="Read and hash every input even where the identity cache (_state/identities.parquet in "
        "the output) says its size and mtime are unchanged.",
    )
    max_failure_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Exit 3 when more than this fraction of the accepted documents failed (input rejects such as "
        "empty, unsupported, encrypted or corrupt files are counted apart, see max_reject_rate).",
    )
    max_reject_rate: float = Field(
        1.0, ge=0, le=1, description="Exit 3 when more than this fraction of the inputs were rejected; 1.0 never trips."
    )
    max_attempts: int = Field(
        2, ge=1, le=100, description="Attempts per document; invalid answers are re-asked with the errors."
    )
    reask_temperature_step: float = Field(0.0, ge=0, le=10, description="Added to the temperature on each re-ask.")
    truncated_temperature: float = Field(
        0.5,
        ge=0,
        le=2,
        description="An answer cut at sampling.max_tokens (a model looping on repeated text) is asked again "
        "once, unchanged, at this temperature (within max_attempts).",
    )
    engine_retries: int = Field(
        3, ge=1, le=100, description="Attempts for a batch on transient engine errors (backoff)."
    )
    engine_backoff_s: float = Field(
        0.5, ge=0, le=MAX_SECONDS, description="First backoff between engine retries (doubles)."
    )
    engine_restarts: int = Field(
        1, ge=0, le=100, description="Times a dead engine is rebuilt before its documents fail."
    )
    progress: bool = True
    metrics_file: str | None = Field(
        None,
        max_length=4096,
        description="Write the run's figures here in Prometheus' text format at the end of every run (atomically: "
        "node_exporter's textfile collector; name it *.prom). A local path in an existing directory.",
    )


class RayConfig(_Section):
    address: str | None = Field(None, description="Ray cluster address ('auto', 'ray://host:10001'); None starts a local one.")
    engine_actors: int = Field(
        1, ge=1, le=4096, description="Engine actors (one engine each); the number of GPUs on a GPU cluster."
    )
    gpus_per_actor: float = Field(0, ge=0, le=64, description="GPUs per engine actor (1 on GPU clusters, 0 on CPU).")
    cpus_per_actor: float = Field(
        1.0, ge=0, le=1024, description="CPUs reserved per engine actor (0 lets rasterize tasks use them)."
    )
    docs_per_task: int = Field(4, ge=1, le=10_000, description="Documents per Ray Data rasterize task.")


class DiscoverConfig(_Section):
    follow_symlinks: Literal["within_roots", "all", "none"] = Field(
        "within_roots",
        description="Symlinks met while walking an input folder or matching a glob: 'within_roots' follows "
        "those that stay inside the input folders, 'all' every one, 'none' none. A refused file link is a "
        "'refused_symlink' failure row, a refused folder link a warning. Paths named on the command line or "
        "in a manifest are read as named.",
    )


class OutputConfig(_Section):
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    keep_raw_json: bool = True
    schema_change: Literal["refuse", "add_columns"] = Field(
        "refuse",
        description="A run whose result columns differ from the output's: 'refuse' (exit 2 naming the differences) "
        "or 'add_columns' (new nullable columns or struct fields are added to every existing part, null until "
        "the document is reprocessed; a changed type or a dropped/renamed column is still refused).",
    )
    partition_by: str = Field(
        "none",
        pattern=r"^(none|extracted_date|[A-Za-z_][A-Za-z0-9_]*)$",
        description="'none' (results/part-*.parquet), 'extracted_date' (results/extracted_date=YYYY-MM-DD/, the "
        "UTC date of extracted_at) or a top-level date field of the schema F (results/F_day=YYYY-MM-DD/): "
        "Hive-style folders that DuckDB, Spark, Trino and pyarrow prune by date.",
    )
    compact_min_parts: int = Field(
        64, ge=0, le=1_000_000,
        description="After a run, compact a table once this many of its small parts can be merged (0: never).",
    )
    compact_target_mb: float = Field(
        64.0, gt=0, le=4096, description="Target size of a compacted part, in MB; parts under half of it are small."
    )


class EvidenceConfig(_Section):
    """Evidence per field and the review flag (``evidence`` table, ``needs_review``).  Not in the run key:
    a change here applies to documents extracted from then on (``--force`` to recompute)."""

    enabled: bool = Field(True, description="Look every extracted value up among the page's words; write evidence rows.")
    fuzzy_threshold: float = Field(
        0.8, ge=0.5, le=1.0,
        description="Least similarity (0-1) of printed words to a text value for a fuzzy match; 1: exact only."
    )
    min_confidence: float = Field(0.5, ge=0, le=1, description="A field below this confidence flags its document for review.")
    not_found_factor: float = Field(
        0.3, ge=0, le=1, description="Confidence multiplier for a value that is not found on the page."
    )
    sum_factor: float = Field(
        0.9, ge=0, le=1, description="Confidence multiplier for an amount found only as a sum of labelled amounts (tax by rate)."
    )
    rule_failed_factor: float = Field(
        0.6, ge=0, le=1, description="Confidence multiplier for a field whose business rule failed before a re-ask."
    )
    flag_not_found: bool = Field(True, description="A printed value not found on the page flags its document.")
    flag_rule_failed: bool = Field(True, description="A rule that failed before the re-ask flags its document.")
    use_model_confidence: bool = Field(
        False, description="Multiply the model's own token-probability score into the field confidence (recorded in "
        "evidence.model_confidence either way). Off until measured on your model: scores under a schema mask run high."
    )


class JobConfig(_Section):
    schema_name: str = Field("invoice", alias="schema", description="'invoice', 'receipt' or 'module:Class'.")
    discover: DiscoverConfig = Field(default_factory=DiscoverConfig)
    rasterize: RasterizeConfig = Field(default_factory=RasterizeConfig)
    words: WordsConfig = Field(default_factory=WordsConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    backend: Literal["local", "ray"] = Field("local", description="'local' (this machine) or 'ray' (a Ray cluster).")
    ray: RayConfig = Field(default_factory=RayConfig)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def engine_config(self) -> EngineConfig:
        """The engine section with the image limits that follow from [rasterize]."""
        r = self.rasterize
        return self.engine.model_copy(
            update={
                "max_images": r.max_pages,
                "mm_min_pixels": self.engine.mm_min_pixels or r.min_pixels,
                "mm_max_pixels": self.engine.mm_max_pixels or r.max_pixels,
            }
        )

    def effective_workers(self) -> int:
        return self.rasterize.workers or (os.cpu_count() or 1)

    @property
    def words_wanted(self) -> WordsConfig | None:
        """``[words]`` when something reads page words (evidence, anchor text), else None: then no page's
        words are read and nothing is OCRed."""
        if self.words.enabled and (self.evidence.enabled or self.prompt.anchor_text):
            return self.words
        return None

    def fingerprint(self) -> dict[str, Any]:
        """What determines an extraction's result (used for the run key)."""
        return {
            "schema": self.schema_name,
            "rasterize": self.rasterize.model_dump(
                include={"dpi", "min_pixels", "max_pixels", "max_pages", "direct_scans"}
            ),
            # The words feed the evidence rows (which value was found where): what changes them changes outputs.
            "words": self.words.model_dump(include={"enabled", "ocr", "ocr_engine"}),
            # anchor keys only when anchoring is on: a run key made before they existed stays the same
            "prompt": self.prompt.model_dump(exclude=None if self.prompt.anchor_text else {"anchor_text", "anchor_max_tokens"}),
            "model": self.engine.model,
            "weights": {"dtype": self.engine.dtype, "quantization": self.engine.quantization},
            "sampling": self.sampling.model_dump(),
        }


# The loading side, re-exported: callers import these from pipeline.config.
from pipeline.config_load import (  # noqa: E402  (after JobConfig, which config_load uses)
    DEFAULT_SOURCE,
    ENV_PREFIX,
    NON_CONFIG_ENV,
    config_toml,
    load_config,
    parse_value,
    resolve_config,
    stable_hash,
)

__all__ = [
    "DEFAULT_MODEL", "DEFAULT_SOURCE", "ENV_PREFIX", "MAX_PAGES", "MAX_PIXELS", "MAX_SECONDS", "MAX_SEED",
    "NON_CONFIG_ENV", "ConfigError", "DiscoverConfig", "EngineConfig", "JobConfig", "OutputConfig", "PromptConfig",
    "RasterizeConfig", "RayConfig", "RunConfig", "SamplingConfig", "config_toml", "load_config", "parse_value",
    "resolve_config", "stable_hash",
]
