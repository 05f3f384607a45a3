"""Locales and how they print: number separators, currency symbols, dates, tax rates, labels."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from pipeline.synth.tables import load

CENT = Decimal("0.01")


def q2(x: Decimal) -> Decimal:
    return Decimal(x).quantize(CENT, rounding=ROUND_HALF_UP)


def _dec(x: float, places: int = 2) -> Decimal:
    return Decimal(repr(round(x, places))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class NumFmt:
    dec: str = "."
    thou: str = ","
    sym: str = "$"
    pre: bool = True
    space: bool = False

    def num(self, d: Decimal, places: int = 2) -> str:
        s = f"{abs(d):,.{places}f}".replace(",", "\0").replace(".", self.dec).replace("\0", self.thou)
        return ("-" if d < 0 else "") + s

    def money(self, d: Decimal) -> str:
        n = self.num(abs(d))
        sp = " " if self.space else ""
        s = f"{self.sym}{sp}{n}" if self.pre else f"{n}{sp}{self.sym}"
        return ("-" if d < 0 else "") + s

    def qty(self, q: Decimal) -> str:
        if q == q.to_integral_value():
            return self.num(q, 0)
        exponent = q.normalize().as_tuple().exponent
        places = max(0, -exponent) if isinstance(exponent, int) else 0
        return self.num(q, places)


def fmt_rate(fmt: NumFmt, rate: str) -> str:
    """A tax rate string ("8.875") with the document's decimal separator."""
    return rate.replace(".", fmt.dec)


_LOCALE_DATA = load("locales.json")
MONTHS: dict[str, list[str]] = _LOCALE_DATA["months"]


def fmt_date(d: dt.date, style: str, lang: str) -> str:
    if style == "iso":
        return d.isoformat()
    if style == "dmy/":
        return f"{d.day:02d}/{d.month:02d}/{d.year}"
    if style == "mdy/":
        return f"{d.month:02d}/{d.day:02d}/{d.year}"
    if style == "dmy.":
        return f"{d.day:02d}.{d.month:02d}.{d.year}"
    if style == "dmy.short":
        return f"{d.day:02d}.{d.month:02d}.{d.year % 100:02d}"
    if style == "mdy/short":
        return f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d}"
    if style == "dmy/short":
        return f"{d.day:02d}/{d.month:02d}/{d.year % 100:02d}"
    if style == "ymd/":
        return f"{d.year}/{d.month:02d}/{d.day:02d}"
    if style == "zh":
        return f"{d.year}年{d.month}月{d.day}日"
    if style == "d mon y":  # 5 Mar 2024 / 5 mars 2024 / 5. März 2024
        m = MONTHS[lang][d.month - 1]
        if lang == "en":
            return f"{d.day} {m[:3]} {d.year}"
        if lang == "de":
            return f"{d.day}. {m} {d.year}"
        return f"{d.day} {m} {d.year}"
    if style == "d month y":
        m = MONTHS[lang][d.month - 1]
        return f"{d.day}. {m} {d.year}" if lang == "de" else f"{d.day} {m} {d.year}"
    if style == "mon d, y":
        return f"{MONTHS['en'][d.month - 1][:3]} {d.day}, {d.year}"
    if style == "month d, y":
        return f"{MONTHS['en'][d.month - 1]} {d.day}, {d.year}"
    raise ValueError(style)


@dataclass(frozen=True)
class Loc:
    code: str
    lang: str
    country: str
    currency: str
    sym: str
    sym_pre: bool
    dec: str
    thou: tuple[str, ...]
    inv_dates: tuple[str, ...]
    rec_dates: tuple[str, ...]
    rates: tuple[str, ...]  # standard first, then reduced
    tax_name: str
    taxid_label: str
    letter: bool = False


def _locale(code: str, d: dict) -> Loc:
    tuples = {k: tuple(d[k]) for k in ("thou", "inv_dates", "rec_dates", "rates")}
    return Loc(code=code, **{**d, **tuples})


LOCALES: dict[str, Loc] = {code: _locale(code, d) for code, d in _LOCALE_DATA["locales"].items()}
INV_LOCALE_WEIGHTS: dict[str, float] = _LOCALE_DATA["invoice_weights"]
REC_LOCALE_WEIGHTS: dict[str, float] = _LOCALE_DATA["receipt_weights"]
#: currency -> (symbol, symbol before the amount)
FOREIGN: dict[str, tuple[str, bool]] = {c: (s, pre) for c, (s, pre) in _LOCALE_DATA["foreign_currencies"].items()}
_TLD: dict[str, str] = _LOCALE_DATA["tld"]

_LABEL_DATA = load("labels.json")
LABELS: dict[str, dict[str, str]] = _LABEL_DATA["invoice"]
EU_VAT_ID_LABELS: dict[str, str] = _LABEL_DATA["eu_vat_id"]
RECEIPT_LABELS: dict[str, dict] = _LABEL_DATA["receipt"]


def _tld(loc: Loc) -> str:
    return _TLD[loc.code]
