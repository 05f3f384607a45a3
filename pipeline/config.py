"""Job configuration: a TOML file, DOCEXTRACT_* variables, --set and CLI flags, validated with Pydantic.

An unknown or invalid key is an error that names the key (``engine.max_num_seqs``),
never a silent default.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

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


class PromptConfig(_Section):
    system: str | None = Field(None, description="System prompt; None uses the built-in one.")
    instructions: str | None = Field(None, description="Extra instructions appended to the schema-derived ones.")


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


class JobConfig(_Section):
    schema_name: str = Field("invoice", alias="schema", description="'invoice', 'receipt' or 'module:Class'.")
    discover: DiscoverConfig = Field(default_factory=DiscoverConfig)
    rasterize: RasterizeConfig = Field(default_factory=RasterizeConfig)
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

    def fingerprint(self) -> dict[str, Any]:
        """What determines an extraction's result (used for the run key)."""
        return {
            "schema": self.schema_name,
            "rasterize": self.rasterize.model_dump(
                include={"dpi", "min_pixels", "max_pixels", "max_pages", "direct_scans"}
            ),
            "prompt": self.prompt.model_dump(),
            "model": self.engine.model,
            "weights": {"dtype": self.engine.dtype, "quantization": self.engine.quantization},
            "sampling": self.sampling.model_dump(),
        }


# ---------------------------------------------------------------------------- loading
#
# Layers, each overriding the one before: defaults < TOML file < DOCEXTRACT_* environment variables
# < ``--set key=value`` < explicit command-line flags.  Every layer is a flat mapping of dotted keys
# (``run.batch_size``) to a value and the place it came from, so an error names that place.

ENV_PREFIX = "DOCEXTRACT_"
NON_CONFIG_ENV = {
    "DOCEXTRACT_VENV_CACHE": "scripts/setup: where the shared virtual environments are cached",
    "DOCEXTRACT_TRUTH_DIR": "tests/scripted_engine.py: where the test engine finds its ground truth",
}
DEFAULT_SOURCE = "default"
_Layer = dict[str, tuple[Any, str]]  # dotted key -> (value, source)


def _fields() -> dict[str, Any]:
    """Top-level config keys (by their TOML name) -> the section model, or the field's annotation."""
    return {f.alias or name: f.annotation for name, f in JobConfig.model_fields.items()}


def _node(key: str) -> Any:
    """The annotation at a dotted key (a section model for a section); ``Any`` inside a dict field;
    ``None`` for no such key."""
    parts = key.split(".")
    ann = _fields().get(parts[0])
    for part in parts[1:]:
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = ann.model_fields.get(part)
            ann = field.annotation if field is not None else None
        elif get_origin(ann) is dict:
            return Any  # engine.extra.<anything>
        else:
            return None
    return ann


def _annotation(key: str) -> Any:
    """The type of the value at a dotted key; ``None`` if the key names no value (or a whole section)."""
    ann = _node(key)
    return None if isinstance(ann, type) and issubclass(ann, BaseModel) else ann


def _suggest(key: str) -> str:
    parts = key.split(".")
    parent = _fields() if len(parts) == 1 else _node(".".join(parts[:-1]))
    names = list(parent) if isinstance(parent, dict) else list(getattr(parent, "model_fields", {}))
    close = difflib.get_close_matches(parts[-1], names, n=1, cutoff=0.6)
    return f" (did you mean '{'.'.join([*parts[:-1], close[0]])}'?)" if close else ""


def _is_text(ann: Any) -> bool:
    """A field whose values are strings: ``str``, ``str | None``, ``Literal['a', 'b']``."""
    if ann is str:
        return True
    if get_origin(ann) is Literal:
        return all(isinstance(a, str) for a in get_args(ann))
    if get_origin(ann) in (Union, UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        return len(args) == 1 and _is_text(args[0])
    return False


def parse_value(key: str, raw: str) -> Any:
    """A value given as text (environment, ``--set``): a TOML value (``64``, ``true``, ``[1, 2]``,
    ``{a = 1}``, ``"quoted"``) when it parses as one, else the text itself; text fields keep the text."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    if _is_text(_annotation(key)) and not isinstance(value, str):
        return raw  # engine.model = 123 is the string "123"
    return value


def _flatten(data: dict[str, Any], source: str, prefix: str = "") -> _Layer:
    out: _Layer = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, source, key + "."))
        else:
            out[key] = (v, source)
    return out


def _file_layer(path: str | Path | None) -> _Layer:
    if path is None:
        return {}
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    return _flatten(data, f"file {p}")


def _misnamed(rest: str) -> str | None:
    """For ``DOCEXTRACT_<rest>`` that is no config key: why it looks like one (with the name probably
    meant), or None when it does not look like a config key at all."""
    fields = _fields()
    if "__" in rest:
        key = rest.replace("__", ".")
        return f"no config key '{key}'{_suggest(key)}"
    for section, ann in fields.items():
        if isinstance(ann, type) and issubclass(ann, BaseModel) and rest.startswith(section + "_"):
            meant = f"{ENV_PREFIX}{section.upper()}__{rest[len(section) + 1 :].upper()}"
            return f"sections and keys are separated by two underscores (did you mean {meant}?)"
    close = difflib.get_close_matches(rest, list(fields), n=1, cutoff=0.75)
    if close:
        return f"no top-level config key '{rest}' (did you mean {ENV_PREFIX}{close[0].upper()}?)"
    return None


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    """``DOCEXTRACT_<SECTION>__<KEY>`` (``DOCEXTRACT_RUN__BATCH_SIZE``) and ``DOCEXTRACT_<KEY>`` for the
    top-level keys (``DOCEXTRACT_SCHEMA``).  A variable that looks meant as a config key but names none
    is an error (a typo must not pass silently); other ``DOCEXTRACT_*`` names are not config."""
    out: _Layer = {}
    bad: list[str] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NON_CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        key = rest.replace("__", ".")
        if _annotation(key) is not None:
            out[key] = (parse_value(key, environ[name]), f"env {name}")
        elif (why := _misnamed(rest)) is not None:
            bad.append(f"{name}: {why}")
    if bad:
        raise ConfigError(
            "unknown configuration variables: " + "; ".join(bad) + f". Config keys are {ENV_PREFIX}<SECTION>__<KEY> "
            f"(e.g. {ENV_PREFIX}RUN__BATCH_SIZE), or {ENV_PREFIX}<KEY> for top-level keys (e.g. {ENV_PREFIX}SCHEMA)"
        )
    return out


def _sets_layer(sets: Sequence[str]) -> _Layer:
    out: _Layer = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. run.batch_size=64), got {item!r}")
        if _annotation(key) is None:
            raise ConfigError(f"unknown key '{key}' (from --set {item}){_suggest(key)}")
        out.update(_flatten({key: parse_value(key, raw.strip())}, f"--set {key}"))
    return out


def _source_of(key: str, sources: Mapping[str, str]) -> str | None:
    """The source of a key, or of the keys under it (a whole section or dict field)."""
    if key in sources:
        return sources[key]
    under = sorted({s for k, s in sources.items() if k.startswith(key + ".")})
    return ", ".join(under) if under else None


def _format_error(e: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        src = _source_of(key, sources)
        where = f" (from {src})" if src else ""
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'{where}")
        else:
            lines.append(f"'{key}': {err['msg']} (got {err.get('input')!r}){where}")
    return "invalid job config: " + "; ".join(lines)


def resolve_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> tuple[JobConfig, dict[str, str]]:
    """The config and, for every key not left at its default, where its value came from.

    Layers: defaults < TOML file ``path`` < ``environ``'s ``DOCEXTRACT_*`` variables (only when given,
    e.g. ``os.environ``) < ``sets`` (``"key=value"``) < ``overrides`` (dotted keys; None = not given)."""
    flags = _flatten({k: v for k, v in (overrides or {}).items() if v is not None}, "command line")
    layers = [_file_layer(path), _env_layer(environ or {}), _sets_layer(sets), flags]
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        for key, (value, source) in layer.items():
            cur = data
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(cur.get(part), dict):
                    cur[part] = {}
                cur = cur[part]
            if value == {} and isinstance(cur.get(parts[-1]), dict):
                continue  # an empty table adds nothing to one set before
            cur[parts[-1]] = value
            for old in [k for k in sources if k.startswith(key + ".")]:
                del sources[old]  # a whole table replaced what was set under it
            sources[key] = source
    try:
        return JobConfig.model_validate(data), sources
    except ValidationError as e:
        raise ConfigError(_format_error(e, sources)) from None


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> JobConfig:
    """Read a TOML config (optional) and apply dotted-key overrides (``{"engine.model": "x"}``).

    ``environ`` (e.g. ``os.environ``) adds ``DOCEXTRACT_*`` variables; ``sets`` adds ``"key=value"``
    strings (``--set``).  See :func:`resolve_config` for the order."""
    return resolve_config(path, overrides, sets=sets, environ=environ)[0]


def _toml_key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "_-" for c in k) and k.isascii() else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON's escapes are TOML's basic-string escapes
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    return json.dumps(str(v))


def config_toml(config: JobConfig, sources: Mapping[str, str] | None = None) -> str:
    """The effective config as TOML (readable back by :func:`load_config`); a value not left at its
    default carries a comment saying where it came from.  Keys set to none are shown commented out."""
    data = config.model_dump(mode="json", by_alias=True)
    sources = sources or {}

    def line(key: str, name: str, value: Any) -> str:
        if value is None:
            return f"# {_toml_key(name)} = (none)"
        src = _source_of(key, sources)
        return f"{_toml_key(name)} = {_toml_value(value)}" + (f"  # {src}" if src else "")

    top = [line(k, k, v) for k, v in data.items() if not isinstance(v, dict)]
    tables = [
        f"\n[{name}]\n" + "\n".join(line(f"{name}.{k}", k, v) for k, v in section.items())
        for name, section in data.items()
        if isinstance(section, dict)
    ]
    return "\n".join(top) + "\n" + "\n".join(tables) + "\n"


def stable_hash(obj: Any, n: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
