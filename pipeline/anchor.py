"""Text anchoring (``prompt.anchor_text``): a page's words as text with coarse positions, put before its image.

olmOCR's idea: the model reads the page image, and beside it the text the page's text layer (or OCR)
already holds, line by line with where each line starts, so it copies characters instead of reading
them from pixels.  A block looks like::

    Text of this page from its text layer, line by line; [x,y] is where a line starts (0-99 across, down):
    [8,5]ACME GmbH
    [62,5]Invoice 2024-0117
    ...

The block is capped at ``max_tokens`` per page.  Tokens are *estimated* here (the prompt is built before
the engine, and the run key must not depend on which tokenizer is installed): :func:`estimate_tokens`
counts the way Qwen2's byte-level BPE splits text (every digit a token, a word a token per few letters,
other scripts a token per character, punctuation a token per character), on the high side:
``bench/anchor.py`` measures it against the real Qwen2.5-VL tokenizer.  Over the cap, whole lines are
left out from the middle of the page (its first and last lines kept: the header and the totals).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from pipeline.records import Word, WordSource

GRID = 100  # positions in 0..GRID-1 across and down
_SOURCE = {WordSource.TEXT_LAYER: "its text layer", WordSource.OCR: "OCR (may contain errors)"}
_PIECES = re.compile(r"\d|[A-Za-z]+|[^\W\d_A-Za-z]|\s+|[^\w\s]|_", re.UNICODE)


def estimate_tokens(text: str) -> int:
    """Qwen2-style token count of ``text``, estimated without the tokenizer (on the high side): a digit is
    one token, an ASCII word one per 4 letters begun (3 in capitals), any other letter (accents, CJK)
    one, a punctuation mark one, a line break one, a space before a digit one, other whitespace none
    (it joins the next word)."""
    n = 0
    for m in _PIECES.finditer(text):
        piece = m.group()
        if piece[0].isspace():  # joins the next word or mark, but not a digit (Qwen splits digits alone)
            n += piece.count("\n") + text[m.end() : m.end() + 1].isdigit()
        elif piece[0].isascii() and piece[0].isalpha():
            n += math.ceil(len(piece) / (3 if piece.isupper() else 4))  # capitals are rarer merges
        else:
            n += 1
    return n


def _lines(words: Sequence[Word]) -> list[tuple[int, int, str]]:
    """(x, y, text) of each printed line in reading order: words grouped by ``line``, left to right."""
    by_line: dict[int, list[Word]] = {}
    for w in words:
        if w.text.strip():
            by_line.setdefault(w.line, []).append(w)
    out = []
    for line in sorted(by_line):
        ws = sorted(by_line[line], key=lambda w: w.x0)
        x = min(GRID - 1, max(0, int(ws[0].x0 * GRID)))
        y = min(GRID - 1, max(0, int(min(w.y0 for w in ws) * GRID)))
        out.append((x, y, " ".join(w.text.strip() for w in ws)))
    return out


def anchor_block(words: Sequence[Word] | None, max_tokens: int) -> str | None:
    """The anchor text of one page, at most ``max_tokens`` estimated tokens; None when the page has no
    words (not asked for, or none found) or not even the header fits.  A page over the cap keeps its
    first lines (about half the budget) and its last ones (totals sit at the bottom), and says how many
    lines in between were left out."""
    if not words:
        return None
    sources = {w.source for w in words}
    source = _SOURCE[next(iter(sources))] if len(sources) == 1 else "its text layer and OCR"
    header = f"Text of this page from {source}, line by line; [x,y] is where a line starts (0-99 across, down):"
    lines = [f"[{x},{y}]{text}" for x, y, text in _lines(words)]
    costs = [estimate_tokens(line) + 1 for line in lines]  # + the line break
    budget = max_tokens - estimate_tokens(header)
    if budget < 0:
        return None
    if sum(costs) <= budget:
        return "\n".join([header, *lines])
    budget -= _MARKER_TOKENS
    head = _fit(costs, budget // 2)
    tail = _fit(costs[head:][::-1], budget - sum(costs[:head]))
    shown = [*lines[:head], f"[... {len(lines) - head - tail} lines not shown]", *lines[len(lines) - tail :]]
    return "\n".join([header, *shown])


_MARKER_TOKENS = 12  # "[... 1234 lines not shown]" and its line break, estimated high


def _fit(costs: Sequence[int], budget: int) -> int:
    """How many of ``costs``, from the first, fit ``budget``."""
    n = 0
    for c in costs:
        if c > budget:
            break
        budget -= c
        n += 1
    return n
