import datetime as dt
import json
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest
from pydantic import BaseModel, Field

from pipeline.columns import FAILURES_SCHEMA, model_row, results_schema
from pipeline.config import ConfigError, load_config
from pipeline.errors import SchemaMappingError
from pipeline.prompts import build_request, json_schema_for, reask_request
from pipeline.records import ErrorType, Extraction, Failure, Generation, Page, Sampling, Stage
from pipeline.store import PartWriter, finished_docs
from pipeline.validate import validate_generation
from schemas import Invoice, Receipt, resolve
from tests.conftest import invoice_truth


def gen(text, finish="stop", **kw):
    return Generation("d1", text, finish, **kw)


def test_valid_answer_becomes_extraction_with_decimals():
    out = validate_generation(gen(json.dumps(invoice_truth())), Invoice)
    assert isinstance(out, Extraction)
    assert isinstance(out.value.total, Decimal) and out.value.total == Decimal(invoice_truth()["total"])


@pytest.mark.parametrize(
    "text,finish,etype,stage",
    [
        ('{"invoice_number": "A', "length", ErrorType.TRUNCATED, Stage.INFER),
        ("not json at all", "stop", ErrorType.INVALID_JSON, Stage.VALIDATE),
        ("[1, 2]", "stop", ErrorType.SCHEMA_MISMATCH, Stage.VALIDATE),
        ('{"invoice_number": "A"}', "stop", ErrorType.SCHEMA_MISMATCH, Stage.VALIDATE),
    ],
)
def test_failure_categories(text, finish, etype, stage):
    out = validate_generation(gen(text, finish, output_tokens=7), Invoice)
    assert isinstance(out, Failure) and out.error_type is etype and out.stage is stage
    assert out.raw_output == text


def test_business_rules_are_rule_violations_naming_the_rule():
    t = invoice_truth()
    t["total"] = str(Decimal(t["total"]) + 5)
    t["due_date"] = "2024-01-01"
    out = validate_generation(gen(json.dumps(t)), Invoice)
    assert isinstance(out, Failure) and out.error_type is ErrorType.RULE_VIOLATION
    assert "subtotal_plus_tax_equals_total" in out.message and "due_date_not_before_issue_date" in out.message
    t = invoice_truth(lines=3)
    t["line_items"][0]["amount"] = "999.00"
    out = validate_generation(gen(json.dumps(t)), Invoice)
    assert out.error_type is ErrorType.RULE_VIOLATION and "line_items_sum_to_subtotal" in out.message


def test_rounding_tolerance_accepts_a_cent():
    t = invoice_truth()
    t["total"] = str(Decimal(t["total"]) + Decimal("0.01"))
    assert isinstance(validate_generation(gen(json.dumps(t)), Invoice), Extraction)


def test_engine_error_generation_is_infer_failure():
    g = Generation("d1", "", "error", error="ValueError: bad image", error_type=ErrorType.REQUEST_INVALID)
    out = validate_generation(g, Invoice)
    assert out.stage is Stage.INFER and out.error_type is ErrorType.REQUEST_INVALID


def test_json_schema_is_inlined_and_typed_for_decoding():
    s = json_schema_for(Invoice)
    assert "$defs" not in json.dumps(s) and "$ref" not in json.dumps(s)
    assert s["properties"]["total"]["type"] == "number"
    assert s["properties"]["issue_date"]["pattern"] == r"^\d{4}-\d{2}-\d{2}$"
    assert s["properties"]["vendor"]["properties"]["name"]["type"] == "string"
    assert s["additionalProperties"] is False


def test_prompt_lists_fields_with_descriptions_and_pages_in_order():
    from PIL import Image

    pages = [Page("d", i, Image.new("RGB", (56, 56), (i, i, i)), 56, 56) for i in range(3)]
    req = build_request("d", pages, Invoice, json_schema_for(Invoice), Sampling())
    system = req.messages[0]["content"]
    assert "vendor.tax_id" in system and "line_items[].unit_price" in system
    assert Invoice.model_fields["due_date"].description in system
    assert [im.getpixel((0, 0))[0] for im in req.images] == [0, 1, 2]
    again = reask_request(req, '{"x": 1}', ["total: Field required"], Sampling(temperature=0.3))
    assert again.attempt == 2 and again.messages[-2]["content"] == '{"x": 1}'
    assert "total: Field required" in again.messages[-1]["content"][0]["text"]
    assert len(again.images) == 3


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


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'engine.max_num_seq'"):
        load_config(None, {"engine.max_num_seq": 4})
    with pytest.raises(ConfigError, match="'rasterize.dpi'"):
        load_config(None, {"rasterize.dpi": 5})
    p = tmp_path / "c.toml"
    p.write_text('schema = "receipt"\n[engine]\nmodel = "/m"\nprofile = "cpu"\n[run]\nbatch_size = 3\n')
    c = load_config(p, {"run.batch_size": 7})
    assert (c.schema_name, c.engine.model, c.engine.profile, c.run.batch_size) == ("receipt", "/m", "cpu", 7)
    p.write_text("[engine\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="min_pixels"):
        load_config(None, {"rasterize.min_pixels": 10000, "rasterize.max_pixels": 5000})


def test_example_configs_are_valid():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))
    assert files
    for f in files:
        load_config(f)


def test_user_schema_resolves_and_unknown_is_clear():
    assert resolve("tests.user_schema:PurchaseOrder").__name__ == "PurchaseOrder"
    with pytest.raises(ValueError, match="unknown schema"):
        resolve("nope")
    with pytest.raises(ValueError, match="cannot import"):
        resolve("no_such_module:X")


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


# ----------------------------------------------------------------------------- issue 17: numeric bounds


def _numeric_keys():
    """Every numeric key of the job config, as (dotted key, is_float), found from the models themselves
    so that a key added later is checked too."""
    import typing

    from pipeline.config import JobConfig

    out = []
    for section, sf in JobConfig.model_fields.items():
        model = sf.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, f in model.model_fields.items():
            kinds = set(typing.get_args(f.annotation)) or {f.annotation}
            if bool in kinds:
                continue
            if kinds & {int, float}:
                out.append((f"{section}.{name}", float in kinds))
    return out


NUMERIC_KEYS = _numeric_keys()


def test_every_numeric_key_is_found():
    keys = dict(NUMERIC_KEYS)
    assert {"rasterize.timeout_s", "run.lease_ttl_s", "engine.max_model_len", "ray.gpus_per_actor"} <= set(keys)
    assert len(keys) >= 34


@pytest.mark.parametrize("key,is_float", NUMERIC_KEYS, ids=[k for k, _ in NUMERIC_KEYS])
def test_numeric_keys_refuse_infinite_nan_and_absurd_values(key, is_float):
    """inf, 1e10 and friends used to pass, then end the run with an OverflowError (exit 1, run.json
    left saying "running").  Each is refused at load, and the error names the key."""
    bad = [10**30, -(10**30)] + ([float("inf"), float("-inf"), float("nan"), 1e300] if is_float else [])
    for value in bad:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            load_config(None, {key: value})


def test_infinite_timeout_in_toml_is_a_config_error(tmp_path):
    p = tmp_path / "c.toml"
    for text in ("[rasterize]\ntimeout_s = inf\n", "[rasterize]\ntimeout_s = 1e10\n", "[run]\nlease_ttl_s = nan\n"):
        p.write_text(text)
        with pytest.raises(ConfigError, match=r"'(rasterize\.timeout_s|run\.lease_ttl_s)'"):
            load_config(p)


@pytest.mark.parametrize(
    "key,value",
    [
        ("rasterize.timeout_s", 86400.0),
        ("rasterize.max_pixels", 16384 * 28 * 28),
        ("rasterize.max_source_pixels", 2**32),
        ("engine.max_model_len", 131072),
        ("engine.seed", 2**32 - 1),
        ("sampling.seed", 2**32 - 1),
        ("run.max_failure_rate", 0.0),
        ("run.engine_restarts", 0),
        ("ray.gpus_per_actor", 8),
    ],
)
def test_bounds_leave_real_settings_alone(key, value):
    load_config(None, {key: value})


def test_rates_and_counts_have_their_ranges():
    for key, value in [
        ("run.max_failure_rate", 1.5),
        ("run.max_failure_rate", -0.1),
        ("engine.gpu_memory_utilization", 1.01),
        ("sampling.top_p", 0),
        ("run.batch_size", 0),
        ("run.max_attempts", 0),
        ("rasterize.max_pages", 0),
        ("engine.seed", -1),
        ("engine.seed", 2**32),
        ("engine.mm_max_pixels", 100),
    ]:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            load_config(None, {key: value})


def test_discover_follow_symlinks_option():
    assert load_config(None).discover.follow_symlinks == "within_roots"
    for v in ("all", "none", "within_roots"):
        assert load_config(None, {"discover.follow_symlinks": v}).discover.follow_symlinks == v
    with pytest.raises(ConfigError, match="'discover.follow_symlinks'"):
        load_config(None, {"discover.follow_symlinks": "yes"})
