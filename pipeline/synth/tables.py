"""The generator's vocabulary (locales, labels, names, products, styles) from ``pipeline/synth/data/*.json``.

Each file is read once per process; the modules that use a table bind it at import time.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

DATA_FILES = ("locales.json", "labels.json", "parties.json", "items.json", "style.json")


@functools.cache
def load(name: str) -> dict[str, Any]:
    """The parsed JSON object of ``data/<name>`` (shipped as package data)."""
    if name not in DATA_FILES:
        raise ValueError(f"unknown synth data file {name!r}; one of {DATA_FILES}")
    text = resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"synth data file {name} must hold a JSON object")
    return data


def rows(table: dict[str, list[list[Any]]], width: int) -> dict[str, list[tuple[Any, ...]]]:
    """``{key: [[...], ...]}`` -> ``{key: [(...), ...]}``, each row checked to have ``width`` columns."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for key, items in table.items():
        for row in items:
            if len(row) != width:
                raise ValueError(f"synth data row {row!r} under {key!r} has {len(row)} columns, expected {width}")
        out[key] = [tuple(row) for row in items]
    return out
