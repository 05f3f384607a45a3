"""A checkpoint's own context length, read from its files without vLLM (and without downloading)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.config import EngineConfig

DEFAULT_MAX_MODEL_LEN = 16384

#: Keys of a model's config.json that bound its context; vLLM takes the smallest one found
#: (``ModelArchConfigConvertor.derive_max_model_len_and_key``), then the tokenizer's ``model_max_length``.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len")  # fmt: skip


def _model_file(model: str, name: str, download_dir: str | None) -> dict[str, Any] | None:
    """A JSON file of the checkpoint, from a local directory or the Hugging Face cache; None when it is
    not there or not readable (nothing is downloaded)."""
    path: str | None = None
    if os.path.isdir(model):
        path = os.path.join(model, name)
    else:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        for cache_dir in ([download_dir] if download_dir else []) + [None]:
            found = try_to_load_from_cache(model, name, cache_dir=cache_dir)
            if isinstance(found, str):
                path = found
                break
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def model_context(model: str, download_dir: str | None = None) -> tuple[int, str] | None:
    """The model's own context and where it was read (``"text_config.max_position_embeddings"``), or None
    when the checkpoint's config.json is not readable here.  Like vLLM: the smallest of the context keys
    of the text config (Qwen2.5-VL keeps them under ``text_config``), then the tokenizer's
    ``model_max_length`` if smaller.  RoPE scaling factors, which vLLM multiplies in, are not: the value
    here is never larger than vLLM's."""
    config = _model_file(model, "config.json", download_dir)
    if config is None:
        return None
    found: list[tuple[int, str]] = []
    for prefix, section in (("text_config.", config.get("text_config")), ("", config)):
        if isinstance(section, dict) and not found:  # the text config's keys when it has any
            found = [(v, prefix + k) for k in CONTEXT_KEYS if isinstance(v := section.get(k), int) and v > 0]
    tok = _model_file(model, "tokenizer_config.json", download_dir) or {}
    if isinstance(v := tok.get("model_max_length"), int) and v > 0:
        found.append((v, "tokenizer_config.model_max_length"))
    return min(found) if found else None


def resolve_max_model_len(config: EngineConfig) -> tuple[int | None, str]:
    """``max_model_len`` to pass to vLLM (None: vLLM derives it) and why."""
    if config.max_model_len:
        return config.max_model_len, "engine.max_model_len"
    context = model_context(config.model, config.download_dir)
    if context is None:
        return None, "vLLM's own: the model's config.json was not readable here"
    n, key = context
    if n < DEFAULT_MAX_MODEL_LEN:
        return n, f"model config ({key})"
    return DEFAULT_MAX_MODEL_LEN, f"default {DEFAULT_MAX_MODEL_LEN} (the model allows {n:,}, {key})"
