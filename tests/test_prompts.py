"""pipeline/prompts.py: the JSON schema the decoder is held to, and the prompt text."""

import json

from pipeline.prompts import build_request, json_schema_for, reask_request
from pipeline.records import Page, Sampling
from schemas import Invoice


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
