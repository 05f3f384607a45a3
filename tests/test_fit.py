"""pipeline.fit: a request too long for the context gets smaller pages, then fewer, or a message that says
what would make it fit.  Counted here with a plain word counter for the text (the engine's own counter is
checked against vLLM in tests/test_vllm_engine.py) and Qwen2.5-VL's image rule."""

import pytest
from PIL import Image

from pipeline.fit import FLOOR_PIXELS, fit_request, image_grid, pixel_floor, qwen_vl_image_tokens
from pipeline.prompts import build_request, json_schema_for, reask_request, with_pages
from pipeline.records import Page, Request, Sampling
from tests.tiny_schema import TinyDoc

MIN_PIXELS, MAX_PIXELS = 56 * 56, 1280 * 28 * 28


class WordCounter:
    """One token per whitespace-separated word of every text part; images by Qwen2.5-VL's rule."""

    def text_tokens(self, request: Request) -> int:
        n = 0
        for m in request.messages:
            content = m["content"]
            parts = [content] if isinstance(content, str) else [p.get("text", "") for p in content]
            n += sum(len(t.split()) for t in parts)
        return n

    def image_tokens(self, width: int, height: int) -> int:
        return qwen_vl_image_tokens(width, height, MIN_PIXELS, MAX_PIXELS)


def doc(pages: int, size=(1000, 1400), max_tokens: int = 512) -> Request:
    ps = [Page("d", i, Image.new("RGB", size, (255, 255, 10 * i)), *size) for i in range(pages)]
    return build_request("d", ps, TinyDoc, json_schema_for(TinyDoc), Sampling(max_tokens=max_tokens))


def total(request: Request) -> int:
    c = WordCounter()
    return c.text_tokens(request) + sum(c.image_tokens(*im.size) for im in request.images)


def labels(request: Request) -> list[str]:
    return [p["text"] for p in request.messages[1]["content"] if p.get("type") == "text"]


def test_image_grid_is_the_processors_rule():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    for w, h in [(20, 20), (112, 112), (300, 500), (1000, 1400), (2480, 3508), (57, 4000), (4000, 29), (27, 55)]:
        for low, high in [(MIN_PIXELS, MAX_PIXELS), (3136, 12544), (28 * 28, 256 * 28 * 28)]:
            rh, rw = smart_resize(h, w, factor=28, min_pixels=low, max_pixels=high)
            assert image_grid(w, h, low, high) == (rw, rh), (w, h, low, high)
            assert qwen_vl_image_tokens(w, h, low, high) == rw * rh // 784
    with pytest.raises(ValueError, match="aspect ratio"):
        image_grid(20000, 20, MIN_PIXELS, MAX_PIXELS)


def test_pixel_floor_is_min_pixels_or_256_tokens():
    assert FLOOR_PIXELS == 256 * 28 * 28
    assert pixel_floor(3136) == FLOOR_PIXELS and pixel_floor(None) == FLOOR_PIXELS
    assert pixel_floor(512 * 28 * 28) == 512 * 28 * 28


def test_a_request_that_fits_is_sent_unchanged():
    r = doc(2)
    f = fit_request(r, WordCounter(), max_model_len=8192, floor_pixels=FLOOR_PIXELS)
    assert f.request is r and f.warnings == [] and f.pages_used is None and f.error is None
    assert f.tokens == total(r) <= 8192 - 512


def test_pages_are_downscaled_before_any_is_dropped():
    r = doc(6)  # 6 x 1,225 image tokens
    full = total(r)
    f = fit_request(r, WordCounter(), max_model_len=6144, floor_pixels=FLOOR_PIXELS)
    assert full > 6144 - 512
    assert f.request is not None and f.pages_used is None and len(f.request.images) == 6
    assert f.tokens == total(f.request) <= 6144 - 512
    assert f.tokens > 6144 - 512 - 6 * 30  # the largest budget that fits, not the floor
    for im in f.request.images:
        w, h = im.size
        assert w % 28 == 0 and h % 28 == 0 and w * h >= FLOOR_PIXELS
        assert abs(w / h - 1000 / 1400) < 0.06  # aspect kept
    [warning] = f.warnings
    assert warning.startswith("pages downscaled to at most ") and "engine.max_model_len 6,144" in warning
    assert f.request.uid == r.uid and labels(f.request)[0] == "Page 1 of 6:"
    assert all(im.size == (1000, 1400) for im in r.images)  # the caller's request is left alone


def test_trailing_pages_are_dropped_when_the_floor_is_not_enough():
    r = doc(8)
    f = fit_request(r, WordCounter(), max_model_len=2048, floor_pixels=FLOOR_PIXELS)
    assert f.request is not None and f.error is None
    kept = len(f.request.images)
    assert 1 <= kept < 8 and f.pages_used == kept
    assert f.tokens == total(f.request) <= 2048 - 512
    assert total(with_pages(r, [Image.new("RGB", (448, 448))] * (kept + 1))) > 2048 - 512  # one more does not fit
    assert f.warnings[-1] == (
        f"dropped pages {kept + 1}-8 of 8 to fit engine.max_model_len 2,048 with sampling.max_tokens 512 for the answer"
    )
    assert labels(f.request) == [f"Page {i} of {kept}:" for i in range(1, kept + 1)] + ["Extract the fields as JSON."]


def test_a_floor_above_the_pages_goes_straight_to_dropping():
    r = doc(6, size=(112, 112))  # 16 tokens a page, far below the floor: nothing to downscale
    limit = total(with_pages(r, r.images[:3]))
    f = fit_request(r, WordCounter(), max_model_len=limit + 512, floor_pixels=FLOOR_PIXELS)
    assert f.pages_used == 3 and [im.size for im in f.request.images] == [(112, 112)] * 3
    assert f.warnings == [
        f"dropped pages 4-6 of 6 to fit engine.max_model_len {limit + 512:,} "
        "with sampling.max_tokens 512 for the answer"
    ]


def test_a_document_that_cannot_fit_says_what_would():
    r = doc(3, max_tokens=1900)
    f = fit_request(r, WordCounter(), max_model_len=2048, floor_pixels=FLOOR_PIXELS)
    at_floor = image_grid(1000, 1400, 28 * 28, FLOOR_PIXELS)  # 364x504 (234 tokens), the largest within the floor
    one_page_at_floor = total(with_pages(r, [Image.new("RGB", at_floor)]))
    assert f.request is None and f.tokens == one_page_at_floor
    assert f.error == (
        f"the first page alone needs {one_page_at_floor:,} prompt tokens with 1,900 for the answer, more than "
        f"engine.max_model_len 2,048; raise engine.max_model_len to at least {one_page_at_floor + 1900:,} "
        "or lower sampling.max_tokens"
    )


def test_a_reask_is_fitted_with_its_conversation_kept():
    first = doc(6)
    r = reask_request(first, '{"code": 1}', ["code: not a string"], Sampling(max_tokens=512))
    f = fit_request(r, WordCounter(), max_model_len=2048, floor_pixels=FLOOR_PIXELS)
    assert f.request is not None and f.pages_used is not None and f.pages_used < 6
    assert [m["role"] for m in f.request.messages] == ["system", "user", "assistant", "user"]
    assert f.request.messages[2:] == r.messages[2:] and f.request.attempt == 2
