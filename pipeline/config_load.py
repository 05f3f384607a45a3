"""Loading the job configuration: TOML file, DOCEXTRACT_* variables, ``--set key=value`` and flags, in
that order of precedence, into a validated :class:`pipeline.config.JobConfig`; the effective config back
as TOML; the stable hash the run key is made of.

The sections (what a key means, its default and bounds) are in ``pipeline/config.py``, which re-exports
everything callers use from here: ``from pipeline.config import load_config`` keeps working.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import JobConfig


def _job_config() -> type[JobConfig]:
    # pipeline.config imports this module at its end (to re-export it): import the model when called
    from pipeline.config import JobConfig

    return JobConfig


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
    return {f.alias or name: f.annotation for name, f in _job_config().model_fields.items()}


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
        return _job_config().model_validate(data), sources
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
