"""Load user code named ``package.module:attr`` (custom engines, custom schemas)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


class PluginError(ValueError):
    """The spec does not name an importable attribute; the message says why."""


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
