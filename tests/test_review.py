"""``docextract review``: the static HTML report (what each page holds, read from a real run's output
plus trust-layer rows written as the contract says).  The browser's view is in test_review_browser.py."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import CouldNotStart
from pipeline.review import load_review, write_review
from pipeline.review.data import reason_field, show_value
from pipeline.review.render import doc_file
from pipeline.runner import run_job
from tests.conftest import invoice_truth
from tests.helpers import run_cli
from tests.review_fixtures import (
    CLEAN_BOX,
    INVOICE_BOX,
    NO_EVIDENCE,
    REASONS,
    TOTAL_BOX,
    XSS,
    Sample,
    evidence,
    make_sample,
    result_rows,
    write_evidence,
)
from tests.scripted_engine import ScriptedEngine


class Elements(HTMLParser):
    """Start tags with their attributes, and the text of the document."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and (cls is None or cls in a.get("class", "").split())]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return make_sample(tmp_path_factory.mktemp("review"))


@pytest.fixture(scope="module")
def report(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    html = tmp_path_factory.mktemp("report") / "html"
    write_review(sample.out, html)
    return html


def _doc(report: Path, doc_id: str) -> str:
    return (report / "docs" / doc_file(doc_id)).read_text()


def _style(box: tuple[float, float, float, float]) -> str:
    x0, y0, x1, y1 = box
    return f"left:{x0 * 100:.3f}%;top:{y0 * 100:.3f}%;width:{(x1 - x0) * 100:.3f}%;height:{(y1 - y0) * 100:.3f}%"


def test_index_counts_and_work_queue_order(sample: Sample, report: Path) -> None:
    index = (report / "index.html").read_text()
    counts = re.sub(r"<[^>]+>", "", index[index.index('class="counts"'):index.index("</div>", index.index('class="counts"'))])
    assert "4 documents" in counts and "1 flagged" in counts and "2 failed" in counts and "1 ok" in counts
    links = [a["href"] for a in Elements(index).having("a")]
    # failures first (by path: garbled.png, notes.pdf), then the flagged result, then the clean one
    expect = [sample.ids["garbled.png"], sample.ids["flagged.png"], sample.ids["clean.pdf"]]
    assert [links[0], *links[2:]] == [f"docs/{doc_file(d)}" for d in expect] and len(links) == 4
    assert "<h1>notes.pdf" in (report / links[1]).read_text()
    assert all((report / h).is_file() for h in links)
    assert len(list((report / "docs").glob("*.html"))) == 4


def test_boxes_are_placed_by_the_evidence_fractions(sample: Sample, report: Path) -> None:
    page = Elements(_doc(report, sample.ids["flagged.png"]))
    boxes = {b["data-field"]: b for b in page.having("a", "box")}
    assert set(boxes) == {"invoice_number", "total"}  # vendor.name was not found: no box
    assert boxes["invoice_number"]["style"] == _style(INVOICE_BOX)
    assert boxes["total"]["style"] == _style(TOTAL_BOX)
    assert "flagged" in boxes["total"]["class"] and "flagged" not in boxes["invoice_number"]["class"]
    # a box and its row point at each other (works without a script)
    row_of = {r["data-field"]: r["id"] for r in page.having("tr") if "data-field" in r}
    assert boxes["total"]["href"] == "#" + row_of["total"] and boxes["total"]["id"] == "b" + row_of["total"][1:]
    assert len(page.having("img")) == 1 and page.having("img")[0]["src"].startswith("data:image/jpeg;base64,")


def test_flagged_fields_marked_with_their_reasons(sample: Sample, report: Path) -> None:
    text = _doc(report, sample.ids["flagged.png"])
    rows = {r["data-field"]: r for r in Elements(text).having("tr") if "data-field" in r}
    flagged = {f for f, r in rows.items() if "flagged" in r.get("class", "")}
    assert flagged == {"total", "vendor.name", "line_items[1].description", "line_items[1].quantity",
                       "line_items[1].unit_price", "line_items[1].amount"}
    assert "line_items[10].amount" not in rows  # a reason about line_items[1] does not cover [10]...
    assert "flagged" not in rows["line_items[0].amount"].get("class", "")
    flags = text[text.index('class="flags"'):text.index("</div>", text.index('class="flags"'))]
    assert all(r in flags for r in REASONS)  # the document-level reason too, though it names no field
    row = text[re.search(r'<tr [^>]*data-field="total"', text).start():]  # type: ignore[union-attr]
    row = row[:row.index("</tr>")]
    assert "0.41" in row and "41.06" in row and "low confidence 0.41" in row and "ocr" in row


def test_values_from_documents_are_escaped(sample: Sample, report: Path) -> None:
    text = _doc(report, sample.ids["flagged.png"])
    assert text.count("<script") == 1  # ours only
    assert "<img src=x" not in text and "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in text
    assert XSS in "".join(Elements(text).text)  # shown as the text it is
    assert len(Elements(text).having("img")) == 1


def test_failures_show_stage_type_message_and_raw_output(sample: Sample, report: Path) -> None:
    text = _doc(report, sample.ids["garbled.png"])
    assert "failed at validate: invalid_json" in text
    raw = text[text.index("<details>"):text.index("</details>")]
    assert "&lt;b&gt;oops&lt;/b&gt;" in raw and "<b>oops" not in text  # collapsed, and escaped
    assert len(Elements(text).having("img")) == 1  # the page the model was shown
    notes_pdf = next(p for p in (report / "docs").glob("*.html") if "<h1>notes.pdf" in p.read_text())
    bad = notes_pdf.read_text()
    assert "failed at discover: unsupported_type" in bad and "not a PDF, PNG, JPEG" in bad
    assert not Elements(bad).having("img") and "source not found" not in bad


def test_only_flagged_keeps_flagged_results_and_failures(sample: Sample, tmp_path: Path) -> None:
    w = write_review(sample.out, tmp_path / "h", only_flagged=True)
    assert (w.documents, w.shown, w.flagged, w.failed) == (4, 3, 1, 2)
    names = {p.name for p in (tmp_path / "h" / "docs").glob("*.html")}
    assert names == {doc_file(sample.ids[n]) for n in ("flagged.png", "garbled.png")} | {
        doc_file(d.doc_id) for d in load_review(sample.out).docs if d.source_path.endswith("notes.pdf")}
    assert doc_file(sample.ids["clean.pdf"]) not in (tmp_path / "h" / "index.html").read_text()


def test_missing_or_changed_source_shows_values_and_says_why(sample: Sample, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(sample.out, out)
    moved = tmp_path / "moved"
    shutil.copytree(sample.inputs, moved)
    w = write_review(out, tmp_path / "h", source_root=str(tmp_path / "nowhere"))  # the run's paths are absolute
    assert w.without_images == 0
    (sample.inputs / "clean.pdf").rename(tmp_path / "clean.pdf")
    flagged_src = sample.inputs / "flagged.png"
    original = flagged_src.read_bytes()
    try:
        flagged_src.write_bytes(original + b"more")
        w = write_review(out, tmp_path / "h")
        clean, flagged = _doc(tmp_path / "h", sample.ids["clean.pdf"]), _doc(tmp_path / "h", sample.ids["flagged.png"])
    finally:
        (tmp_path / "clean.pdf").rename(sample.inputs / "clean.pdf")
        flagged_src.write_bytes(original)
    assert w.without_images == 2 and w.images == 1  # only the failure's page is still there
    assert "source not found" in clean and "INV-0002" in clean and not Elements(clean).having("img")
    assert "source changed since the run" in flagged and "INV-0001" in flagged and not Elements(flagged).having("img")


def test_a_rerun_shows_the_latest_row_and_only_its_evidence(tmp_path: Path, sample: Sample) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(sample.inputs / "clean.pdf", inputs)
    doc_id = sample.ids["clean.pdf"]
    out = tmp_path / "out"
    run_job([str(inputs)], out, NO_EVIDENCE(), engine=ScriptedEngine({doc_id: invoice_truth(2)}))
    write_evidence(out, [evidence(result_rows(out)[0], "invoice_number", 1, (0.1, 0.1, 0.3, 0.2))])
    newer = invoice_truth(2)
    newer["invoice_number"] = "INV-NEWER"
    run_job([str(inputs)], out, NO_EVIDENCE(), engine=ScriptedEngine({doc_id: newer}), force=True)
    (doc,) = load_review(out).docs
    assert {f.path: f.value for f in doc.fields}["invoice_number"] == "INV-NEWER"
    assert doc.run_id == result_rows(out)[0]["run_id"]
    assert all(f.box is None for f in doc.fields)  # the first run's box is for a value no longer held


def test_output_from_before_the_trust_layer(tmp_path: Path, sample: Sample) -> None:
    out = tmp_path / "out"
    shutil.copytree(sample.out, out, ignore=shutil.ignore_patterns("evidence"))
    import pyarrow.parquet as pq

    for part in (out / "results").glob("*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["needs_review", "review_reasons"]), part)
    review = load_review(out)
    assert (review.total, review.flagged, review.failed, review.has_evidence, review.has_flags) == (4, 0, 2, False, False)
    w = write_review(out, tmp_path / "h")
    index = (tmp_path / "h" / "index.html").read_text()
    assert "no evidence table" in index and "no review flags" in index
    assert 'class="box' not in _doc(tmp_path / "h", sample.ids["flagged.png"]) and w.images == 4


def test_html_dir_is_new_or_an_earlier_review(sample: Sample, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CouldNotStart, match="not empty"):
        write_review(sample.out, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    h = tmp_path / "h"
    write_review(sample.out, h)
    stale = h / "docs" / "gone.html"
    stale.write_text("from an older review")
    write_review(sample.out, h, only_flagged=True)
    assert not stale.exists() and len(list((h / "docs").glob("*.html"))) == 3


def test_not_an_output(tmp_path: Path) -> None:
    with pytest.raises(CouldNotStart, match="does not exist"):
        load_review(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CouldNotStart, match="not a docextract output"):
        load_review(tmp_path / "empty")


@pytest.mark.parametrize(("value", "shown"), [
    (None, None), (__import__("decimal").Decimal("66.10"), "66.10"), (__import__("decimal").Decimal("30.6000"), "30.6"),
    (__import__("decimal").Decimal("1.0000"), "1"), (__import__("decimal").Decimal("1E+3"), "1000"),
    (__import__("datetime").date(2024, 3, 5), "2024-03-05"), (True, "true"), ("x", "x"),
])
def test_show_value(value: Any, shown: str | None) -> None:
    assert show_value(value) == shown


def test_reason_field() -> None:
    assert reason_field("vendor.name: low confidence 0.41") == "vendor.name"
    assert reason_field("line_items[3].amount: not found on the page: twice") == "line_items[3].amount"
    assert reason_field("no field here") is None


def test_cli(sample: Sample, tmp_path: Path) -> None:
    r = run_cli("review", sample.out, "--html", tmp_path / "h", "--only-flagged")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(tmp_path / "h" / "index.html")) and "3 of 4 documents: 1 flagged, 2 failed" in r.stdout
    r = run_cli("review", tmp_path / "nothing", "--html", tmp_path / "h2")
    assert r.returncode == 2 and r.stderr.startswith("error: review of") and not (tmp_path / "h2").exists()


def test_a_damaged_evidence_part_costs_its_boxes_not_the_report(sample: Sample, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(sample.out, out)
    (out / "evidence" / "part-zz-00000.parquet").write_bytes(b"PAR1 not parquet")
    w = write_review(out, tmp_path / "h")
    assert w.documents == 4
    assert "evidence part left out" in (tmp_path / "h" / "index.html").read_text()
    assert 'class="box' in _doc(tmp_path / "h", sample.ids["flagged.png"])  # the good part still counts


def test_boxes_go_on_their_own_page(sample: Sample, report: Path) -> None:
    text = _doc(report, sample.ids["clean.pdf"])
    page2 = text[text.index('<figure id="page2">'):]
    page2 = page2[:page2.index("</figure>")]
    assert 'id="page1"' in text and 'id="page3"' not in text
    assert re.findall(r'data-field="([^"]+)" style="([^"]+)"', page2) == [("invoice_number", _style(CLEAN_BOX))]
    assert 'class="box' not in text[text.index('<figure id="page1">'):text.index('<figure id="page2">')]
    assert "evidence on page(s) 5, not rendered" in text
    assert re.search(r'<tr id="f\d+" data-field="vendor.name"><td>vendor.name</td>.*?<td class="num">5</td></tr>', text)


def test_pages_link_to_their_neighbours_in_index_order(sample: Sample, report: Path) -> None:
    rel = {a["rel"]: a["href"] for a in Elements(_doc(report, sample.ids["flagged.png"])).having("a") if "rel" in a}
    assert rel["index"] == "../index.html" and rel["next"] == doc_file(sample.ids["clean.pdf"])
    assert "<h1>notes.pdf" in (report / "docs" / rel["prev"]).read_text()
    last = {a["rel"] for a in Elements(_doc(report, sample.ids["clean.pdf"])).having("a") if "rel" in a}
    assert last == {"index", "prev"}
