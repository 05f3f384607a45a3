"""pipeline/validate.py and schemas/: an answer becomes an Extraction or a typed Failure (JSON, schema, business rules); schema names resolve."""

import json
from decimal import Decimal

import pytest

from pipeline.records import ErrorType, Extraction, Failure, Generation, Stage
from pipeline.validate import validate_generation
from schemas import Invoice, resolve
from tests.helpers import invoice_truth


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


def test_user_schema_resolves_and_unknown_is_clear():
    assert resolve("tests.user_schema:PurchaseOrder").__name__ == "PurchaseOrder"
    with pytest.raises(ValueError, match="unknown schema"):
        resolve("nope")
    with pytest.raises(ValueError, match="cannot import"):
        resolve("no_such_module:X")
