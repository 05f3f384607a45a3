"""pipeline/columns.py and pipeline/store.py: Arrow types from Pydantic, atomic parts that DuckDB reads typed."""

import datetime as dt

import duckdb
import pyarrow as pa
import pytest
from pydantic import BaseModel, Field

from pipeline.columns import FAILURES_SCHEMA, model_row, results_schema
from pipeline.errors import SchemaMappingError
from pipeline.store import PartWriter, finished_docs
from schemas import Invoice, Receipt
from tests.helpers import invoice_truth


def test_results_schema_types():
    s = results_schema(Invoice)
    assert s.field("total").type == pa.decimal128(18, 2)
    assert s.field("issue_date").type == pa.date32()
    assert pa.types.is_struct(s.field("vendor").type)
    li = s.field("line_items").type
    assert pa.types.is_list(li) and li.value_type.field("quantity").type == pa.decimal128(18, 4)
    r = results_schema(Receipt)
    assert r.field("time").type == pa.string() and r.field("payment_method").type == pa.string()
    # Optional money keeps its declared precision (constraints inside Annotated inside Optional)
    assert r.field("subtotal").type == pa.decimal128(18, 2) == r.field("total").type
    assert r.field("items").type.value_type.field("quantity").type == pa.decimal128(18, 4)


def test_reserved_column_clash_is_reported():
    class Bad(BaseModel):
        doc_id: str

    with pytest.raises(SchemaMappingError, match="doc_id"):
        results_schema(Bad)


def test_parts_are_atomic_and_duckdb_reads_typed_values(tmp_path):
    schema = results_schema(Invoice)
    inv = Invoice.model_validate(invoice_truth())
    row = model_row(inv, schema)
    row.update(doc_id="d1", run_key="k", extracted_at=dt.datetime.now(dt.UTC), warnings=[])
    fail = {"doc_id": "d2", "stage": "rasterize", "error_type": "corrupt", "run_key": "k", "errors": ["x"]}
    w = PartWriter(tmp_path, "run1", schema)
    paths = w.commit([row], [fail])
    assert [p.parent.name for p in paths] == ["results", "failures"]
    assert list((tmp_path / "_tmp").iterdir()) == []
    got = duckdb.sql(
        f"SELECT vendor.name, total, issue_date, line_items[2].amount FROM '{tmp_path}/results/*.parquet'"
    ).fetchall()
    assert got == [("Vendor 1 GmbH", inv.total, dt.date(2024, 3, 5), inv.line_items[1].amount)]
    assert finished_docs(tmp_path, "k") == ({"d1"}, {"d2": "corrupt"})
    assert finished_docs(tmp_path, "other") == (set(), {})
    assert pa.types.is_boolean(FAILURES_SCHEMA.field("retryable").type)


def test_nested_structs_mixing_converted_and_plain_fields_keep_every_value(tmp_path):
    # A struct whose fields need conversion (str, Decimal, enum, time) next to fields that do not
    # (int, float, bool, date), in both orders, inside lists too: every value lands in its own column.
    import enum
    from decimal import Decimal

    class Kind(str, enum.Enum):
        A = "a"

    class Line(BaseModel):
        qty: int
        desc: str
        amount: Decimal = Field(max_digits=18, decimal_places=2)
        count: int
        ok: bool
        when: dt.date
        kind: Kind
        at: dt.time | None = None

    class Doc(BaseModel):
        first: Line
        lines: list[Line]
        ratio: float

    line = {"qty": 3, "desc": "bolts", "amount": "7.5", "count": 4, "ok": True, "when": "2024-03-05", "kind": "a", "at": "10:30:00"}
    other = dict(line, qty=9, desc="nuts", amount="0.25", count=11, ok=False, at=None)
    doc = Doc.model_validate({"first": line, "lines": [line, other], "ratio": 0.5})
    schema = results_schema(Doc)
    row = model_row(doc, schema)
    row.update(doc_id="d1", run_key="k", extracted_at=dt.datetime.now(dt.UTC), warnings=[])
    PartWriter(tmp_path, "run1", schema).commit([row], [])
    got = duckdb.sql(
        f"SELECT first.qty, first.desc, first.amount, first.count, first.ok, first.when, first.kind, first.at, "
        f"lines[2].qty, lines[2].desc, lines[2].amount, lines[2].count, lines[2].ok, lines[2].at, ratio "
        f"FROM '{tmp_path}/results/*.parquet'"
    ).fetchall()
    assert got == [(3, "bolts", Decimal("7.50"), 4, True, dt.date(2024, 3, 5), "a", "10:30:00",
                    9, "nuts", Decimal("0.25"), 11, False, None, 0.5)]
