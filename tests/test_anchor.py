"""Text anchoring: a page's words as text with coarse positions before its image, capped, in the run key."""

from PIL import Image

from pipeline.anchor import anchor_block, estimate_tokens
from pipeline.config import load_config
from pipeline.prompts import build_request, json_schema_for, reask_request, with_pages
from pipeline.records import Page, Sampling, Word, WordSource
from pipeline.runner import run_key_for
from schemas import resolve
from tests.tiny_schema import TinyDoc

TL = WordSource.TEXT_LAYER


def w(text, x0, y0, line, source=TL):
    return Word(text, x0, y0, x0 + 0.05, y0 + 0.02, line, source)


def page(i, words):
    return Page("d", i, Image.new("RGB", (112, 112), "white"), 112, 112, words=words)


def test_lines_in_reading_order_with_coarse_positions():
    words = [w("GmbH", 0.20, 0.05, 0), w("ACME", 0.08, 0.051, 0), w("Total", 0.1, 0.9, 2), w("12.50", 0.7, 0.9, 2),
             w("Invoice", 0.62, 0.055, 1), w(" ", 0.5, 0.5, 1)]  # fmt: skip
    block = anchor_block(words, 500)
    assert block is not None
    header, *lines = block.splitlines()
    assert "text layer" in header
    assert lines == ["[8,5]ACME GmbH", "[62,5]Invoice", "[10,90]Total 12.50"]
    ocr = anchor_block([w("Total", 0.1, 0.9, 0, WordSource.OCR), w("x", 1.0, 1.0, 1, WordSource.OCR)], 500)
    assert ocr is not None and "OCR" in ocr and "[99,99]x" in ocr  # positions stay in the grid


def test_no_words_no_block():
    assert anchor_block(None, 500) is None  # words not asked for
    assert anchor_block([], 500) is None  # none found
    assert anchor_block([w("a", 0, 0, 0)], 10) is None  # not even the header fits


def test_the_cap_drops_whole_lines_from_the_middle_and_says_so():
    words = [w(f"Line {i} with product 4711-{i:04d}", 0.1, i / 400, i) for i in range(300)]
    full = anchor_block(words, 100_000)
    capped = anchor_block(words, 200)
    assert full is not None and capped is not None
    lines = full.splitlines()[1:]
    assert len(lines) == 300 and capped.splitlines()[0] == full.splitlines()[0]
    assert estimate_tokens(capped) <= 200
    kept = capped.splitlines()[1:]
    [marker] = [i for i, line in enumerate(kept) if line.startswith("[... ")]
    head, tail = kept[:marker], kept[marker + 1 :]
    assert head == lines[: len(head)] and tail == lines[len(lines) - len(tail) :]  # whole lines, first and last
    assert len(head) >= 2 and len(tail) >= 2
    assert kept[marker] == f"[... {300 - len(head) - len(tail)} lines not shown]"
    assert anchor_block(words[:3], 200) == "\n".join(full.splitlines()[:4])  # fits: every line, no marker


def test_token_estimate_counts_digits_one_by_one():
    assert estimate_tokens("2024") == 4
    assert estimate_tokens("invoice") == 2
    assert estimate_tokens("北京") == 2
    assert estimate_tokens("a b\nc") == 4  # a, b, line break, c


def _texts(req):
    return [p.get("text") if p["type"] == "text" else "<image>" for p in req.messages[1]["content"]]


def test_request_holds_each_pages_anchor_before_its_image_and_fits_keep_them():
    schema = json_schema_for(TinyDoc)
    pages = [page(0, [w("ACME", 0.1, 0.1, 0)]), page(1, None), page(2, [w("Total", 0.1, 0.8, 0)])]
    on = build_request("d", pages, TinyDoc, schema, Sampling(), anchor_max_tokens=300)
    t = _texts(on)
    assert t[0] == "Page 1 of 3:" and t[1].endswith("\n[10,10]ACME") and t[2] == "<image>"
    assert t[3:5] == ["Page 2 of 3:", "<image>"]  # no words: no anchor
    assert t[5] == "Page 3 of 3:" and t[6].endswith("[10,80]Total") and t[7] == "<image>"
    off = build_request("d", pages, TinyDoc, schema, Sampling())
    assert _texts(off) == ["Page 1 of 3:", "<image>", "Page 2 of 3:", "<image>", "Page 3 of 3:", "<image>",
                           "Extract the fields as JSON."]  # fmt: skip
    # the fit drops trailing pages or shrinks them: each kept page keeps its own anchor
    small = Image.new("RGB", (56, 56))
    two = _texts(with_pages(on, [small, small]))
    assert two == ["Page 1 of 2:", t[1], "<image>", "Page 2 of 2:", "<image>", "Extract the fields as JSON."]
    one = _texts(with_pages(on, [small]))
    assert one == [t[1], "<image>", "Extract the fields as JSON."]
    again = reask_request(on, "{}", ["bad"], Sampling())
    assert _texts(again) == t  # a re-ask repeats the request, anchors included


def test_anchoring_enters_the_run_key_only_when_on():
    model = resolve("invoice")

    def key(**over):
        return run_key_for(load_config(None, over), model)

    default = key()
    assert key(**{"prompt.anchor_max_tokens": 300}) == default  # off: the cap changes nothing
    assert "anchor_text" not in load_config(None, {}).fingerprint()["prompt"]
    on = key(**{"prompt.anchor_text": True})
    assert on != default
    assert key(**{"prompt.anchor_text": True, "prompt.anchor_max_tokens": 300}) not in (on, default)
