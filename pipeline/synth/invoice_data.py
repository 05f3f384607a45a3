"""Invoice data: the context (locale, currency, dates, parties), line items from the catalogue, totals, model."""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field
from decimal import Decimal

from pipeline.synth.formats import (
    CENT,
    FOREIGN,
    INV_LOCALE_WEIGHTS,
    LABELS,
    LOCALES,
    Loc,
    NumFmt,
    _dec,
    fmt_date,
    q2,
)
from pipeline.synth.parties import _address, _bank, _company, _digits, _invoice_number, _person, _phone, _pick, _tax_id
from pipeline.synth.tables import load, rows
from schemas import Invoice

_ITEM_DATA = load("items.json")
#: language -> column of the translated names in UNITS, CATALOG and RECEIPT_ITEMS
LANG_IDX: dict[str, int] = {lang: k for k, lang in enumerate(_ITEM_DATA["languages"])}
UNITS: dict[str, list[str]] = _ITEM_DATA["units"]
#: industry -> [(en, de, fr, zh, unit, low, high)]
CATALOG: dict[str, list[tuple]] = rows(_ITEM_DATA["invoice_items"], len(_ITEM_DATA["invoice_columns"]))
DETAILS: dict[str, list[str]] = _ITEM_DATA["details"]


@dataclass
class Line:
    desc: str
    qty: Decimal
    unit: str
    price: Decimal
    disc: int  # line discount in %
    rate: str  # tax rate as printed, e.g. "19"
    amount: Decimal
    is_discount: bool = False


@dataclass
class InvCtx:
    loc: Loc
    lab: dict[str, str]
    fmt: NumFmt
    currency: str
    date_style: str
    number: str
    issue: dt.date
    due: dt.date | None
    terms: int | None
    vendor: tuple[str, list[str], str | None]  # name, address lines, tax id
    customer: tuple[str, list[str], str | None]
    vendor_slug: str
    vendor_phone: str
    bank: str
    lines: list[Line]
    reverse_charge: bool
    customer_no: str | None
    order_ref: str | None
    # filled after data is final
    subtotal: Decimal = Decimal(0)
    tax_rows: list[tuple[str, Decimal, Decimal]] = field(default_factory=list)  # rate, base, tax
    tax: Decimal = Decimal(0)
    total: Decimal = Decimal(0)


def _invoice_context(rng: random.Random) -> InvCtx:
    loc = LOCALES[_pick(rng, INV_LOCALE_WEIGHTS)]
    lab = LABELS[loc.lang]
    currency, sym, pre = loc.currency, loc.sym, loc.sym_pre
    if loc.lang != "zh" and rng.random() < 0.1:  # invoice in a foreign currency
        currency = rng.choice([c for c in FOREIGN if c != loc.currency])
        sym, pre = FOREIGN[currency]
    if rng.random() < 0.3:  # ISO code instead of the symbol
        sym = currency
    space = sym.isalpha() or not pre or rng.random() < 0.2
    fmt = NumFmt(loc.dec, rng.choice(loc.thou), sym, pre if not sym.isalpha() else rng.random() < 0.6, space)
    issue = dt.date(2021, 1, 1) + dt.timedelta(days=rng.randint(0, 5 * 365))
    terms = rng.choice([None, None, 0, 7, 14, 14, 30, 30, 30, 45, 60])
    due = issue + dt.timedelta(days=terms) if terms is not None else None
    vname, vslug = _company(rng, loc)
    cross = loc.lang != "zh" and rng.random() < 0.12
    cloc = LOCALES[rng.choice(["en-GB", "de-DE", "fr-FR", "de-CH"])] if cross else loc
    if rng.random() < 0.15:
        cname = _person(rng, cloc.lang)
    else:
        cname = _company(rng, cloc)[0]
    vendor = (vname, _address(rng, loc, country=cross or rng.random() < 0.15), _tax_id(rng, loc))
    customer = (cname, _address(rng, cloc, country=cross), _tax_id(rng, cloc) if rng.random() < 0.55 else None)
    if rng.random() < 0.05:
        customer = (cname, _address(rng, cloc, country=cross), None)
    reverse = (
        cross and cloc.code != loc.code and loc.code in ("de-DE", "fr-FR") and cloc.code in ("de-DE", "fr-FR", "en-GB")
        and rng.random() < 0.6
    )
    return InvCtx(
        loc=loc, lab=lab, fmt=fmt, currency=currency, date_style=rng.choice(loc.inv_dates),
        number=_invoice_number(rng, loc, issue), issue=issue, due=due, terms=terms, vendor=vendor,
        customer=customer, vendor_slug=vslug, vendor_phone=_phone(rng, loc), bank=_bank(rng, loc), lines=[],
        reverse_charge=reverse, customer_no=f"{rng.randint(10000, 99999)}" if rng.random() < 0.4 else None,
        order_ref=f"PO-{_digits(rng, 6)}" if rng.random() < 0.3 else None,
    )


def _qty(rng: random.Random, unit: str) -> Decimal:
    if unit == "h":
        hours = ["0.5", "1", "1.5", "2", "2.25", "3", "4", "4.5", "6", "7.5", "8", "12", "16", "24", "37.5"]
        return Decimal(rng.choice(hours))
    if unit == "kg":
        return rng.choice([_dec(rng.uniform(0.2, 250), 3), Decimal(rng.randint(1, 500))])
    if unit == "m":
        return rng.choice([Decimal(rng.randint(1, 200)), _dec(rng.uniform(0.5, 80), 1)])
    if unit in ("mo", "day"):
        return Decimal(rng.randint(1, 12) if unit == "mo" else rng.choice([1, 1, 2, 3, 5]))
    if unit == "lump":
        return Decimal(1)
    return Decimal(rng.choice([1, 1, 1, 2, 2, 3, 4, 5, 6, 10, 12, 20, 25, 50, 100, 250, 1000]))


def _price(rng: random.Random, lo: float, hi: float) -> Decimal:
    p = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if p >= 50 and rng.random() < 0.5:
        return Decimal(int(round(p / 5) * 5)).quantize(CENT)
    return _dec(p, 2) if p >= 0.1 else _dec(max(p, 0.01), 2)


def _gen_lines(rng: random.Random, ctx: InvCtx, n: int) -> list[Line]:
    loc = ctx.loc
    li = LANG_IDX[loc.lang]
    industry = rng.choice(list(CATALOG))
    cat = CATALOG[industry]
    other = CATALOG[rng.choice(list(CATALOG))]
    disc_lines = rng.random() < 0.18
    multi_rate = len(loc.rates) > 1 and loc.code != "en-US" and rng.random() < 0.25
    std = loc.rates[0] if loc.code != "en-US" else rng.choice(loc.rates + ("0",))
    if ctx.reverse_charge:
        std = "0"

    def month_word() -> str:
        day = ctx.issue - dt.timedelta(days=rng.randint(0, 60))
        return fmt_date(day, rng.choice(["dmy/", "iso"]) if loc.lang != "zh" else "zh", loc.lang)

    lines = []
    pool: list = []
    for _ in range(n):
        if not pool:  # each catalogue entry once before any repeats
            pool = list(cat) + rng.sample(other, 2)
            rng.shuffle(pool)
        item = pool.pop()
        desc = item[li]
        r = rng.random()
        if r < 0.25:
            d = rng.choice(DETAILS[loc.lang]).format(m=month_word(), ref=f"P-{_digits(rng, 4)}")
            desc = f"{desc}, {d}" if loc.lang != "zh" else f"{desc}（{d}）"
        elif r < 0.4:
            desc = f"[{rng.choice('ABCKMSTX')}{_digits(rng, 5)}] {desc}"
        unit = item[4]
        qty = _qty(rng, unit)
        price = _price(rng, item[5], item[6])
        if price * qty > Decimal("20000") and unit == "pc":
            qty = Decimal(rng.choice([1, 1, 2, 3, 5]))
        disc = rng.choice([0, 0, 5, 10, 15, 20]) if disc_lines else 0
        amount = q2(qty * price * (100 - disc) / 100)
        if amount <= 0:
            price, amount = Decimal("1.00"), q2(qty * Decimal("1.00") * (100 - disc) / 100)
        rate = std if not multi_rate or rng.random() < 0.6 else rng.choice(loc.rates[1:])
        lines.append(Line(desc, qty, UNITS[unit][li], price, disc, rate, amount))
    return lines


def _add_discount_line(rng: random.Random, ctx: InvCtx, lines: list[Line]) -> None:
    base = sum((ln.amount for ln in lines), Decimal(0))
    if rng.random() < 0.5:
        pct = rng.choice([2, 3, 5, 10])
        amt = -q2(base * pct / 100)
        desc = ctx.lab["discount"].format(p=pct)
    else:
        amt = -min(q2(base * Decimal("0.3")), Decimal(rng.choice([10, 25, 50, 100, 150, 250])).quantize(CENT))
        desc = ctx.lab["loyalty"]
    if amt >= 0:
        return
    rate = lines[0].rate
    lines.append(Line(desc, Decimal(1), "", amt, 0, rate, amt, is_discount=True))


def _finish_totals(ctx: InvCtx) -> None:
    subtotal = sum((ln.amount for ln in ctx.lines), Decimal(0))
    by_rate: dict[str, Decimal] = {}
    for ln in ctx.lines:
        by_rate[ln.rate] = by_rate.get(ln.rate, Decimal(0)) + ln.amount
    rows = []
    for rate in sorted(by_rate, key=lambda r: -Decimal(r)):
        base = by_rate[rate]
        rows.append((rate, base, q2(base * Decimal(rate) / 100)))
    ctx.subtotal = subtotal
    ctx.tax_rows = rows
    ctx.tax = sum((r[2] for r in rows), Decimal(0))
    ctx.total = subtotal + ctx.tax


def _invoice_model(ctx: InvCtx) -> Invoice:
    def party(p: tuple[str, list[str], str | None]) -> dict:
        return {"name": p[0], "address": ", ".join(p[1]) if p[1] else None, "tax_id": p[2]}

    return Invoice.model_validate({
        "invoice_number": ctx.number,
        "issue_date": ctx.issue,
        "due_date": ctx.due,
        "currency": ctx.currency,
        "vendor": party(ctx.vendor),
        "customer": party(ctx.customer),
        "line_items": [
            {"description": ln.desc, "quantity": ln.qty, "unit_price": ln.price, "amount": ln.amount}
            for ln in ctx.lines
        ],
        "subtotal": ctx.subtotal,
        "tax": ctx.tax,
        "total": ctx.total,
    })
