"""Evidence per field: where on the page each extracted value is printed, and how sure we are of it.

``ground(value, pages)`` looks every leaf value of a validated answer up among the words of the
document's pages (``Page.words``: the text layer, or OCR) and returns one ``FieldEvidence`` per
leaf (``pipeline.fields`` paths).  Matching, in order: one word, several words of one line, words
across lines (names and addresses printed over several lines), fuzzy (OCR noise).  Amounts, dates
and times are compared by value (``pipeline.evidence_norm``: every locale format the synthetic
generator prints), text casefolded without accents and edge punctuation.  When a value is printed
more than once, the occurrence nearest its label wins (labels from the field's name plus a small
table of common labels); a list item's fields prefer the lines of the item's fields already found.

A null value gets a row with ``grounded = None`` (nothing to find); so do booleans, values that are
not printed as such (``Literal`` choices, e.g. a payment method) and zero amounts when they are not found.
Without words (``Page.words`` None on every page: not asked for) every row has ``grounded = None``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from pipeline.evidence_norm import (
    CURRENCY_SIGNS,
    amounts_in,
    dates_in,
    fold,
    labels_for,
    same_amount,
    text_tokens,
    times_in,
    token,
    verbatim_field,
)
from pipeline.evidence_records import Box, FieldEvidence, Match
from pipeline.fields import leaf_values
from pipeline.records import Page, Word


@dataclass(frozen=True, slots=True)
class _Cand:
    page: int  # 0-based position in ``pages``
    box: Box
    match: Match
    score: float
    order: int  # reading order of the first word
    source: str | None


@dataclass(slots=True)
class _Words:
    """A document's words in reading order, with lazily built indexes of what they print."""

    words: list[tuple[int, Word]]  # (page position, word)
    tokens: list[str]
    _amounts: dict[Decimal, list[tuple[int, int]]] | None = None
    _dates: dict[dt.date, list[tuple[int, int]]] | None = None
    _times: dict[dt.time, list[tuple[int, int]]] | None = None
    labels: dict[str, list[tuple[int, Box]]] = dc_field(default_factory=dict)
    _first: dict[str, list[int]] | None = None
    _labelled: list[int] | None = None
    _cands: dict[tuple[int, int], _Cand] = dc_field(default_factory=dict)
    siblings: dict[str, list[str]] = dc_field(default_factory=dict)  # list path -> its items' leaf names

    @property
    def labelled(self) -> list[int]:
        """Positions of the words with a colon inside (a label and its value printed as one word)."""
        if self._labelled is None:
            self._labelled = [i for i, t in enumerate(self.tokens) if ":" in t[:-1] or "：" in t[:-1]]
        return self._labelled

    @classmethod
    def of(cls, pages: Sequence[Page]) -> _Words:
        words = [(i, w) for i, p in enumerate(pages) for w in (p.words or []) if w.text.strip()]
        return cls(words, [token(w.text) for _, w in words])

    def line_windows(self, size: int) -> Iterable[tuple[int, int]]:
        """(start, end) of every run of 1..``size`` consecutive words on one printed line."""
        n = len(self.words)
        for i in range(n):
            key = (self.words[i][0], self.words[i][1].line)
            for j in range(i + 1, min(n, i + size) + 1):
                if (self.words[j - 1][0], self.words[j - 1][1].line) != key:
                    break
                yield i, j

    def _index(self, size: int, parse: Any, ok: Any = None, start: Any = None) -> dict[Any, list[tuple[int, int]]]:
        """Value -> windows printing it, over the windows of 1..``size`` words of a line that ``start`` (their
        first word's position) and ``ok`` (their texts) admit."""
        out: dict[Any, list[tuple[int, int]]] = {}
        for i, j in self.line_windows(size):
            if start is not None and not start(i):
                continue
            parts = [w.text for _, w in self.words[i:j]]
            if ok is not None and not ok(parts):
                continue
            for v in parse(parts):
                out.setdefault(v, []).append((i, j))
        return out

    def amounts(self) -> dict[Decimal, list[tuple[int, int]]]:
        if self._amounts is None:
            ocr = any(w.source.value == "ocr" for _, w in self.words[:50])
            digit = [any(c.isdigit() for c in w.text) for _, w in self.words]
            # a window holds a digit in its first word, or starts with a short currency sign
            self._amounts = self._index(3, lambda ps: amounts_in("".join(ps), ocr), _amount_parts,
                                        lambda i: digit[i] or len(self.words[i][1].text) <= 3)
        return self._amounts

    def dates(self) -> dict[dt.date, list[tuple[int, int]]]:
        """Dates of 1..4-word windows, looked for only in windows that start with a word holding a digit
        or a letter run (a month name) and hold a digit somewhere."""
        if self._dates is None:
            self._dates = self._index(4, lambda ps: dates_in(" ".join(ps)), _may_be_date)
        return self._dates

    def starting(self, ch: str) -> list[int]:
        """Positions of the words whose token starts with ``ch``."""
        if self._first is None:
            self._first = {}
            for i, t in enumerate(self.tokens):
                if t:
                    self._first.setdefault(t[0], []).append(i)
        return self._first.get(ch, [])

    def times(self) -> dict[dt.time, list[tuple[int, int]]]:
        if self._times is None:
            self._times = self._index(2, lambda ps: times_in(" ".join(ps)))
        return self._times

    def cand(self, i: int, j: int, match: Match | None = None, score: float = 1.0) -> _Cand:
        if match is None and (i, j) in self._cands:
            return self._cands[i, j]
        made = self._cand(i, j, match, score)
        if match is None:
            self._cands[i, j] = made
        return made

    def _cand(self, i: int, j: int, match: Match | None, score: float) -> _Cand:
        page = self.words[i][0]
        ws = [w for (p, w) in self.words[i:j] if p == page]
        box = (min(w.x0 for w in ws), min(w.y0 for w in ws), max(w.x1 for w in ws), max(w.y1 for w in ws))
        if match is None:
            match = Match.WORD if j - i == 1 else Match.LINE if len({w.line for w in ws}) == 1 else Match.LINES
        return _Cand(page, box, match, score, i, ws[0].source.value)


_DATEISH = re.compile(r"\d\s*[-/.年月]\s*\d|\d\.?\s+[^\W\d]{3}|\w?[^\W\d]{2,}\.?\s+\d|\d{8}")


def _may_be_date(parts: list[str]) -> bool:
    """Cheap test before the date patterns: digits joined by a date separator, or beside a word (a month)."""
    return parts[0][:1].isalnum() and bool(_DATEISH.search(" ".join(parts)))


_DIGIT = re.compile(r"\d")
_INDEX = re.compile(r"\[\d+\]")
_ITEM_FIELD = re.compile(r"^(.*)\[(\d+)\]\.(.*)$")
_THOUSANDS_GROUP = re.compile(r"^\d{3}([.,]\d+)?\W*$")


def _amount_parts(parts: list[str]) -> bool:
    """Several words read as one amount only when the others are thousands groups (``1 234,56``) or a
    currency sign or code (``RM 9.00``, ``9,00 €``), never two numbers side by side."""
    if len(parts) == 1:
        return True
    numeric = [p for p in parts if _DIGIT.search(p)]
    signs = [p for p in parts if not _DIGIT.search(p)]
    if any(len(s) > 3 for s in signs) or not numeric:
        return False
    return all(_THOUSANDS_GROUP.match(p) for p in numeric[1:])


# --------------------------------------------------------------------------- labels


def _label_boxes(words: _Words, path: str) -> list[tuple[int, Box]]:
    name = _INDEX.sub("", path)
    if name in words.labels:
        return words.labels[name]
    out: list[tuple[int, Box]] = []
    words.labels[name] = out
    for phrase in labels_for(path):
        k = len(phrase)
        for i in words.starting(phrase[0][0]):
            if words.tokens[i:i + k] == phrase:
                out.append((words.words[i][0], words.cand(i, i + k).box))
    return out


def _distance(c: _Cand, anchors: list[tuple[int, Box]]) -> float:
    """How far a candidate is from its nearest label (left on the same line, or above): smaller is nearer."""
    best = float("inf")
    for page, b in anchors:
        if page != c.page:
            continue
        cy, by = (c.box[1] + c.box[3]) / 2, (b[1] + b[3]) / 2
        h = max(c.box[3] - c.box[1], 0.005)
        if abs(cy - by) < h:  # same line: to the left is best, to the right almost as good
            d = max(0.0, c.box[0] - b[2]) if b[2] <= c.box[0] + h else 0.5 * max(0.0, b[0] - c.box[2]) + 0.05
        elif b[3] <= c.box[1] + h / 2:  # above
            d = 2 * (c.box[1] - b[3]) + 0.5 * abs(c.box[0] - b[0]) + 0.02
        else:
            d = 4 * (abs(cy - by) + abs(c.box[0] - b[0])) + 0.1
        best = min(best, d)
    return best


# --------------------------------------------------------------------------- matching


def _text_cands(words: _Words, value: str, fuzzy: float) -> list[_Cand]:
    """Windows of words whose tokens, joined, equal the value's (joined); if none, similar ones."""
    target = "".join(text_tokens(value))
    if not target:
        return []
    toks, n = words.tokens, len(words.tokens)
    exact: list[_Cand] = []
    starts = [i for i in words.starting(target[0]) if target.startswith(toks[i])]
    for i in starts:
        acc, j = "", i
        while j < n and len(acc) < len(target):
            acc += toks[j]
            j += 1
            if not target.startswith(acc):
                break
        if acc == target:
            exact.append(words.cand(i, j))
    exact += [words.cand(i, i + 1) for i in words.labelled if len(toks[i]) > len(target) and toks[i].endswith(target)
              and toks[i][-len(target) - 1] in ":："]  # glued to its label: "no:12345"
    if exact:
        return exact
    parts = [p for p in value.split(",") if text_tokens(p)]
    if len(parts) > 1:  # an address whose parts OCR read into other columns' lines
        joined = _parts_cands(words, parts)
        if joined:
            return joined
    return [] if fuzzy >= 1.0 else _fuzzy_cands(words, target, fuzzy)


def _parts_cands(words: _Words, parts: list[str]) -> list[_Cand]:
    """Every comma-separated part found exactly, each the occurrence nearest the part before it: one candidate
    whose box spans them (on the first part's page)."""
    chosen: list[_Cand] = []
    for part in parts:
        cands = _text_cands(words, part, 1.0)
        if not cands:
            return []
        if chosen:
            prev = chosen[-1]
            cands.sort(key=lambda c: (c.page != prev.page, abs(c.box[1] - prev.box[3]) + abs(c.box[0] - prev.box[0])))
        chosen.append(cands[0])
    page = [c for c in chosen if c.page == chosen[0].page]
    box = (min(c.box[0] for c in page), min(c.box[1] for c in page), max(c.box[2] for c in page), max(c.box[3] for c in page))
    return [_Cand(chosen[0].page, box, Match.LINES, 1.0, chosen[0].order, chosen[0].source)]


def _fuzzy_cands(words: _Words, target: str, fuzzy: float) -> list[_Cand]:
    toks, n = words.tokens, len(words.tokens)
    out: list[_Cand] = []
    sm = difflib.SequenceMatcher(autojunk=False)
    sm.set_seq2(target)
    head = _bigrams(target[:5])
    for i in range(n):
        t = toks[i]
        if not t or (len(target) > 3 and not head & _bigrams(t[:5])):
            continue
        acc, j = "", i
        best, best_j = 0.0, i
        while j < n and len(acc) < len(target) + 3:
            acc += toks[j]
            j += 1
            if len(acc) < len(target) * fuzzy:
                continue
            sm.set_seq1(acc)
            if sm.real_quick_ratio() < fuzzy or sm.quick_ratio() < fuzzy:
                continue
            r = sm.ratio()
            if r > best:
                best, best_j = r, j
        if best >= fuzzy:
            out.append(words.cand(i, best_j, Match.FUZZY, best))
    return out


def _bigrams(s: str) -> set[str]:
    return {s[k:k + 2] for k in range(len(s) - 1)} or {s}


def _indexed(words: _Words, index: dict[Any, list[tuple[int, int]]], keys: Iterable[Any]) -> list[_Cand]:
    return [words.cand(i, j) for k in keys for i, j in index.get(k, [])]


def _candidates(words: _Words, value: Any, fuzzy: float) -> list[_Cand]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (Decimal, int, float)):
        return _indexed(words, words.amounts(), [abs(Decimal(str(value)))])  # equal Decimals hash alike
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return _indexed(words, words.dates(), [value])
    if isinstance(value, dt.time):
        return _indexed(words, words.times(), [value.replace(microsecond=0, tzinfo=None)])
    if isinstance(value, dt.datetime):
        value = value.date()
    text = str(value.value if isinstance(value, enum.Enum) else value)
    cands = _text_cands(words, text, fuzzy)
    if not cands and text.upper() in CURRENCY_SIGNS:
        for sign in CURRENCY_SIGNS[text.upper()]:
            cands += _text_cands(words, sign, 1.0) or _sign_inside(words, sign)
    return cands


def _sign_inside(words: _Words, sign: str) -> list[_Cand]:
    """A currency sign printed against its amount (``€12.50``, ``12,50€``)."""
    return [words.cand(i, i + 1) for i, t in enumerate(words.tokens)
            if not sign.isalpha() and sign in fold(words.words[i][1].text)]


def _sum_cands(words: _Words, value: Decimal, path: str, most: int = 4) -> list[_Cand]:
    """``value`` as the sum of 2..``most`` amounts, each the last one printed on a line that holds the field's
    label (tax at several rates: ``VAT 20% 3.70`` + ``VAT 10% 1.39``).  The candidate's box is the first line's."""
    lines: dict[tuple[int, int], list[int]] = {}
    for i, (p, w) in enumerate(words.words):
        lines.setdefault((p, w.line), []).append(i)
    labels = [" ".join(x) for x in labels_for(path)]
    found: list[tuple[int, Decimal]] = []
    for idx in lines.values():
        text = " ".join(words.tokens[i] for i in idx)
        if not any(re.search(rf"(?<![a-z]){re.escape(lab)}(?![a-z])", text) for lab in labels):
            continue
        for i in _row(words, idx):
            amounts = amounts_in(words.words[i][1].text)
            if amounts and "%" not in words.words[i][1].text:
                found.append((i, max(amounts)))
                break
    target = abs(value)
    for n in range(2, min(most, len(found)) + 1):
        for k in range(len(found) - n + 1):  # consecutive label lines
            run = found[k:k + n]
            if same_amount(sum((a for _, a in run), Decimal(0)), target):
                first = words.cand(run[0][0], run[0][0] + 1)
                return [_Cand(first.page, first.box, Match.SUM, 1.0, first.order, first.source)]
    return []


def _row(words: _Words, idx: list[int]) -> list[int]:
    """The words printed on the same row as a line (OCR may read a row's left and right parts as two lines),
    right to left."""
    page = words.words[idx[0]][0]
    y0 = min(words.words[i][1].y0 for i in idx)
    y1 = max(words.words[i][1].y1 for i in idx)
    h, cy = y1 - y0, (y0 + y1) / 2
    x = max(words.words[i][1].x1 for i in idx)
    row = [i for i, (p, w) in enumerate(words.words) if p == page and abs((w.y0 + w.y1) / 2 - cy) <= 0.75 * h
           and (i in idx or w.x0 >= x)]  # a photo's rows lean: the value may sit a little above or below
    own = set(idx)  # a value printed apart, to the right, before one inside the label ("19 % auf 3.829,75")
    return sorted(row, key=lambda i: (i in own, round(abs((words.words[i][1].y0 + words.words[i][1].y1) / 2 - cy) / (0.3 * h)),
                                      -words.words[i][1].x1))


def _pick(cands: list[_Cand], anchors: list[tuple[int, Box]]) -> _Cand:
    return min(cands, key=lambda c: (c.match is Match.FUZZY, _distance(c, anchors), -c.score, c.order))


# --------------------------------------------------------------------------- the fields


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def ground(value: BaseModel, pages: Sequence[Page], fuzzy: float = 0.8) -> list[FieldEvidence]:
    """One ``FieldEvidence`` per leaf of ``value`` (``pipeline.fields`` order), located among ``pages``' words.

    ``fuzzy``: the least similarity (0-1, ``difflib`` ratio of the joined tokens) a text match that is not
    equal needs.  ``confidence`` is left at 1: ``score_evidence`` combines it with the model's and the rules'."""
    model = type(value)
    have_words = any(p.words is not None for p in pages)
    words = _Words.of(pages)
    found: dict[str, _Cand] = {}
    out: list[FieldEvidence] = []
    for path, raw in leaf_values(value.model_dump(mode="python")):
        text = _text(raw)
        if raw is None or text == "" or not have_words:
            out.append(FieldEvidence(path, text, None, Match.NULL))
            continue
        verbatim = verbatim_field(model, _INDEX.sub("", path))
        cands = _candidates(words, raw, fuzzy)
        if not cands and isinstance(raw, Decimal) and "[" not in path:
            cands = _sum_cands(words, raw, path)
        if not cands:  # a zero amount is often not printed at all (no tax): nothing to hold against it
            known = verbatim and not (isinstance(raw, Decimal) and raw == 0)
            out.append(FieldEvidence(path, text, False if known else None, Match.NONE))
            continue
        c = _choose(words, cands, path, found)
        found[path] = c
        if (item := _ITEM_FIELD.match(path)) is not None:
            names = words.siblings.setdefault(item.group(1), [])
            if item.group(3) not in names:
                names.append(item.group(3))
        out.append(FieldEvidence(path, text, True, c.match, round(c.score, 4), pages[c.page].index + 1,
                                 tuple(round(x, 5) for x in c.box), c.source))  # type: ignore[arg-type]
    return out


def _after_previous_item(cands: list[_Cand], path: str, found: dict[str, _Cand]) -> list[_Cand]:
    """Item k is printed after item k-1: prefer the candidates that come after the previous item's first field."""
    m = _ITEM_FIELD.match(path)
    if not m or m.group(2) == "0":
        return cands
    prev = found.get(f"{m.group(1)}[{int(m.group(2)) - 1}].{m.group(3)}")
    if prev is None:
        return cands
    later = [c for c in cands if c.order > prev.order]
    return later or cands


def _choose(words: _Words, cands: list[_Cand], path: str, found: dict[str, _Cand]) -> _Cand:
    """The occurrence of a value that is its field's: nearest its label; for a list item's field, the first after
    the previous item (its first field), then on the row of the item's fields found so far, under its column head."""
    m = _ITEM_FIELD.match(path)
    if not m:
        return _pick(cands, _label_boxes(words, path))
    cands = _after_previous_item(cands, path, found)
    prefix = f"{m.group(1)}[{m.group(2)}]."
    sibs = [c for f in _sibling_names(words, path) if (c := found.get(prefix + f)) is not None and c.match is not Match.FUZZY]
    if not sibs:
        return min(cands, key=lambda c: (c.match is Match.FUZZY, c.order))
    heads = _label_boxes(words, path)
    return min(cands, key=lambda c: (c.match is Match.FUZZY, _rows_apart(c, sibs), _column_apart(c, heads), c.order))


def _sibling_names(words: _Words, path: str) -> list[str]:
    """The other leaf names of a list item (``description``, ``quantity`` ... for ``line_items[3].amount``)."""
    m = _ITEM_FIELD.match(path)
    return [] if m is None else words.siblings.setdefault(m.group(1), [])


def _rows_apart(c: _Cand, sibs: list[_Cand]) -> float:
    """Lines between a candidate and the nearest sibling field's box (0 inside its rows); other pages count 99."""
    h = max(c.box[3] - c.box[1], 0.005)
    cy = (c.box[1] + c.box[3]) / 2
    best = 99.0
    for s in sibs:
        if s.page == c.page:
            gap = max(0.0, s.box[1] - cy, cy - s.box[3])
            best = min(best, round(gap / h))
    return best


def _column_apart(c: _Cand, heads: list[tuple[int, Box]]) -> float:
    """Horizontal distance from the candidate to the nearest column head above it (0 without one)."""
    cx = (c.box[0] + c.box[2]) / 2
    above = [abs(cx - (b[0] + b[2]) / 2) for p, b in heads if p == c.page and b[3] <= c.box[1] + 0.002]
    return min(above) if above else 0.0
