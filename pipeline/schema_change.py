"""What differs between the columns an output holds and the columns a run writes, and how old rows are
brought to the new columns.

The rule (``output.schema_change``): an output is one table.  A run whose columns differ is refused
(``refuse``, the default), or, with ``add_columns`` (``--allow-schema-change``), accepted when the new
columns only *add* nullable columns or nested struct fields (and may order them differently): every
existing part is then rewritten with the new columns, null in the old rows, so a plain glob over the
parts reads one schema in every reader.  A changed type, a dropped column and a renamed one (a drop and
an add) are always refused: old rows cannot be read as the new type without guessing, and dropping a
column would destroy data.  The table's schema history is kept in ``_state/schema.json``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline import fs

HISTORY = ("_state", "schema.json")


@dataclass
class SchemaDiff:
    added: list[str] = field(default_factory=list)  # dotted paths: po_number, vendor.email, line_items[].sku
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # "total: decimal128(18, 2) -> string"
    reordered: bool = False

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed or self.reordered)

    @property
    def additive(self) -> bool:
        """Only new columns/fields (and order): what ``add_columns`` accepts."""
        return not (self.removed or self.changed)

    def describe(self, limit: int = 12) -> str:
        items = [f"+{a}" for a in self.added] + [f"-{r}" for r in self.removed] + self.changed
        text = ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
        return text or "column order"


def _diff_fields(held: list[pa.Field], new: list[pa.Field], prefix: str, out: SchemaDiff) -> None:
    old = {f.name: f for f in held}
    mine = {f.name: f for f in new}
    if [n for n in mine if n in old] != [n for n in old if n in mine]:
        out.reordered = True
    for name, f in mine.items():
        path = prefix + name
        if name not in old:
            out.added.append(path)
        else:
            _diff_type(old[name].type, f.type, path, out)
    out.removed += [prefix + n for n in old if n not in mine]


def _diff_type(old: pa.DataType, new: pa.DataType, path: str, out: SchemaDiff) -> None:
    if old.equals(new):
        return
    if pa.types.is_struct(old) and pa.types.is_struct(new):
        _diff_fields(list(old), list(new), path + ".", out)
    elif _is_list(old) and _is_list(new):
        _diff_type(old.value_type, new.value_type, path + "[]", out)
    elif _is_text(old) and _is_text(new):
        return  # a part rewritten by another tool may hold large_string: the same values
    else:
        out.changed.append(f"{path}: {old} -> {new}")


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def diff(held: pa.Schema, new: pa.Schema) -> SchemaDiff:
    """How ``new`` differs from ``held`` (top-level and nested)."""
    out = SchemaDiff()
    _diff_fields(list(held), list(new), "", out)
    return out


# --------------------------------------------------------------------------- old rows, new columns


def conform_array(arr: pa.Array | pa.ChunkedArray, t: pa.DataType) -> pa.Array:
    """``arr`` as type ``t``, where ``t`` only adds struct fields (null) or reorders them."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], type=arr.type)
    if arr.type.equals(t):
        return arr
    if pa.types.is_struct(t) and pa.types.is_struct(arr.type):
        have = {arr.type.field(i).name: i for i in range(arr.type.num_fields)}
        children = [
            conform_array(arr.field(have[f.name]), f.type) if f.name in have else pa.nulls(len(arr), f.type)
            for f in t
        ]
        return pa.StructArray.from_arrays(children, fields=list(t), mask=arr.is_null())
    if _is_list(t) and _is_list(arr.type):
        values = conform_array(arr.values, t.value_type)
        offsets = arr.offsets
        cls = pa.LargeListArray if pa.types.is_large_list(t) else pa.ListArray
        return cls.from_arrays(offsets, values, type=t, mask=arr.is_null())
    return arr.cast(t)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order: missing columns null, struct fields added."""
    cols = [
        conform_array(table.column(f.name), f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(cols, schema=schema)


# --------------------------------------------------------------------------- history


def read_history(out_dir: Any) -> dict[str, Any]:
    try:
        doc = json.loads(fs.read_bytes(fs.join(out_dir, *HISTORY)))
        return doc if isinstance(doc, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}


def record(out_dir: Any, table: str, schema: pa.Schema, schema_name: str, run_id: str, change: str,
           partition_by: str) -> None:
    """Append one entry to the table's schema history (``_state/schema.json``), rewritten atomically."""
    from pipeline.store import write_json

    doc = read_history(out_dir)
    tables = doc.setdefault("tables", {})
    entry = tables.setdefault(table, {"history": []})
    entry.update(schema_name=schema_name, partition_by=partition_by, columns=[str(f) for f in schema])
    entry["history"].append({"at": dt.datetime.now(dt.UTC).isoformat(), "run_id": run_id, "schema_name": schema_name,
                             "change": change, "columns": len(schema)})
    write_json(fs.join(out_dir, *HISTORY), doc)
