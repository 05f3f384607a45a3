import json
from pathlib import Path

from pipeline.fields import leaf_values
from schemas.invoice import Invoice


def test_leaf_paths_are_dotted_with_zero_based_list_indexes():
    data = {"vendor": {"name": "ACME", "address": None}, "line_items": [{"amount": "1.50"}, {"amount": "2.00"}],
            "tags": [], "total": "3.50"}
    assert leaf_values(data) == [
        ("vendor.name", "ACME"), ("vendor.address", None),
        ("line_items[0].amount", "1.50"), ("line_items[1].amount", "2.00"), ("total", "3.50"),
    ]


def test_a_validated_model_is_walked_in_its_json_form():
    truth = json.loads(Path("data/samples/invoices/00002-invoice-pdf-digital.truth.json").read_text())
    invoice = Invoice.model_validate(truth["truth"])
    leaves = dict(leaf_values(invoice))
    assert leaves["vendor.name"] == invoice.vendor.name
    assert leaves["total"] == str(invoice.total)  # JSON mode: Decimal as text
    n = len(invoice.line_items)
    assert f"line_items[{n - 1}].amount" in leaves and f"line_items[{n}].amount" not in leaves
