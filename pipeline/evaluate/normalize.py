"""Comparable forms of field values: text casefolded, dates parsed, amounts as ``Decimal``; empty is absent."""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
           "october", "november", "december"]  # fmt: skip
_YEAR = r"(\d{4}|\d{2})(?!\d)"  # four digits, or two (18 -> 2018, 85 -> 1985)
_DATE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("ymd", re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})")),
    ("ymd", re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")),
    ("dmy", re.compile(r"(?<!\d)(\d{1,2})[-/.](\d{1,2})[-/.]" + _YEAR)),
    ("d_mon_y", re.compile(r"(?<!\d)(\d{1,2})(?:st|nd|rd|th)?[\s\-/.]*([A-Za-z]{3,9})\.?[\s\-/.,]*" + _YEAR)),
    ("mon_d_y", re.compile(r"([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})(?!\d)")),
]
_TIME = re.compile(r"(\d{1,2})[:.](\d{2})(?:[:.](\d{2}))?\s*([ap])?\.?m?\.?", re.IGNORECASE)


def norm_text(value: Any) -> str | None:
    """Casefolded, whitespace collapsed and stripped; empty is absent."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    text = " ".join(str(value).split()).casefold()
    return text or None


def _month(word: str) -> int | None:
    w = word.casefold()
    for i, name in enumerate(_MONTHS, start=1):
        if len(w) >= 3 and (name.startswith(w) or (w == "sept" and i == 9)):
            return i
    return None


def _year(y: str) -> int:
    n = int(y)
    if len(y) == 2:
        return 2000 + n if n < 70 else 1900 + n
    return n


def _make_date(y: int, m: int, d: int) -> dt.date | None:
    try:
        return dt.date(y, m, d)
    except ValueError:
        return None


def _date_from_match(kind: str, g: tuple[str, ...]) -> dt.date | None:
    if kind == "ymd":
        return _make_date(int(g[0]), int(g[1]), int(g[2]))
    if kind == "dmy":  # day first; month first only when day first is impossible (12/25/2018)
        y = _year(g[2])
        return _make_date(y, int(g[1]), int(g[0])) or _make_date(y, int(g[0]), int(g[1]))
    if kind == "d_mon_y":
        m = _month(g[1])
        return _make_date(_year(g[2]), m, int(g[0])) if m else None
    m = _month(g[0])  # mon_d_y
    return _make_date(_year(g[2]), m, int(g[1])) if m else None


def parse_date(text: str) -> dt.date | None:
    """A date in ``text``: YYYY-MM-DD, DD/MM/YYYY (also ``-``/``.``, 2-digit years), D Mon YYYY,
    Mon D, YYYY, YYYY年M月D日.  None when none is found."""
    for kind, pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            d = _date_from_match(kind, m.groups())
            if d is not None:
                return d
    return None


def parse_amount(text: str) -> Decimal | None:
    """An amount from text: ``"1,234.50"``, ``"1.234,56"``, ``"9,00"``, ``"RM 9.00"``, ``"-3"``.

    With both separators the rightmost is the decimal point; a lone comma followed by
    one or two digits is a decimal comma, otherwise commas group thousands; several
    dots group thousands, one dot is the decimal point.  None when there are no digits.
    """
    s = text.strip()
    negative = s.startswith("-") or s.endswith("-") or (s.startswith("(") and s.endswith(")"))
    s = re.sub(r"[^\d.,]", "", s)
    if not re.search(r"\d", s):
        return None
    if "," in s and "." in s:
        decimal_sep = "," if s.rfind(",") > s.rfind(".") else "."
        s = s.replace("." if decimal_sep == "," else ",", "").replace(",", ".")
    elif "," in s:
        s = s.replace(",", ".") if re.fullmatch(r"\d*,\d{1,2}", s) else s.replace(",", "")
    elif s.count(".") > 1:
        s = s.replace(".", "")
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    return -value if negative else value


def parse_time(text: str) -> dt.time | None:
    """``HH:MM``, ``HH:MM:SS``, optional am/pm."""
    m = _TIME.search(text)
    if not m:
        return None
    h, mi, sec = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    ampm = (m.group(4) or "").lower()
    if ampm == "p" and h < 12:
        h += 12
    elif ampm == "a" and h == 12:
        h = 0
    try:
        return dt.time(h, mi, sec)
    except ValueError:
        return None


def _norm_number(value: Any) -> Any:
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, (Decimal, int)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    text = norm_text(value)
    if text is None:
        return None
    parsed = parse_amount(text)
    return parsed if parsed is not None else text  # unparseable truth stays present (and never equal)


def _norm_date(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = norm_text(value)
    if text is None:
        return None
    return parse_date(text) or text


def _norm_time(value: Any) -> Any:
    if isinstance(value, dt.time):
        return value.replace(microsecond=0, tzinfo=None)
    text = norm_text(value)
    if text is None:
        return None
    return parse_time(text) or text


def _norm_bool(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    text = norm_text(value)
    return {"true": True, "false": False, "yes": True, "no": False}.get(text or "", text)


_NORMALIZERS: dict[str, Callable[[Any], Any]] = {
    "text": norm_text,
    "number": _norm_number,
    "date": _norm_date,
    "time": _norm_time,
    "bool": _norm_bool,
}


def normalize(kind: str, value: Any) -> Any:
    """The comparable form of ``value`` for a field of ``kind``; None means absent.

    ``kind`` is ``text``, ``number``, ``date``, ``time``, ``bool`` (unknown kinds compare as text), or
    ``multiset:<kind>`` for a list of scalars (compared as a sorted tuple, order ignored)."""
    if value is None:
        return None
    if kind.startswith("multiset:"):
        inner = kind.split(":", 1)[1]
        values = value if isinstance(value, (list, tuple)) else [value]
        normed = [v for v in (normalize(inner, x) for x in values) if v is not None]
        return tuple(sorted(normed, key=repr)) or None
    return _NORMALIZERS.get(kind, norm_text)(value)
