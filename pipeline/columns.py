"""Parquet column types from Pydantic models: the typed columns of ``results`` and the fixed
columns of ``failures``, and the conversion of one validated model into one row.

Text -> string, ``Decimal`` -> decimal128 with the field's declared digits and places, ``date`` ->
date32, ``time`` -> string ``HH:MM:SS``, nested models -> struct, lists -> list, enums/Literals ->
string.  Read by the part writer (``pipeline.store``) and by ``docextract schema``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import functools
import json
import logging
import types
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from pipeline.errors import SchemaMappingError

log = logging.getLogger(__name__)

RESERVED = {
    "doc_id",
    "source_path",
    "doc_kind",
    "page_count",
    "pages_used",
    "raw_json",
    "warnings",
    "attempts",
    "prompt_tokens",
    "output_tokens",
    "schema_name",
    "model",
    "run_key",
    "run_id",
    "extracted_at",
    "needs_review",
    "review_reasons",
}

DEFAULT_DECIMAL = (38, 9)




# --------------------------------------------------------------------------- types


def _flatten(metadata: list[Any]) -> list[Any]:
    """Constraints may sit inside a nested FieldInfo (``Annotated[Decimal, Field(...)] | None``)."""
    out = []
    for m in metadata:
        out.append(m)
        inner = getattr(m, "metadata", None)
        if isinstance(inner, list):
            out.extend(_flatten(inner))
    return out


def _decimal_type(metadata: list[Any]) -> pa.DataType:
    digits, places = None, None
    for m in _flatten(metadata):
        digits = getattr(m, "max_digits", None) or digits
        p = getattr(m, "decimal_places", None)
        places = p if p is not None else places
    if digits is None and places is None:
        return pa.decimal128(*DEFAULT_DECIMAL)
    places = places if places is not None else 9
    digits = digits if digits is not None else 38
    return pa.decimal128(min(38, max(digits, places + 1)), places)


def arrow_type(annotation: Any, metadata: list[Any] | None = None) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) for a Pydantic field annotation."""
    metadata = list(metadata or [])
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return arrow_type(args[0], metadata + list(annotation.__metadata__))
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        nullable = len(non_null) < len(args)
        if len(non_null) == 1:
            t, _ = arrow_type(non_null[0], metadata)
            return t, nullable or True
        inner = [arrow_type(a, metadata)[0] for a in non_null]
        if all(t == inner[0] for t in inner):
            return inner[0], True
        return pa.string(), True  # mixed unions are stored as their JSON text
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        item = args[0] if args else str
        t, _ = arrow_type(item)
        return pa.list_(t), False
    if origin is typing.Literal:
        return pa.string(), False
    if origin is dict or annotation is dict:
        return pa.string(), False  # free-form mapping: JSON text
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return model_struct(annotation), False
        if issubclass(annotation, bool):
            return pa.bool_(), False
        if issubclass(annotation, enum.Enum):
            return pa.string(), False
        if issubclass(annotation, int):
            return pa.int64(), False
        if issubclass(annotation, float):
            return pa.float64(), False
        if issubclass(annotation, Decimal):
            return _decimal_type(metadata), False
        if issubclass(annotation, dt.datetime):
            return pa.timestamp("us", tz="UTC"), False
        if issubclass(annotation, dt.date):
            return pa.date32(), False
        if issubclass(annotation, dt.time):
            return pa.string(), False  # ISO "HH:MM:SS": Parquet TIME is unreadable by Spark before 4.1
        if issubclass(annotation, str):
            return pa.string(), False
        if issubclass(annotation, bytes):
            return pa.binary(), False
    if annotation is typing.Any:
        return pa.string(), True
    raise SchemaMappingError(f"no Parquet type for annotation {annotation!r}")


def model_fields(model: type[BaseModel]) -> list[pa.Field]:
    fields = []
    for name, info in model.model_fields.items():
        t, nullable = arrow_type(info.annotation, list(info.metadata))
        nullable = nullable or not info.is_required()
        fields.append(pa.field(name, t, nullable=True if nullable else True))
    return fields


def model_struct(model: type[BaseModel]) -> pa.StructType:
    return pa.struct(model_fields(model))


def check_reserved(model: type[BaseModel]) -> None:
    clash = RESERVED & set(model.model_fields)
    if clash:
        raise SchemaMappingError(
            f"schema {model.__name__} has field(s) {sorted(clash)} that clash with docextract's own columns"
        )


_DOC_COLUMNS = [
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("source_path", pa.string()),
    pa.field("doc_kind", pa.string()),
    pa.field("page_count", pa.int32()),
]
_RUN_COLUMNS = [  # the same in both tables: how the row came about
    pa.field("warnings", pa.list_(pa.string())),
    pa.field("attempts", pa.int32()),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("output_tokens", pa.int64()),
    pa.field("schema_name", pa.string()),
    pa.field("model", pa.string()),
    pa.field("run_key", pa.string()),
    pa.field("run_id", pa.string()),
]


def results_schema(model: type[BaseModel]) -> pa.Schema:
    check_reserved(model)
    return pa.schema(
        _DOC_COLUMNS
        + [pa.field("pages_used", pa.int32())]
        + model_fields(model)
        + [pa.field("raw_json", pa.string())]
        + [pa.field("needs_review", pa.bool_()), pa.field("review_reasons", pa.list_(pa.string()))]
        + _RUN_COLUMNS
        + [pa.field("extracted_at", pa.timestamp("us", tz="UTC"))]
    )


FAILURES_SCHEMA = pa.schema(
    _DOC_COLUMNS
    + [
        pa.field("stage", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("retryable", pa.bool_()),
        pa.field("message", pa.string()),
        pa.field("errors", pa.list_(pa.string())),
        pa.field("raw_output", pa.string()),
    ]
    + _RUN_COLUMNS
    + [pa.field("failed_at", pa.timestamp("us", tz="UTC"))]
)


#: one row per leaf value of a result: where it is printed and how sure we are (``pipeline.trust``)
EVIDENCE_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("value", pa.string()),
        pa.field("page", pa.int32()),
        pa.field("x0", pa.float32()),
        pa.field("y0", pa.float32()),
        pa.field("x1", pa.float32()),
        pa.field("y1", pa.float32()),
        pa.field("source", pa.string()),
        pa.field("grounded", pa.bool_()),
        pa.field("match", pa.string()),
        pa.field("match_score", pa.float32()),
        pa.field("confidence", pa.float32()),
        pa.field("model_confidence", pa.float32()),
        pa.field("rule_failed", pa.list_(pa.string())),
        pa.field("reasons", pa.list_(pa.string())),
        pa.field("schema_name", pa.string()),
        pa.field("run_key", pa.string()),
        pa.field("run_id", pa.string()),
    ]
)


# --------------------------------------------------------------------------- values


Convert = Callable[[Any], Any]


def to_arrow_value(value: Any, t: pa.DataType) -> Any:
    """Python value from ``model_dump(mode="python")`` -> what pyarrow accepts for type ``t``."""
    conv = arrow_converter(t)
    return value if conv is None or value is None else conv(value)


@functools.lru_cache(maxsize=256)
def arrow_converter(t: pa.DataType) -> Convert | None:
    """The conversion for type ``t``, built once per type; ``None`` where the value goes in as it is.

    Built once so a result row costs one pass over the fields that need it (decimals, enums,
    times and free-form values for string columns) and nothing for the rest; the per-value type
    dispatch this replaces was ~1 ms per 40-item invoice on the main thread."""
    if pa.types.is_struct(t):
        subs = [(f.name, arrow_converter(f.type)) for f in t]
        if all(c is None for _, c in subs):
            names = [n for n, _ in subs]
            return lambda v: {n: v.get(n) for n in names}  # only the declared fields

        def struct(v: dict[str, Any]) -> dict[str, Any]:
            out = {}
            for n, c in subs:
                x = v.get(n)
                out[n] = x if c is None or x is None else c(x)
            return out

        return struct
    if pa.types.is_list(t):
        item = arrow_converter(t.value_type)
        if item is None:
            return None
        return lambda v: [None if x is None else item(x) for x in v]
    if pa.types.is_decimal(t):
        ctx = decimal.Context(prec=t.precision + 2)
        quantum = Decimal(1).scaleb(-t.scale)
        precision = t.precision

        def to_decimal(v: Any) -> Decimal:
            d = Decimal(v).quantize(quantum, context=ctx)
            if len(d.as_tuple().digits) > precision:
                raise ValueError(f"{v} does not fit decimal({precision},{t.scale})")
            return d

        return to_decimal
    if pa.types.is_string(t):
        return _to_string
    return None  # numbers, booleans, dates, timestamps: pydantic's values are what pyarrow takes (enums map to strings)


def _to_string(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def model_row(instance: BaseModel, schema: pa.Schema) -> dict[str, Any]:
    data = instance.model_dump(mode="python")
    return {name: to_arrow_value(data.get(name), schema.field(name).type) for name in type(instance).model_fields}


# --------------------------------------------------------------------------- writing


