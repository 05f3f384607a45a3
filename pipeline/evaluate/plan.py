"""What is scored for a schema (its leaf fields and item lists), and documents as comparable values along it.

A :class:`Plan` lists every scalar leaf of a Pydantic model (nested models flattened with dots:
``vendor.name``) with how to normalise it, and every list of models (``line_items``) with the leaves of
its items.  :func:`view` turns a truth dict or a result row into one normalised value per leaf and one
list of normalised item tuples per list, so scoring compares plain values.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from pipeline.evaluate.normalize import normalize


@dataclass(frozen=True)
class Leaf:
    """A scalar leaf of the schema, by path (``("vendor", "name")``), and how to normalise it."""

    path: tuple[str, ...]
    kind: str

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class ListField:
    """A list of models (``line_items``): its item leaves (relative paths) and the description-like leaf."""

    path: tuple[str, ...]
    leaves: tuple[Leaf, ...]
    key: int | None

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class Plan:
    """What is scored for a schema."""

    scalars: tuple[Leaf, ...]
    lists: tuple[ListField, ...]

    def only(self, names: Iterable[str]) -> Plan:
        keep = set(names)
        return Plan(tuple(s for s in self.scalars if s.name in keep), tuple(li for li in self.lists if li.name in keep))


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(base type, is_list) with Annotated and Optional removed."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _unwrap(args[0])
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        return _unwrap(non_null[0]) if len(non_null) == 1 else (str, False)
    if origin in (list, tuple, set, frozenset):
        return (_unwrap(args[0])[0] if args else str), True
    return annotation, False


def _kind(base: Any) -> str:
    if typing.get_origin(base) is typing.Literal or not isinstance(base, type):
        return "text"
    if issubclass(base, bool):
        return "bool"
    if issubclass(base, (Decimal, int, float)):
        return "number"
    if issubclass(base, dt.datetime):
        return "text"
    if issubclass(base, dt.date):
        return "date"
    if issubclass(base, dt.time):
        return "time"
    return "text"


def _walk(model: type[BaseModel], prefix: tuple[str, ...], in_list: bool) -> tuple[list[Leaf], list[ListField]]:
    leaves: list[Leaf] = []
    lists: list[ListField] = []
    for name, info in model.model_fields.items():
        path = prefix + (name,)
        base, is_list = _unwrap(info.annotation)
        is_model = isinstance(base, type) and issubclass(base, BaseModel)
        if is_model and not is_list:
            sub_leaves, sub_lists = _walk(base, path, in_list)
            leaves += sub_leaves
            lists += sub_lists
        elif is_model and not in_list:
            item_leaves, _ = _walk(base, (), True)
            lists.append(ListField(path, tuple(item_leaves), _key_leaf(item_leaves)))
        elif is_list:
            leaves.append(Leaf(path, "multiset:" + ("text" if is_model else _kind(base))))
        else:
            leaves.append(Leaf(path, _kind(base)))
    return leaves, lists


def _key_leaf(leaves: list[Leaf]) -> int | None:
    """Index of the leaf used to break ties between item pairings: ``description``, else the first text leaf."""
    names = [leaf.name for leaf in leaves]
    if "description" in names:
        return names.index("description")
    return next((i for i, leaf in enumerate(leaves) if leaf.kind == "text"), None)


def build_plan(model: type[BaseModel]) -> Plan:
    """Every scalar leaf (nested models flattened with dots) and every list of models."""
    leaves, lists = _walk(model, (), False)
    return Plan(tuple(leaves), tuple(lists))


# --------------------------------------------------------------------------- documents as comparable values

Item = tuple[Any, ...]


@dataclass
class DocView:
    """A document normalised along a plan: one value per scalar leaf, one item list per list field."""

    scalars: tuple[Any, ...]
    lists: tuple[list[Item], ...]


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def view(plan: Plan, data: dict[str, Any]) -> DocView:
    """Normalise a truth dict or a result row; items with no present field are dropped."""
    scalars = tuple(normalize(leaf.kind, _get(data, leaf.path)) for leaf in plan.scalars)
    lists = []
    for lf in plan.lists:
        raw = _get(data, lf.path) or []
        items = [tuple(normalize(leaf.kind, _get(it, leaf.path)) for leaf in lf.leaves) for it in raw]
        lists.append([it for it in items if any(v is not None for v in it)])
    return DocView(scalars, tuple(lists))


def empty_view(plan: Plan) -> DocView:
    """What a failed or missing document predicts: nothing."""
    return DocView(tuple(None for _ in plan.scalars), tuple([] for _ in plan.lists))
