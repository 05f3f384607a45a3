"""A run whose schema differs from the output's: refused (exit 2, naming each difference and the option),
or, when it only adds nullable columns and --allow-schema-change is given, the whole table migrated so
every documented query keeps working."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline import layout
from pipeline.columns import results_schema
from pipeline.compact import pending, rewrite_whole
from pipeline.runner import run_job
from pipeline.schema_change import conform, diff
from pipeline.store import read_part_schema
from tests.conftest import small_config
from tests.evolved_schemas import InvoiceWithPO
from tests.helpers import add_invoices, run_cli
from tests.s3_server import S3Server, s3_server  # noqa: F401  (the session fixture)

SCRIPTED = "tests.scripted_engine:from_truth"
PO = "tests.evolved_schemas:InvoiceWithPO"


def cli_run(inbox: Path, out: Any, *extra: object) -> Any:
    return run_cli("run", inbox, "--out", out, "--engine", SCRIPTED, "--workers", 1, "--set", "rasterize.dpi=72",
                   *extra, env={"DOCEXTRACT_TRUTH_DIR": str(inbox)})


@pytest.fixture(scope="module")
def invoices(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two nights of invoice results (two parts) in an output."""
    base = tmp_path_factory.mktemp("schema")
    inbox, out = base / "in", base / "out"
    for night in range(2):
        add_invoices(inbox, night * 2, 2)
        r = cli_run(inbox, out)
        assert r.returncode == 0, r.stderr
    return inbox, out


@pytest.fixture
def out(invoices: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(invoices[1], tmp_path / "out")
    return tmp_path / "out"


def listing(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*.parquet")}


def test_an_added_column_is_refused_by_default_naming_it_and_the_option(invoices, out):
    before = listing(out)
    r = cli_run(invoices[0], out, "--schema", PO)
    assert r.returncode == 2
    assert "+po_number" in r.stderr and "+vendor.email" in r.stderr and "--allow-schema-change" in r.stderr
    assert listing(out) == before  # nothing rewritten, nothing written


def test_a_type_change_is_refused_even_with_the_option(invoices, out):
    before = listing(out)
    r = cli_run(invoices[0], out, "--schema", "tests.evolved_schemas:InvoiceTotalText", "--allow-schema-change")
    assert r.returncode == 2
    assert "total: decimal128(18, 2) -> string" in r.stderr and "another output" in r.stderr
    r = cli_run(invoices[0], out, "--schema", "receipt", "--allow-schema-change")  # drops the invoice's columns
    assert r.returncode == 2 and "-invoice_number" in r.stderr and "dropped or renamed" in r.stderr
    assert listing(out) == before


def test_added_columns_migrate_the_table_and_every_documented_query_works(invoices, out):
    inbox = invoices[0]
    old_ids = {r[0] for r in duckdb.sql(f"SELECT doc_id FROM '{out}/results/*.parquet'").fetchall()}
    add_invoices(inbox / "new", 10, 1, po_number="PO-77", vendor={"name": "New GmbH", "email": "a@new.example"})
    r = cli_run(inbox / "new", out, "--schema", PO, "--allow-schema-change")
    assert r.returncode == 0, r.stderr
    assert "schema change: +vendor.email, +po_number added to the 4 existing row(s)" in r.stderr
    parts = layout.list_parts(out / "results")
    want = results_schema(InvoiceWithPO)
    assert all(read_part_schema(p).equals(want, check_metadata=False) for p in parts)  # one schema: plain globs
    # the README's queries
    got = duckdb.sql(f"SELECT doc_id, vendor.name, vendor.email, po_number, total FROM '{out}/results/*.parquet'").fetchall()
    assert len(got) == 5
    old = [g for g in got if g[0] in old_ids]
    assert len(old) == 4 and all(g[2] is None and g[3] is None and isinstance(g[4], Decimal) for g in old)
    new = [g for g in got if g[0] not in old_ids]
    assert [(g[1], g[2], g[3]) for g in new] == [("New GmbH", "a@new.example", "PO-77")]
    assert duckdb.sql(f"SELECT error_type, count(*) FROM '{out}/failures/*.parquet' GROUP BY 1").fetchall() == []
    t = ds.dataset(out / "results", format="parquet").to_table()
    assert t.num_rows == 5 and t.schema.field("po_number").type == pa.string()
    assert pa.types.is_struct(t.schema.field("vendor").type) and t.schema.field("vendor").type.get_field_index("email") >= 0
    history = json.loads((out / "_state" / "schema.json").read_text())["tables"]["results"]
    assert [h["change"] for h in history["history"]] == ["created", "+vendor.email, +po_number"]
    assert "pending" not in json.loads((out / "_state" / "schema.json").read_text())
    # the old documents keep their rows (old run key) until reprocessed; a run over them replaces them
    again = cli_run(inbox, out, "--schema", PO, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["processed"] == 4
    assert duckdb.sql(f"SELECT count(*), count(DISTINCT doc_id) FROM '{out}/results/*.parquet'").fetchall() == [(5, 5)]


def test_conform_adds_null_fields_inside_lists_of_structs():
    old = pa.schema([("items", pa.list_(pa.struct([("a", pa.int64())]))), ("x", pa.string())])
    new = pa.schema([("x", pa.string()), ("items", pa.list_(pa.struct([("a", pa.int64()), ("b", pa.string())]))),
                     ("y", pa.date32())])
    d = diff(old, new)
    assert (d.added, d.removed, d.changed, d.reordered, d.additive) == (["items[].b", "y"], [], [], True, True)
    t = pa.table({"items": [[{"a": 1}, {"a": 2}], None], "x": ["p", "q"]}, schema=old)
    c = conform(t, new)
    assert c.schema.equals(new)
    assert c.to_pylist() == [{"x": "p", "items": [{"a": 1, "b": None}, {"a": 2, "b": None}], "y": None},
                             {"x": "q", "items": None, "y": None}]


def test_migration_on_s3_cut_short_is_finished_by_the_next_run(s3_server, tmp_path, monkeypatch):
    inbox = tmp_path / "in"
    add_invoices(inbox, 0, 3)
    out = f"{s3_server.prefix()}/out"
    cfg = small_config(**{"engine.name": SCRIPTED, "engine.options": {"truth_dir": str(inbox)}})
    for i in range(3):  # three parts
        add_invoices(inbox, 10 + i, 1)
        assert run_job([str(inbox)], out, cfg).exit_code == 0
    want = results_schema(InvoiceWithPO)
    import pipeline.compact as c

    real = c._read_parquet
    calls: list[Any] = []

    def crash_on_second(loc: Any, columns: Any = None) -> pa.Table:
        calls.append(loc)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(loc, columns)

    monkeypatch.setattr(c, "_read_parquet", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        rewrite_whole(out, "results", want, None, "20990101T000000000000Z-x", 1)  # 1 byte: a part per part read
    monkeypatch.undo()
    assert pending(out) is not None
    keys = [k for k in s3_server.keys(out) if "/results/" in k]
    assert len(keys) == 4 and sum("-compact-" in k for k in keys) == 1  # one part migrated, its old copy still there
    cfg2 = cfg.model_copy(update={"schema_name": PO, "output": cfg.output.model_copy(update={"schema_change": "add_columns"})})
    s = run_job([str(inbox)], out, cfg2)
    assert s.exit_code == 0 and pending(out) is None
    bucket = out.removeprefix("s3://")
    schemas = [read_part_schema(f"s3://{bucket}/results/{k.rsplit('/', 1)[1]}") for k in s3_server.keys(out)
               if "/results/" in k]
    assert schemas and all(s.equals(want, check_metadata=False) for s in schemas)
    t = pq.read_table(f"{bucket}/results", filesystem=s3_server.fs)
    assert t.num_rows == 6 and len(set(t.column("doc_id").to_pylist())) == 6
