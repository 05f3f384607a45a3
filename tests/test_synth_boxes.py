"""Synthetic truth files carry the box of every value the generator draws (pipeline.synth)."""

from __future__ import annotations

import json
from decimal import Decimal

import pymupdf
import pytest

from pipeline.evidence_norm import amounts_in, fold
from pipeline.synth import generate


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    return d, generate(d, 8, seed=21, mix={"pdf-digital": 3, "pdf-scan": 1, "jpeg-scan": 1, "png-receipt": 1,
                                            "jpeg-photo-receipt": 2})


def test_every_document_has_boxes_in_page_fractions(batch):
    d, docs = batch
    rows = {json.loads(line)["file"]: json.loads(line) for line in (d / "truth.jsonl").read_text().splitlines()}
    for doc in docs:
        on_disk = json.loads(doc.path.with_name(doc.path.name.split(".")[0] + ".truth.json").read_text())
        assert on_disk["boxes"] == doc.boxes == rows[doc.path.name]["boxes"]
        assert "total" in doc.boxes
        assert ("merchant" if doc.kind == "receipt" else "vendor.name") in doc.boxes
        for boxes in doc.boxes.values():
            for b in boxes:
                x0, y0, x1, y1 = b["box"]
                assert 1 <= b["page"] <= doc.pages
                assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


def test_digital_boxes_hold_the_printed_value(batch):
    _, docs = batch
    checked = 0
    for doc in (x for x in docs if x.variant == "pdf-digital"):
        with pymupdf.open(doc.path) as pdf:
            for field in ("invoice_number", "vendor.name", "total", "subtotal", "line_items[0].amount"):
                for b in doc.boxes.get(field, []):
                    page = pdf[b["page"] - 1]
                    w, h = page.rect.width, page.rect.height
                    x0, y0, x1, y1 = b["box"]
                    text = page.get_textbox(pymupdf.Rect(x0 * w - 0.5, y0 * h + 1, x1 * w + 0.5, y1 * h - 1))
                    value = dict(_leaves(doc.truth))[field]
                    if field in ("total", "subtotal", "line_items[0].amount"):
                        assert Decimal(value) in amounts_in(text.replace("\n", "")), (field, text)
                    else:
                        assert fold(value) in fold(text.replace("\n", " ")), (field, text)
                    checked += 1
    assert checked >= 12


def _leaves(truth):
    from pipeline.fields import leaf_values

    return leaf_values(truth)
