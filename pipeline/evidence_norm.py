"""Comparable forms of printed words for evidence matching: amounts, dates, times and text.

Builds on ``pipeline.evaluate.normalize`` (the scorer's parsers: ``parse_amount``, ``parse_date``,
``parse_time``) and adds what matching printed words needs beyond scoring: month names in every
language the synthetic generator prints (``pipeline/synth/data/locales.json``), month-first dates
(``03/05/2024`` is read both ways), common OCR confusions in numbers (``O`` for ``0``), and token
forms of text (casefolded, accents and edge punctuation dropped).  Also the tables matching reads:
common labels by field-name word (``labels_for``), currency signs, and which schema fields hold values a
model copies from the page rather than chooses (``verbatim_field``).
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import re
import typing
import unicodedata
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.evaluate.normalize import _DATE_PATTERNS, _MONTHS, _date_from_match, _make_date, _year, parse_amount, parse_time

_LOCALES_JSON = Path(__file__).parent / "synth" / "data" / "locales.json"
_OCR_DIGITS = str.maketrans({"O": "0", "o": "0", "D": "0", "Q": "0", "I": "1", "l": "1", "|": "1", "i": "1",
                             "S": "5", "s": "5", "B": "8", "Z": "2", "z": "2", "g": "9"})
_INDEX = re.compile(r"\[\d+\]")
_GLUED_YEAR_TIME = re.compile(r"([-/.]\d{4})(\d{1,2}:\d{2})")
_GLUED_TIME = re.compile(r"(\d[-/.]\d{2})(\d{1,2}:\d{2})")
_OCR_LETTERS = str.maketrans({"0": "o", "1": "l", "5": "s", "8": "b"})
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")
_HAS_DIGIT = re.compile(r"\d")


@functools.cache
def _month_names() -> dict[str, str]:
    """Month name (any language the generator prints, casefolded, accents dropped) -> English name."""
    out = {m: m for m in _MONTHS}
    try:
        months = json.loads(_LOCALES_JSON.read_text(encoding="utf-8"))["months"]
    except (OSError, ValueError, KeyError):  # the package data is missing: English only
        return out
    for names in months.values():
        for i, name in enumerate(names):
            out[fold(name)] = _MONTHS[i]
    return out


def fold(text: str) -> str:
    """Casefolded, accents dropped, whitespace collapsed."""
    if text.isascii():  # most printed words: nothing to decompose
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def token(text: str) -> str:
    """A word's comparable form: folded, without leading or trailing punctuation (``"Total:"`` -> ``total``)."""
    t = fold(text)
    stripped = _EDGE.sub("", t)
    return stripped or t


def text_tokens(value: str) -> list[str]:
    """A text value's tokens, as printed words would be (commas between address parts are separators)."""
    return [t for t in (token(w) for w in fold(value).replace(",", " ").split()) if t]


def _english_months(text: str) -> str:
    """``5 mars 2024`` -> ``5 march 2024``: month words in any printed language in English."""
    names = _month_names()
    words = re.split(r"(\W+)", fold(text))
    return "".join(_month_word(w, names) for w in words)


def _month_word(w: str, names: dict[str, str]) -> str:
    if not w.isalpha():
        if not (len(w) >= 3 and any(c.isalpha() for c in w)):
            return w
        w2 = w.translate(_OCR_LETTERS)  # OCR's "0ct" for "oct"
        return names.get(w2, names.get(w2[:-1], w2)) if w2.isalpha() else w
    return names.get(w, names.get(w[:-1], w))


def dates_in(text: str) -> set[dt.date]:
    """Every date ``text`` may print: day-first and month-first readings of ``03/05/2024`` both count."""
    if not _HAS_DIGIT.search(text):
        return set()
    t = _english_months(text)
    t = _GLUED_TIME.sub(r"\1 \2", _GLUED_YEAR_TIME.sub(r"\1 \2", t))  # OCR glues "2021-01-25 10:26" together
    out: set[dt.date] = set()
    for kind, pattern in _DATE_PATTERNS:
        for m in pattern.finditer(t):
            g = m.groups()
            d = _date_from_match(kind, g)
            if d is not None:
                out.add(d)
            if kind == "dmy":
                swapped = _make_date(_year(g[2]), int(g[0]), int(g[1]))
                if swapped is not None:
                    out.add(swapped)
    return out


def amounts_in(text: str, ocr: bool = False) -> set[Decimal]:
    """The amount ``text`` prints (sign ignored), as ``parse_amount`` reads it; with ``ocr`` also after
    mapping letters OCR confuses with digits.  Empty when ``text`` has no digit."""
    out: set[Decimal] = set()
    for t in (text, text.translate(_OCR_DIGITS)) if ocr else (text,):
        if not _HAS_DIGIT.search(t) or _letters_between_digits(t):
            continue
        value = parse_amount(t)
        if value is not None:
            out.add(abs(value))
        last = _LAST_DECIMAL.search(t)
        if last:  # OCR reads "3,201.16" as "3.201.16": the last separator before 1-2 digits is the decimal point
            out.add(abs(Decimal(re.sub(r"[^\d]", "", last.group(1)) + "." + last.group(2))))
        if _AMBIGUOUS.search(t):  # 1,234 or 1.234: thousands in one locale, three places in another
            digits = re.sub(r"[^\d.,]", "", t)
            out.add(abs(Decimal(digits.replace(",", "."))))
            out.add(abs(Decimal(re.sub(r"[.,]", "", digits))))
    return out


_LAST_DECIMAL = re.compile(r"(\d{1,3}(?:[.,' ]\d{3})+)[.,](\d{1,2})\D*$")
_AMBIGUOUS = re.compile(r"^\D*\d{1,3}[.,]\d{3}\D*$")


def _letters_between_digits(text: str) -> bool:
    """``INV-2024-0042`` or ``12AB34`` are identifiers, not amounts."""
    return bool(re.search(r"\d[^\d\s.,'’\u00a0\u202f]+\d", text)) and not re.fullmatch(r"[\d\s.,'’\u00a0\u202f-]+", text)


def times_in(text: str) -> set[dt.time]:
    t = parse_time(text) if ":" in text or "." in text else None
    return {t} if t is not None else set()


def same_amount(a: Decimal, b: Decimal) -> bool:
    return abs(a - b) < Decimal("0.005")


# --------------------------------------------------------------------------- labels and fields

#: labels printed beside values, by a word of the field's name (any language the project meets often)
COMMON_LABELS: dict[str, tuple[str, ...]] = {
    "total": ("total", "amount due", "grand total", "balance due", "amount", "gesamt", "gesamtbetrag", "summe",
              "endbetrag", "montant", "ttc", "importe", "totale", "合计", "总计", "应付"),
    "subtotal": ("subtotal", "sub total", "sub-total", "net", "netto", "zwischensumme", "sous-total", "ht", "小计"),
    "tax": ("tax", "vat", "gst", "sst", "mwst", "ust", "tva", "iva", "税", "税额"),
    "tip": ("tip", "gratuity", "trinkgeld", "pourboire"),
    "date": ("date", "dated", "datum", "fecha", "data", "日期"),
    "issue": ("issued", "invoice date", "rechnungsdatum", "date de facture"),
    "due": ("due", "payable", "fällig", "fälligkeit", "échéance", "zahlbar"),
    "number": ("no", "number", "#", "nr", "n°", "num", "ref", "nummer", "numéro", "编号", "号码"),
    "invoice": ("invoice", "rechnung", "facture", "factura", "发票"),
    "time": ("time", "zeit", "heure", "时间"),
    "tax_id": ("vat", "ein", "tin", "gst", "ust-idnr", "tva", "siret", "tax id", "税号"),
    "quantity": ("qty", "quantity", "menge", "anz", "qte", "quantite", "数量"),
    "unit_price": ("unit price", "price", "rate", "preis", "einzelpreis", "prix", "prix unitaire", "单价"),
    "amount": ("amount", "total", "betrag", "gesamt", "montant", "金额"),
    "description": ("description", "item", "items", "beschreibung", "bezeichnung", "designation", "项目名称"),
}
#: currency codes and how they are printed besides the code itself
CURRENCY_SIGNS: dict[str, tuple[str, ...]] = {
    "EUR": ("€", "eur", "euro"), "USD": ("$", "us$", "usd"), "GBP": ("£", "gbp"), "JPY": ("¥", "円"),
    "CNY": ("¥", "元", "rmb", "cny"), "CHF": ("chf", "fr."), "MYR": ("rm", "myr"), "SGD": ("s$", "sgd"),
    "INR": ("₹", "rs", "rs."), "AUD": ("a$", "aud"), "CAD": ("c$", "cad"), "HKD": ("hk$", "hkd"),
}



def labels_for(path: str) -> list[list[str]]:
    """Label phrases (as token lists) for a field: its name's words and the common labels of each word."""
    return _labels_named(_INDEX.sub("", path).split(".")[-1])


@functools.cache
def _labels_named(name: str) -> list[list[str]]:
    words = [w for w in name.split("_") if w]
    phrases = {" ".join(words), *words}
    for key in ("_".join(words), *words):
        phrases.update(COMMON_LABELS.get(key, ()))
    return [text_tokens(p) for p in phrases if text_tokens(p)]



@functools.cache
def verbatim_field(model: type[BaseModel], path: str) -> bool:
    return _printed_verbatim(_annotation(model, path))


def _annotation(model: type[BaseModel], path: str) -> Any:
    """The annotation of the field at ``path`` (``line_items[2].amount``), or None."""
    ann: Any = model
    for part in _INDEX.sub("", path).split("."):
        inner = _model_of(ann)
        if inner is None or part not in inner.model_fields:
            return None
        ann = inner.model_fields[part].annotation
    return ann


def _model_of(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        m = _model_of(arg)
        if m is not None:
            return m
    return None


def _printed_verbatim(ann: Any) -> bool:
    """False for values a model chooses rather than copies (``Literal`` choices, enums, booleans)."""
    if ann is None:
        return True
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return False
    if isinstance(ann, type) and issubclass(ann, (enum.Enum, bool)):
        return False
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    return all(_printed_verbatim(a) for a in args) if args and origin is not typing.Annotated else (
        _printed_verbatim(args[0]) if origin is typing.Annotated and args else True)


