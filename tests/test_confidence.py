"""Model confidence per field: token offsets, value spans and the alignment of tokens to JSON values."""

import json
import math

import pytest

from pipeline.confidence import field_scores, sampled_logprobs, token_offsets, value_spans
from pipeline.fields import leaf_values


def lp(p: float) -> float:
    return math.log(p)


def tokens(parts: list[tuple[str, float]]) -> tuple[str, list[int], list[float]]:
    """A text made of (token text, probability) pairs, with the offsets and logprobs an engine gives."""
    text = "".join(t for t, _ in parts)
    offsets = token_offsets(text, [t for t, _ in parts])
    assert offsets is not None
    return text, offsets, [lp(p) for _, p in parts]


def test_offsets_follow_the_token_texts_and_end_tokens_add_nothing():
    assert token_offsets('{"a":1}', ['{"', "a", '":', "1", "}", "<|im_end|>"]) == [0, 2, 3, 5, 6, 7]
    assert token_offsets("ab", ["a", "x"]) is None  # do not spell the text
    assert token_offsets("abc", ["a", "b"]) is None  # text left over
    # a character split over two tokens: the first adds nothing, the second writes the character
    assert token_offsets("é!", ["", "é", "!"]) == [0, 0, 1]
    # a garbled token: the next one found a little further on takes the skipped characters
    assert token_offsets("abcd", ["a", "\ufffd", "cd"]) == [0, 1, 1]


def test_a_token_spanning_the_closing_quote_and_comma_belongs_to_the_value():
    text, offs, lps = tokens(
        [
            ('{"', 1.0),
            ("name", 1.0),
            ('":"', 1.0),
            ("AC", 0.9),
            ("ME", 0.5),
            ('","', 0.8),
            ("total", 1.0),
            ('":', 1.0),
            ("12", 0.7),
            (".5", 0.6),
            ("}", 0.4),
        ]
    )
    assert json.loads(text) == {"name": "ACME", "total": 12.5}
    s = field_scores(text, offs, lps)
    assert list(s) == ["name", "total"]
    assert s["name"] == pytest.approx(0.5)  # min over AC, ME and the straddling '","'
    assert s["total"] == pytest.approx(0.4)  # 12, .5 and the '}' that ended the number
    assert field_scores(text, offs, lps, "prod")["name"] == pytest.approx(0.9 * 0.5 * 0.8)
    assert field_scores(text, offs, lps, "mean")["total"] == pytest.approx((0.7 * 0.6 * 0.4) ** (1 / 3))


def test_keys_and_structure_carry_no_weight():
    # the unlikely tokens are all structural or key tokens: every value scores 1
    text, offs, lps = tokens(
        [
            ("{", 0.01),
            ('"', 0.01),
            ("code", 0.01),
            ('":', 0.01),
            ('"', 0.01),
            ("abc", 1.0),
            ('"', 1.0),
            (",", 1.0),
            ('"paid":', 0.01),
            ("true", 1.0),
            ("}", 1.0),
        ]
    )
    assert field_scores(text, offs, lps) == {"code": 1.0, "paid": 1.0}


def test_multibyte_characters_and_escapes():
    value = {"name": 'Café "Zur Linde" \\ Straße', "city": "北京", "note": ""}
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # the é arrives in two tokens (a byte-level BPE split): the first adds no text
    i = text.index("é")
    parts = [(text[:i], 1.0), ("", 0.2), ("é", 0.3), (text[i + 1 : text.index("北")], 0.9),
             ("北", 0.6), ("京", 0.7), (text[text.index("京") + 1 :], 1.0)]  # fmt: skip
    t, offs, lps = tokens(parts)
    assert t == text
    s = field_scores(text, offs, lps)
    assert set(s) == {"name", "city", "note"}
    assert s["name"] == pytest.approx(0.3)  # the zero-width byte token belongs to no value
    assert s["city"] == pytest.approx(0.6)
    assert s["note"] == pytest.approx(1.0)  # an empty string is scored by its quotes' token


def test_escaped_unicode_in_ascii_json():
    text = json.dumps({"a": "Caf\u00e9", "b": None}, ensure_ascii=True)  # {"a": "Caf\u00e9", "b": null}
    spans = value_spans(text)
    assert spans is not None
    assert [(p, text[a:b]) for p, a, b in spans] == [("a", 'Caf\\u00e9"'), ("b", "null}")]


def test_nested_lists_nulls_and_whitespace_follow_the_field_paths():
    value = {
        "vendor": {"name": "A", "vat_id": None},
        "line_items": [{"description": "x", "amount": 1}, {"description": "y", "amount": -2.5e3}],
        "tags": [],
        "paid": False,
    }
    text = json.dumps(value, indent=2)  # whitespace everywhere
    spans = value_spans(text)
    assert spans is not None
    assert [p for p, _, _ in spans] == [p for p, _ in leaf_values(value)]
    # one token per character, probability falling along the text: each value scores its first char's
    parts = [(c, 1 - i / (2 * len(text))) for i, c in enumerate(text)]
    t, offs, lps = tokens(parts)
    s = field_scores(t, offs, lps)
    assert list(s) == [p for p, _ in leaf_values(value)]
    assert all(0 < v <= 1 for v in s.values())
    # min over the value's characters and the one after it: the last of them
    a, b = next((a, b) for p, a, b in spans if p == "line_items[1].amount")
    assert text[a:b] == "-2500.0\n"
    assert s["line_items[1].amount"] == pytest.approx(1 - (b - 1) / (2 * len(text)))


@pytest.mark.parametrize("text", ['{"a": ', "not json", '"just a string"', "42", '{"a":1} trailing', ""])
def test_text_that_is_not_a_json_object_scores_nothing(text):
    assert value_spans(text) is None
    assert field_scores(text, [0] * len(text), [0.0] * len(text)) == {}


def test_missing_or_mismatched_token_data_scores_nothing():
    text = '{"a":1}'
    assert field_scores(text, None, None) == {}
    assert field_scores(text, [0, 2], [0.0]) == {}
    # a NaN or -inf logprob is as unlikely as can be, never a NaN score
    s = field_scores(text, [0, 5, 6], [0.0, float("nan"), 0.0])
    assert s == {"a": 0.0}


def test_vllm_flat_logprobs_become_offsets_and_logprobs():
    from vllm.logprobs import FlatLogprobs, Logprob

    text = '{"a":"é"}'
    flat = FlatLogprobs()
    for tid, (t, p) in enumerate([('{"a":"', 0.0), ("", -0.1), ("é", -0.2), ('"}', -0.3), ("<|im_end|>", -0.4)]):
        flat.append({tid: Logprob(logprob=p, rank=1, decoded_token=t)})
    offsets, lps = sampled_logprobs(text, flat)
    assert offsets == [0, 6, 6, 7, 9] and lps == [0.0, -0.1, -0.2, -0.3, -0.4]
    assert field_scores(text, offsets, lps) == {"a": pytest.approx(math.exp(-0.3))}
    # the list-of-dicts form vLLM returns without flat_logprobs
    as_dicts = [{i: Logprob(logprob=v, rank=1, decoded_token=t)} for i, (t, v) in
                enumerate(zip(['{"a":"', "", "é", '"}'], lps, strict=False))]  # fmt: skip
    assert sampled_logprobs(text, as_dicts) == (offsets[:4], lps[:4])
    assert sampled_logprobs(text, None) is None
