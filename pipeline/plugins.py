"""Names that select code: a registry name (``invoice``, ``vllm``) or ``package.module:attr``
(custom schemas and engines).  One resolver for both."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any, TypeVar

from pipeline.errors import PluginError

T = TypeVar("T")


def import_object(spec: str, what: str) -> Any:
    """``package.module:attr`` -> the attribute.  Modules of the directory you run from are
    importable, as with ``python -m`` (so ``tests.scripted_engine:from_truth`` works from a checkout)."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise PluginError(f"{what} {spec!r}: expected 'package.module:name'")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise PluginError(f"{what} {spec!r}: cannot import {mod_name!r}: {e}") from e
    if not hasattr(mod, attr):
        raise PluginError(f"{what} {spec!r}: {mod_name} has no attribute {attr!r}")
    return getattr(mod, attr)


def resolve_named(spec: str, registry: Mapping[str, T], what: str) -> T | Any:
    """``registry[spec]``, or the object ``package.module:attr`` names; ``PluginError`` otherwise."""
    if spec in registry:
        return registry[spec]
    if ":" not in spec:
        raise PluginError(f"unknown {what} {spec!r}: use one of {sorted(registry)} or 'package.module:name'")
    return import_object(spec, what)
