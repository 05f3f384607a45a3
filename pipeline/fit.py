"""Make a request fit the engine's context: ``max_model_len`` must hold the prompt and the answer.

A long multi-page document can need more prompt tokens than the context leaves once
``sampling.max_tokens`` is set aside for the answer.  Instead of failing it (vLLM refuses such a
request), :func:`fit_request`:

1. lowers the per-page pixel budget of that document, pages downscaled to smaller multiples of 28
   px keeping their aspect, down to a floor (:func:`pixel_floor`: ``rasterize.min_pixels`` or
   256*28*28 = 200,704 px, about 256 image tokens per page, whichever is larger: below that a
   page of print is no longer legible to the model);
2. then drops trailing pages, and gives the pages it keeps the largest budget that fits;
3. fails only a document whose first page alone, at the floor, does not fit, with a message that
   says what would make it fit.

Pure: no vLLM here.  The engine supplies a :class:`TokenCounter` that counts the way it will.
Image tokens follow Qwen2-VL/Qwen2.5-VL's rule (:func:`image_grid`: the processor resizes an
image to a 28-px grid between its min and max pixels; one token per 28x28 cell).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from pipeline.defaults import PATCH
from pipeline.prompts import with_pages
from pipeline.rasterize import image_grid
from pipeline.records import Request

#: The lowest per-page budget the fit goes to unless ``rasterize.min_pixels`` is higher.
FLOOR_PIXELS = 256 * PATCH * PATCH


class TokenCounter(Protocol):
    """Counts a request's prompt the way the engine will: text tokens plus image tokens."""

    def text_tokens(self, request: Request) -> int:
        """Tokens of the rendered chat prompt, not counting the images' own tokens."""
        ...

    def image_tokens(self, width: int, height: int) -> int:
        """Tokens the engine spends on one image of this size."""
        ...


@dataclass(slots=True)
class Fit:
    """What :func:`fit_request` did: ``request`` to send (None when nothing fits, see ``error``)."""

    request: Request | None
    tokens: int  # prompt tokens of ``request`` (or of the smallest attempt, when it failed)
    pages_used: int | None = None  # pages kept when trailing pages were dropped; None = all
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def qwen_vl_image_tokens(width: int, height: int, min_pixels: int, max_pixels: int) -> int:
    """Image tokens Qwen2.5-VL spends on an image of this size: one per 28x28 cell after resizing."""
    w, h = image_grid(width, height, min_pixels, max_pixels)
    return (w // PATCH) * (h // PATCH)


def pixel_floor(min_pixels: int | None) -> int:
    """The lowest per-page budget: ``min_pixels`` (rasterize.min_pixels) or :data:`FLOOR_PIXELS`, the larger."""
    return max(min_pixels or 0, FLOOR_PIXELS)


def fit_request(request: Request, counter: TokenCounter, max_model_len: int, floor_pixels: int) -> Fit:
    """The request itself when it fits ``max_model_len`` with ``request.sampling.max_tokens`` left for the
    answer; else its pages downscaled (not below ``floor_pixels`` each), then trailing pages dropped, with
    warnings; else an error that says what would make it fit."""
    limit = max_model_len - request.sampling.max_tokens
    images = request.images
    sizes = [im.size for im in images]
    n = len(images)
    tokens = counter.text_tokens(request) + sum(counter.image_tokens(w, h) for w, h in sizes)
    if tokens <= limit:
        return Fit(request, tokens)
    if n == 0:
        return Fit(None, tokens, error=_no_fit_message("the prompt", tokens, request, max_model_len))
    floor = max(1, floor_pixels // (PATCH * PATCH))  # budget in image tokens per page
    keep, budget, tokens = n, *_largest_budget(request, counter, sizes, floor, limit)
    while budget is None and keep > 1:  # all pages do not fit even at the floor: drop trailing pages
        keep -= 1
        budget, tokens = _largest_budget(with_pages(request, images[:keep]), counter, sizes[:keep], floor, limit)
    if budget is None:
        return Fit(None, tokens, error=_no_fit_message("the first page alone", tokens, request, max_model_len))
    kept = [_resize(im, _page_size(counter, im.size, budget)) for im in images[:keep]]
    downscaled = [im.size for im in kept] != sizes[:keep]
    warnings = []
    if downscaled:
        warnings.append(
            f"pages downscaled to at most {budget * PATCH * PATCH:,} px ({budget:,} image tokens) each "
            f"to fit engine.max_model_len {max_model_len:,}"
        )
    if keep < n:
        dropped = f"page {n}" if keep == n - 1 else f"pages {keep + 1}-{n}"
        warnings.append(
            f"dropped {dropped} of {n} to fit engine.max_model_len {max_model_len:,} "
            f"with sampling.max_tokens {request.sampling.max_tokens:,} for the answer"
        )
    fitted = with_pages(request, kept) if downscaled or keep < n else request
    return Fit(fitted, tokens, pages_used=keep if keep < n else None, warnings=warnings)


def _largest_budget(
    request: Request, counter: TokenCounter, sizes: list[tuple[int, int]], floor: int, limit: int
) -> tuple[int | None, int]:
    """The largest per-page budget (image tokens, at least ``floor``) at which these pages fit ``limit``,
    and the prompt's tokens then; (None, tokens at the floor) when they do not fit even at the floor.
    ``request`` holds these pages (its text depends on their number, not their sizes)."""
    text = counter.text_tokens(request)

    def total(budget: int) -> int:
        return text + sum(counter.image_tokens(*_page_size(counter, s, budget)) for s in sizes)

    top = max(counter.image_tokens(w, h) for w, h in sizes)  # no page needs a larger budget
    if total(top) <= limit:
        return top, total(top)
    if top <= floor or total(floor) > limit:
        return None, total(min(floor, top))
    lo, hi = floor, top  # total(lo) fits, total(hi) does not; total() never decreases with the budget
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if total(mid) <= limit:
            lo = mid
        else:
            hi = mid
    return lo, total(lo)


def _page_size(counter: TokenCounter, size: tuple[int, int], budget: int) -> tuple[int, int]:
    """The size to send a page at for a budget of ``budget`` image tokens: itself when the engine spends no
    more than that on it, else the largest multiple-of-28 size within the budget, aspect kept."""
    if counter.image_tokens(*size) <= budget:
        return size
    return image_grid(size[0], size[1], PATCH * PATCH, budget * PATCH * PATCH)


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def _no_fit_message(what: str, tokens: int, request: Request, max_model_len: int) -> str:
    answer = request.sampling.max_tokens
    return (
        f"{what} needs {tokens:,} prompt tokens with {answer:,} for the answer, more than engine.max_model_len "
        f"{max_model_len:,}; raise engine.max_model_len to at least {tokens + answer:,} or lower sampling.max_tokens"
    )
