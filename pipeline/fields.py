"""Leaf fields of an extracted value, by dotted path: the key every per-field record shares.

``vendor.name``, ``total``, ``line_items[3].amount`` (list indexes 0-based).  Evidence rows,
model confidence and review reasons all name a field this way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel


def leaf_values(value: BaseModel | dict[str, Any]) -> list[tuple[str, Any]]:
    """Every leaf of ``value`` (a validated model, or its JSON-mode dump) with its path, in field order.

    Nulls are leaves too (a field the document does not state); empty lists have no leaves."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return list(_walk(data, ""))


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _walk(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _walk(child, f"{path}[{i}]")
    else:
        yield path, node
