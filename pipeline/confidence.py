"""Model confidence per field: the sampled tokens' probabilities, aligned to the values of the JSON answer.

The engine returns, for each generated token, its log-probability and where it starts in the answer's
text (``Generation.token_offsets`` / ``token_logprobs``).  :func:`field_scores` finds every leaf value
of the JSON (paths as :mod:`pipeline.fields`: ``vendor.name``, ``line_items[3].amount``), takes the
tokens that wrote its characters, and turns their probabilities into one figure in [0, 1].

Which characters count as a value's:

* a string: its content and its closing quote (the token that ends a string decides its length); the
  opening quote is forced by the schema once the key is written and carries nothing;
* a number, ``true``, ``false``, ``null``: the literal and the character after it (``,`` ``}`` ``]``:
  the choice to stop a number is a choice of its value);
* keys, colons, braces and brackets: never (under constrained decoding they are forced or nearly so).

A token that straddles a value and structure (``E",``) belongs to the value.  A token that adds no text
(the end token, the first byte of a character split across tokens) belongs to nothing.

The caveat, measured in published work and to be measured again on each model (``bench/confidence.py``):
vLLM computes the probabilities after the schema's mask, renormalised over the allowed tokens, so they
run high, and such scores were found well calibrated on average yet unable to rank right values above
wrong ones.  Use them beside evidence that does not come from the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Literal

Aggregate = Literal["min", "mean", "prod"]
_RESYNC = 8  # characters a token's text may be ahead of where it was expected (a garbled token before it)


def token_offsets(text: str, token_texts: Sequence[str | None]) -> list[int] | None:
    """Where each token starts in ``text``, from the tokens' own texts; None when they do not spell it.

    A token whose text is not at the expected place (a special token such as the end token, a byte of a
    character the next token completes) adds nothing; if its text appears a few characters on, the
    characters skipped are given to it (a token the detokenizer rendered differently)."""
    pos, out = 0, []
    for t in token_texts:
        out.append(pos)
        if not t:
            continue
        if text.startswith(t, pos):
            pos += len(t)
            continue
        found = text.find(t, pos, pos + _RESYNC + len(t))
        if found >= 0 and not t.startswith("<|"):
            pos = found + len(t)
    return out if pos == len(text) else None


def sampled_logprobs(text: str, logprobs: Any) -> tuple[list[int], list[float]] | None:
    """(start of each sampled token in ``text``, its log-probability) from vLLM's ``CompletionOutput.logprobs``
    asked with ``logprobs=0``: ``FlatLogprobs`` or a list of ``{token_id: Logprob}`` with the sampled token
    first.  None when there are none or the tokens' texts do not spell ``text``."""
    if not logprobs:
        return None
    if hasattr(logprobs, "start_indices"):  # vllm.logprobs.FlatLogprobs
        firsts = list(logprobs.start_indices)
        values = [logprobs.logprobs[i] for i in firsts]
        texts = [logprobs.decoded_tokens[i] for i in firsts]
    else:
        entries = [next(iter(pos.values())) for pos in logprobs if pos]
        values = [e.logprob for e in entries]
        texts = [e.decoded_token for e in entries]
    offsets = token_offsets(text, texts)
    return None if offsets is None else (offsets, [float(v) for v in values])


# ------------------------------------------------------------------------------------------ value spans


class _Scanner:
    """The character span of every leaf value of a JSON text that ``json.loads`` accepts."""

    WS = " \t\n\r"

    def __init__(self, text: str):
        self.s, self.i = text, 0
        self.spans: list[tuple[str, int, int, bool]] = []  # path, start, end (exclusive), is_string

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in self.WS:
            self.i += 1

    def value(self, path: str) -> None:
        self.ws()
        c = self.s[self.i]
        if c == "{":
            self.container(path, "}", keyed=True)
        elif c == "[":
            self.container(path, "]", keyed=False)
        elif c == '"':
            start = self.i
            self.string()
            self.spans.append((path, start, self.i, True))
        else:
            start = self.i
            while self.i < len(self.s) and self.s[self.i] not in self.WS + ",]}":
                self.i += 1
            self.spans.append((path, start, self.i, False))

    def container(self, path: str, close: str, keyed: bool) -> None:
        self.i += 1
        n = 0
        while True:
            self.ws()
            if self.s[self.i] == close:
                self.i += 1
                return
            if self.s[self.i] == ",":
                self.i += 1
                self.ws()
            if keyed:
                start = self.i
                self.string()
                key = json.loads(self.s[start : self.i])
                self.ws()
                self.i += 1  # the colon
                self.value(f"{path}.{key}" if path else key)
            else:
                self.value(f"{path}[{n}]")
            n += 1

    def string(self) -> None:
        self.i += 1  # the opening quote
        while self.s[self.i] != '"':
            self.i += 2 if self.s[self.i] == "\\" else 1
        self.i += 1


def value_spans(text: str) -> list[tuple[str, int, int]] | None:
    """(path, start, end) of the characters that state each leaf value (see the module doc), in the
    order they are written; None when ``text`` is not one JSON object or array."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict | list):
        return None
    scan = _Scanner(text)
    try:
        scan.value("")
    except (IndexError, ValueError, RecursionError):  # json.loads accepted it: a scanner bug, not bad input
        return None
    out = []
    for path, start, end, is_string in scan.spans:
        if is_string:
            out.append((path, start + 1 if end - start > 2 else start, end))  # "" keeps its quotes
        else:
            out.append((path, start, min(end + 1, len(text))))
    return out


# ------------------------------------------------------------------------------------------ scores


def _aggregate(logprobs: list[float], how: Aggregate) -> float:
    if how == "min":
        lp = min(logprobs)
    elif how == "mean":  # geometric mean of the probabilities
        lp = sum(logprobs) / len(logprobs)
    else:  # the probability of the whole value
        lp = sum(logprobs)
    return min(1.0, max(0.0, math.exp(lp)))


def field_scores(
    text: str,
    token_offsets: Sequence[int] | None,
    token_logprobs: Sequence[float] | None,
    how: Aggregate = "min",
) -> dict[str, float]:
    """The model's confidence in each leaf value of the JSON ``text``, by path, in [0, 1]; ``{}`` when
    there are no token scores, they do not fit ``text``, or ``text`` is not JSON.

    ``how``: ``min`` (the least likely token of the value, the default), ``mean`` (geometric mean of the
    tokens' probabilities) or ``prod`` (the probability of the value's tokens together)."""
    if not token_offsets or token_logprobs is None or len(token_offsets) != len(token_logprobs):
        return {}
    spans = value_spans(text)
    if spans is None:
        return {}
    starts = list(token_offsets)
    ends = starts[1:] + [len(text)]
    lps = [lp if math.isfinite(lp) else -1e9 for lp in token_logprobs]  # NaN or -inf: as unlikely as can be
    scores: dict[str, float] = {}
    first = 0  # tokens before this one end before the current span (spans come in text order)
    for path, a, b in spans:
        while first < len(starts) and ends[first] <= a:
            first += 1
        chosen = []
        k = first
        while k < len(starts) and starts[k] < b:
            if ends[k] > starts[k] and ends[k] > a:
                chosen.append(lps[k])
            k += 1
        if chosen:
            scores[path] = _aggregate(chosen, how)
    return scores


def generation_scores(gen: Any, how: Aggregate = "min") -> dict[str, float]:
    """:func:`field_scores` of a ``Generation`` (the final attempt's, the one whose value is kept)."""
    return field_scores(gen.text, gen.token_offsets, gen.token_logprobs, how)
