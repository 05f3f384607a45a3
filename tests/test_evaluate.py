"""pipeline.evaluate: field-level scores of a results directory against ground truth (no model).

Truth directories hold small dummy documents (their doc_id is the SHA-256 of their bytes) and
results are real Parquet parts written with the project's own ``results_schema`` / ``model_row``.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import itertools
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from pipeline.columns import FAILURES_SCHEMA, model_row, results_schema
from pipeline.evaluate import (
    EvalError,
    EvalReport,
    ReportFormatError,
    evaluate,
    format_table,
    max_weight_pairs,
    parse_amount,
    parse_date,
    read_report,
    report_format,
    write_report,
)
from schemas import Invoice, Receipt
from tests.helpers import invoice_truth

INVOICE_FIELDS = [
    "invoice_number", "issue_date", "due_date", "currency", "vendor.name", "vendor.address", "vendor.tax_id",
    "customer.name", "customer.address", "customer.tax_id", "subtotal", "tax", "total",
    "line_items.description", "line_items.quantity", "line_items.unit_price", "line_items.amount",
]  # fmt: skip
PART = "part-20240101T000000000000Z-aaaaaa-{:05d}.parquet"


# --------------------------------------------------------------------------- helpers


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_doc(d: Path, name: str, truth: dict[str, Any], schema: str | None = "invoice") -> str:
    """Write a dummy document and its ``.truth.json``; returns its doc_id."""
    d.mkdir(parents=True, exist_ok=True)
    data = f"%PDF-1.4 {name}".encode()
    (d / f"{name}.pdf").write_bytes(data)
    body = {"schema": schema, "truth": truth} if schema else truth
    (d / f"{name}.truth.json").write_text(json.dumps(body, ensure_ascii=False))
    return sha(data)


def result_row(model: type[BaseModel], value: dict[str, Any], doc_id: str, source: str, **changes: Any) -> dict:
    """A results row as the runner writes it, then ``changes`` applied to the typed columns."""
    row = model_row(model.model_validate(value), results_schema(model))
    row.update(doc_id=doc_id, source_path=source, schema_name=model.__name__.lower(), **changes)
    return row


def write_results(out: Path, model: type[BaseModel], rows: list[dict], failures: list[dict] = (), seq: int = 0) -> None:
    for table, schema, data in (("results", results_schema(model), rows), ("failures", FAILURES_SCHEMA, failures)):
        (out / table).mkdir(parents=True, exist_ok=True)
        if data:
            pq.write_table(pa.Table.from_pylist(list(data), schema=schema), out / table / PART.format(seq))


def failure_row(doc_id: str, source: str, error_type: str = "corrupt", schema: str = "invoice") -> dict:
    return {"doc_id": doc_id, "source_path": source, "stage": "rasterize", "error_type": error_type,
            "schema_name": schema}  # fmt: skip


@pytest.fixture
def invoices(tmp_path: Path) -> dict[str, Any]:
    """Five invoices with two line items each, in a truth dir; results rows equal to truth."""
    truth_dir = tmp_path / "truth"
    docs = []
    for n in range(1, 6):
        t = invoice_truth(n, lines=2)
        doc_id = put_doc(truth_dir, f"inv{n}", t)
        docs.append({"truth": t, "doc_id": doc_id, "row": result_row(Invoice, t, doc_id, f"/in/inv{n}.pdf")})
    return {"truth": truth_dir, "out": tmp_path / "out", "docs": docs}


def assert_perfect(report: EvalReport, names: list[str]) -> None:
    for name in names:
        f = report.field_stats(name)
        assert (f.precision, f.recall, f.f1) == (1.0, 1.0, 1.0), f


# --------------------------------------------------------------------------- (1) perfect results


def test_results_equal_to_truth_score_one_everywhere(invoices):
    write_results(invoices["out"], Invoice, [d["row"] for d in invoices["docs"]])
    r = evaluate(invoices["truth"], invoices["out"])
    assert r.schema == "invoice" and r.mode == "documents"
    assert (r.truth_documents, r.matched, r.missing, r.failed) == (5, 5, 0, 0)
    assert [f.field for f in r.fields] == INVOICE_FIELDS
    assert_perfect(r, INVOICE_FIELDS)
    assert r.field_stats("total").tp == 5 and r.field_stats("line_items.amount").tp == 10
    assert r.field_stats("customer.tax_id").tp == 0  # absent on both sides: nothing counted, scores 1
    assert (r.overall.precision, r.overall.recall, r.overall.f1) == (1.0, 1.0, 1.0)
    assert r.exact_match_rate == 1.0 and r.exact_matches == 5
    it = r.items[0]
    assert (it.field, it.truth_items, it.predicted_items, it.exact, it.f1) == ("line_items", 10, 10, 10, 1.0)


# --------------------------------------------------------------------------- (2) perturbations


def test_perturbed_fields_drop_exactly_where_expected(invoices):
    rows = [copy.deepcopy(d["row"]) for d in invoices["docs"]]
    rows[0]["total"] = Decimal("999.00")
    rows[1]["total"] = Decimal("1.00")
    rows[2]["line_items"] = rows[2]["line_items"][::-1]  # order must not matter
    rows[3]["line_items"] = rows[3]["line_items"][:1]  # one line item dropped
    write_results(invoices["out"], Invoice, rows)
    r = evaluate(invoices["truth"], invoices["out"])

    total = r.field_stats("total")
    assert (total.tp, total.fp, total.fn) == (3, 2, 2)
    assert total.precision == pytest.approx(3 / 5) and total.recall == pytest.approx(3 / 5)
    assert total.f1 == pytest.approx(3 / 5)
    for name in ("line_items.description", "line_items.quantity", "line_items.unit_price", "line_items.amount"):
        f = r.field_stats(name)
        assert (f.tp, f.fp, f.fn) == (9, 0, 1)
        assert f.precision == 1.0 and f.recall == pytest.approx(9 / 10) and f.f1 == pytest.approx(18 / 19)
    assert_perfect(r, [n for n in INVOICE_FIELDS if n != "total" and not n.startswith("line_items.")])

    # 5 docs x (11 present scalars + 2 items x 4 fields) = 95 truth values; 2 wrong totals, 4 values dropped
    assert (r.overall.tp, r.overall.fp, r.overall.fn) == (89, 2, 6)
    assert r.overall.precision == pytest.approx(89 / 91) and r.overall.recall == pytest.approx(89 / 95)
    assert (r.items[0].truth_items, r.items[0].predicted_items, r.items[0].exact) == (10, 9, 9)
    assert r.exact_matches == 2 and r.exact_match_rate == pytest.approx(2 / 5)  # docs 3 (swapped) and 5
    assert [d.mismatched for d in r.documents] == [["total"], ["total"], [], ["line_items"], []]


def test_line_items_are_matched_by_content_not_position(tmp_path):
    t = invoice_truth(1, lines=3)
    doc_id = put_doc(tmp_path / "truth", "inv", t)
    row = result_row(Invoice, t, doc_id, "/in/inv.pdf")
    a, b, c = row["line_items"]
    wrong_amount = dict(a, amount=a["amount"] + 1)  # A: amount wrong
    renamed = dict(b, description="Gadget")  # B: description wrong
    row["line_items"] = [c, wrong_amount, renamed]  # by position every description and amount would be wrong
    write_results(tmp_path / "out", Invoice, [row])
    r = evaluate(tmp_path / "truth", tmp_path / "out")
    counts = {n: (f.tp, f.fp, f.fn) for n, f in ((f.field, f) for f in r.fields) if n.startswith("line_items.")}
    assert counts == {
        "line_items.description": (2, 1, 1),
        "line_items.quantity": (3, 0, 0),
        "line_items.unit_price": (3, 0, 0),
        "line_items.amount": (2, 1, 1),
    }
    assert (r.items[0].matched, r.items[0].exact) == (3, 1)
    assert r.exact_match_rate == 0.0


def test_assignment_is_optimal_against_brute_force():
    rng = random.Random(7)
    for _ in range(200):
        n, m = rng.randint(1, 5), rng.randint(1, 5)
        w = [[rng.randint(0, 9) for _ in range(m)] for _ in range(n)]
        pairs = max_weight_pairs(w)
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs}) == min(n, m)
        if n <= m:
            best = max(sum(w[i][p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
        else:
            best = max(sum(w[p[j]][j] for j in range(m)) for p in itertools.permutations(range(n), m))
        assert sum(w[i][j] for i, j in pairs) == best


# --------------------------------------------------------------------------- (3) failures and missing documents


def test_failed_and_missing_documents_are_misses(invoices):
    docs = invoices["docs"]
    failed = [failure_row(docs[3]["doc_id"], "/in/inv4.pdf")]
    write_results(invoices["out"], Invoice, [d["row"] for d in docs[:3]], failures=failed)  # docs[4]: no row at all
    r = evaluate(invoices["truth"], invoices["out"])
    assert (r.truth_documents, r.matched, r.failed, r.missing) == (5, 3, 1, 1)
    assert r.failures_by_type == {"corrupt": 1}
    for name in INVOICE_FIELDS:
        f = r.field_stats(name)
        if name.startswith("customer.") and name != "customer.name":
            assert (f.tp, f.fp, f.fn, f.f1) == (0, 0, 0, 1.0)  # absent in every truth: unaffected
        elif name.startswith("line_items."):
            assert (f.tp, f.fp, f.fn) == (6, 0, 4) and f.precision == 1.0 and f.recall == pytest.approx(0.6)
        else:
            assert (f.tp, f.fp, f.fn) == (3, 0, 2) and f.precision == 1.0 and f.recall == pytest.approx(0.6)
    assert r.exact_match_rate == pytest.approx(3 / 5)
    assert [d.status for d in r.documents] == ["matched"] * 3 + ["failed", "missing"]


def test_failing_more_never_scores_higher(invoices):
    docs = invoices["docs"]
    write_results(invoices["out"], Invoice, [d["row"] for d in docs])
    all_ok = evaluate(invoices["truth"], invoices["out"])
    more_failed = invoices["out"].parent / "out2"
    write_results(more_failed, Invoice, [d["row"] for d in docs[:2]], [failure_row(d["doc_id"], "x") for d in docs[2:]])
    worse = evaluate(invoices["truth"], more_failed)
    assert worse.overall.recall < all_ok.overall.recall and worse.overall.f1 < all_ok.overall.f1
    assert worse.truth_documents == 5  # failures stay in the denominator


def test_newest_row_per_document_wins(invoices):
    docs = invoices["docs"]
    out = invoices["out"]
    # part 0: doc1 failed, doc2 extracted; part 1 (newer): doc1 extracted (--retry-failed), doc2 failed (--force)
    write_results(out, Invoice, [docs[1]["row"]], [failure_row(docs[0]["doc_id"], "a", "engine_error")], seq=0)
    write_results(out, Invoice, [docs[0]["row"]], [failure_row(docs[1]["doc_id"], "b", "truncated")], seq=1)
    r = evaluate(invoices["truth"], out)
    assert [d.status for d in r.documents[:2]] == ["matched", "failed"]
    assert r.failures_by_type == {"truncated": 1}


# --------------------------------------------------------------------------- (4) normalisation


def test_number_date_and_text_normalisation_count_as_equal(tmp_path):
    truth = {
        "merchant": "  ACME   Store ",
        "address": "",
        "date": "05/03/2024",
        "time": "9:05",
        "items": [{"description": "Coffee  Beans", "quantity": 1, "amount": "1.234,56"}],
        "total": "1.234,56",
    }
    doc_id = put_doc(tmp_path / "truth", "r1", truth, schema="receipt")
    pred = {
        "merchant": "acme store",
        "date": "2024-03-05",
        "time": "09:05:00",
        "items": [{"description": "COFFEE BEANS", "quantity": "1.0", "amount": "1234.56"}],
        "total": "1234.56",
    }
    write_results(tmp_path / "out", Receipt, [result_row(Receipt, pred, doc_id, "/in/r1.pdf")])
    r = evaluate(tmp_path / "truth", tmp_path / "out")
    assert r.schema == "receipt"
    for name in ("merchant", "date", "time", "total", "items.description", "items.quantity", "items.amount"):
        assert r.field_stats(name).tp == 1 and r.field_stats(name).f1 == 1.0
    assert r.field_stats("address").tp + r.field_stats("address").fp + r.field_stats("address").fn == 0  # "" = absent
    assert r.exact_match_rate == 1.0


@pytest.mark.parametrize(
    "text,value",
    [
        ("9.00", "9"),
        ("1,234.50", "1234.5"),
        ("1.234,56", "1234.56"),
        ("9,00", "9"),
        ("RM 12.30", "12.3"),
        ("1 234,56 €", "1234.56"),
        ("1.234.567", "1234567"),
        ("-3.10", "-3.1"),
    ],
)
def test_parse_amount(text, value):
    assert parse_amount(text) == Decimal(value)


@pytest.mark.parametrize(
    "text,value",
    [
        ("2018-12-25", dt.date(2018, 12, 25)),
        ("25/12/2018", dt.date(2018, 12, 25)),
        ("05/03/2024", dt.date(2024, 3, 5)),
        ("25.12.18", dt.date(2018, 12, 25)),
        ("12/25/2018", dt.date(2018, 12, 25)),  # day-first impossible: month first
        ("5 Mar 2024", dt.date(2024, 3, 5)),
        ("06 JAN 2018 10:31", dt.date(2018, 1, 6)),
        ("March 5, 2024", dt.date(2024, 3, 5)),
        ("2024年3月5日", dt.date(2024, 3, 5)),
        ("no date here", None),
    ],
)
def test_parse_date(text, value):
    assert parse_date(text) == value


# --------------------------------------------------------------------------- (5) SROIE


def test_sroie_truth_maps_onto_the_receipt_schema(tmp_path):
    d = tmp_path / "sroie"
    d.mkdir()
    img = b"\xff\xd8\xff\xe0 receipt one"
    (d / "X001.jpg").write_bytes(img)
    key1 = {"company": "ACME SDN BHD", "date": "25/12/2018", "address": "1 JALAN  MAJU, KL", "total": "9.00"}
    (d / "X001.txt").write_text(json.dumps(key1))
    key2 = {"company": "KEDAI RUNCIT", "date": "2018-12-26", "address": "2 LORONG", "total": "1,234.50"}
    (d / "X002.json").write_text(json.dumps(key2))  # no image here: matched by source_path stem
    (d / "X003.txt").write_text("72,25,326,25,326,64,72,64,TAN WOON YANN\n")  # an OCR box file: not truth

    r1 = result_row(
        Receipt,
        {"merchant": "Acme Sdn Bhd", "address": "1 Jalan Maju, KL", "date": "2018-12-25", "total": "9.00",
         "items": [{"description": "tea", "amount": "9.00"}], "payment_method": "cash"},  # fmt: skip
        sha(img),
        "/in/X001.jpg",
    )
    r2 = result_row(
        Receipt,
        {"merchant": "Kedai Runcit", "address": "3 Lorong", "date": "2018-12-26", "total": "1234.50"},
        "some-other-id",
        "/elsewhere/X002.jpg",
    )
    write_results(tmp_path / "out", Receipt, [r1, r2])
    r = evaluate(d, tmp_path / "out")
    assert (r.mode, r.schema, r.truth_documents, r.matched) == ("sroie", "receipt", 2, 2)
    assert [f.field for f in r.fields] == ["merchant", "address", "date", "total"] and r.items == []
    assert_perfect(r, ["merchant", "date", "total"])
    a = r.field_stats("address")
    assert (a.tp, a.fp, a.fn, a.precision, a.recall) == (1, 1, 1, 0.5, 0.5)
    assert r.exact_match_rate == 0.5
    assert any("not SROIE key files" in w for w in r.warnings)
    with pytest.raises(EvalError, match="receipt"):
        evaluate(d, tmp_path / "out", schema="invoice")


# --------------------------------------------------------------------------- truth layouts and schema choice


def test_truth_jsonl_index_and_bare_truth_dicts(tmp_path):
    d = tmp_path / "truth"
    d.mkdir()
    t1, t2 = invoice_truth(1), invoice_truth(2)
    (d / "a.pdf").write_bytes(b"%PDF-1.4 a")
    (d / "truth.jsonl").write_text(json.dumps({"file": "a.pdf", "schema": "invoice", "truth": t1}) + "\n")
    id2 = put_doc(d, "b", t2, schema=None)  # bare dict, no wrapper
    rows = [result_row(Invoice, t1, sha(b"%PDF-1.4 a"), "/x/a.pdf"), result_row(Invoice, t2, id2, "/x/b.pdf")]
    write_results(tmp_path / "out", Invoice, rows)
    r = evaluate(d, tmp_path / "out")
    assert (r.truth_documents, r.matched, r.exact_match_rate) == (2, 2, 1.0)


def test_identical_documents_are_scored_once(tmp_path):
    d = tmp_path / "truth"
    doc_id = put_doc(d, "inv", invoice_truth(1))
    (d / "copy").mkdir()
    (d / "copy" / "inv.pdf").write_bytes((d / "inv.pdf").read_bytes())
    (d / "copy" / "inv.truth.json").write_text((d / "inv.truth.json").read_text())
    write_results(tmp_path / "out", Invoice, [result_row(Invoice, invoice_truth(1), doc_id, "/in/inv.pdf")])
    r = evaluate(d, tmp_path / "out")
    assert (r.truth_documents, r.skipped_truth, r.field_stats("total").tp) == (1, 0, 1)
    assert any("scored once" in w for w in r.warnings)


def test_mixed_truth_needs_a_schema_and_other_schemas_are_skipped(tmp_path):
    d = tmp_path / "truth"
    inv_id = put_doc(d, "inv", invoice_truth(1))
    put_doc(d, "rec", {"merchant": "Shop", "date": "2024-01-02", "total": "3.00"}, schema="receipt")
    (tmp_path / "out").mkdir()
    with pytest.raises(EvalError, match="invoice: 1, receipt: 1"):
        evaluate(d, tmp_path / "out")
    write_results(tmp_path / "out", Invoice, [result_row(Invoice, invoice_truth(1), inv_id, "/in/inv.pdf")])
    r = evaluate(d, tmp_path / "out")  # the results' only schema decides
    assert (r.schema, r.truth_documents, r.skipped_truth, r.exact_match_rate) == ("invoice", 1, 1, 1.0)
    r = evaluate(d, tmp_path / "out", schema="receipt")  # invoice rows are not receipt predictions
    assert (r.truth_documents, r.missing) == (1, 1)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(EvalError, match="no ground truth"):
        evaluate(tmp_path, tmp_path)
    put_doc(tmp_path / "t", "inv", invoice_truth(1))
    with pytest.raises(EvalError, match="does not exist"):
        evaluate(tmp_path / "t", tmp_path / "nowhere")


# --------------------------------------------------------------------------- (6) report output


def test_write_report_round_trips_and_table_names_every_field(invoices, tmp_path):
    rows = [d["row"] for d in invoices["docs"]]
    rows[0] = dict(rows[0], total=Decimal("1.00"))
    write_results(invoices["out"], Invoice, rows[:4])
    report = evaluate(invoices["truth"], invoices["out"])

    write_report(report, tmp_path / "eval.json")
    assert read_report(tmp_path / "eval.json") == report
    assert json.loads((tmp_path / "eval.json").read_text())["overall"]["tp"] == report.overall.tp

    write_report(report, tmp_path / "eval.parquet")
    table = pq.read_table(tmp_path / "eval.parquet")
    assert table.num_rows == len(INVOICE_FIELDS) and table.column("field").to_pylist() == INVOICE_FIELDS
    by_field = {r["field"]: r for r in table.to_pylist()}
    assert (by_field["total"]["tp"], by_field["total"]["fp"], by_field["total"]["fn"]) == (3, 1, 2)
    assert by_field["total"]["precision"] == pytest.approx(0.75) and by_field["total"]["kind"] == "scalar"
    assert by_field["line_items.amount"]["kind"] == "item"
    assert read_report(tmp_path / "eval.parquet") == report

    text = format_table(report)
    for name in INVOICE_FIELDS:
        assert name in text
    assert "overall" in text and "missing 1" in text and "exact match" in text
    with pytest.raises(EvalError, match=".json or .parquet"):
        write_report(report, tmp_path / "eval.csv")


def test_unknown_report_extension_is_refused_before_anything_is_written(invoices, tmp_path):
    assert report_format("out/eval.json") == ".json" and report_format(Path("E.PARQUET")) == ".parquet"
    with pytest.raises(ReportFormatError, match=r"eval\.csv: report format must be \.json or \.parquet \(not \.csv\)"):
        report_format("out/eval.csv")  # checkable before any evaluation runs
    write_results(invoices["out"], Invoice, [d["row"] for d in invoices["docs"]])
    report = evaluate(invoices["truth"], invoices["out"])
    for name in ("new/eval.csv", "new/eval", "new/eval.json.bak"):
        with pytest.raises(ReportFormatError, match=r"must be \.json or \.parquet") as e:
            write_report(report, tmp_path / name)
        assert isinstance(e.value, EvalError) and isinstance(e.value, ValueError)
        assert not (tmp_path / "new").exists()  # refused before any file or directory was made
    assert "has no extension" in str(pytest.raises(ReportFormatError, write_report, report, tmp_path / "eval").value)
    write_report(report, tmp_path / "E.JSON")  # the extension's case does not matter
    assert read_report(tmp_path / "E.JSON") == report
