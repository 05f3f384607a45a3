"""Receipt data: store and merchant, date and time, items, taxes (US, VAT-inclusive, China), tip, payment, model.

Every helper draws from the document's ``random.Random`` in a fixed order, so a seed gives one receipt.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from pipeline.synth.formats import CENT, RECEIPT_LABELS, Loc, NumFmt, _dec, fmt_date, q2
from pipeline.synth.invoice_data import LANG_IDX
from pipeline.synth.parties import _address, _digits, _person, _phone, _tax_id
from pipeline.synth.receipt_fonts import RFonts, _fit
from pipeline.synth.tables import load, rows
from schemas import Receipt

_ITEM_DATA = load("items.json")
_LABEL_DATA = load("labels.json")
#: store type -> [(en, de, fr, zh, low, high, weighed)]
RECEIPT_ITEMS: dict[str, list[tuple]] = rows(_ITEM_DATA["receipt_items"], len(_ITEM_DATA["receipt_columns"]))
STORE_WEIGHTS: dict[str, int] = _ITEM_DATA["store_weights"]
STORE_NAMES: dict[str, dict[str, list[str]]] = _ITEM_DATA["store_names"]
STORE_WORDS: dict[str, list[str]] = _ITEM_DATA["store_words"]
_US_SALES_TAX: dict[str, list[str]] = _ITEM_DATA["us_sales_tax"]
#: language -> [(payment_method, printed label)]
PAYMENTS: dict[str, list[tuple[str, str]]] = {k: [(m, t) for m, t in v] for k, v in _LABEL_DATA["payments"].items()}
_DISCOUNT_LABEL: dict[str, str] = _LABEL_DATA["receipt_discount"]


@dataclass
class RItem:
    desc: str
    qty: Decimal  # actual quantity
    qty_printed: bool
    unit: Decimal  # unit price (3 decimals for fuel)
    amount: Decimal
    weighed: bool
    tax_class: str = ""


@dataclass
class RecCtx:
    loc: Loc
    lab: dict
    fmt: NumFmt
    store: str
    merchant: str
    address: list[str]
    phone: str
    tax_id: str | None
    date: dt.date
    date_str: str
    time: dt.time | None
    time_str: str
    items: list[RItem]
    style: str  # us | vat | cn
    subtotal: Decimal | None
    tax: Decimal | None
    tax_lines: list[tuple[str, Decimal]]
    tip: Decimal | None
    total: Decimal
    payment: str | None
    pay_label: str
    cash_given: Decimal | None
    qty_style: str  # sub | inline | none | table
    upper: bool
    currency: str | None
    extra_top: list[str]


@dataclass
class _Sums:
    """What the totals block prints: style, subtotal, tax, tax lines, tip, total."""

    style: str
    subtotal: Decimal | None
    tax: Decimal | None
    tax_lines: list[tuple[str, Decimal]]
    tip: Decimal | None
    total: Decimal


def _merchant(rng: random.Random, fonts: RFonts, inner: int, lang: str) -> tuple[str, str]:
    """(store type, merchant name fitted to the paper)."""
    store = rng.choices(list(RECEIPT_ITEMS), weights=[STORE_WEIGHTS[s] for s in RECEIPT_ITEMS])[0]
    tmpl = rng.choice(STORE_NAMES[lang][store])
    merchant = tmpl.format(w=rng.choice(STORE_WORDS[lang]), l=_person(rng, lang).split()[-1] if lang != "zh" else "")
    if lang == "en" and rng.random() < 0.5:
        merchant = merchant.upper()
    return store, _fit(fonts.big, merchant, inner)


def _when(rng: random.Random, loc: Loc) -> tuple[dt.date, dt.time | None, str, str]:
    """(date, time or None, printed time, printed date)."""
    when = dt.date(2021, 1, 1) + dt.timedelta(days=rng.randint(0, 5 * 365))
    hour = rng.choice([7, 8, 9, 10, 11, 12, 12, 13, 13, 14, 15, 16, 17, 18, 18, 19, 19, 20, 21])
    t = dt.time(hour, rng.randint(0, 59), rng.randint(0, 59) if rng.random() < 0.5 else 0)
    has_time = rng.random() < 0.88
    time_str = ""
    if has_time:
        if loc.code == "en-US" and rng.random() < 0.5:
            h12 = t.hour % 12 or 12
            secs = f":{t.second:02d}" if t.second else ""
            time_str = f"{h12}:{t.minute:02d}{secs} {'PM' if t.hour >= 12 else 'AM'}"
        else:
            time_str = f"{t.hour:02d}:{t.minute:02d}" + (f":{t.second:02d}" if t.second else "")
    date_str = fmt_date(when, rng.choice(loc.rec_dates), loc.lang)
    return when, (t if has_time else None), time_str, date_str


def _receipt_fmt(rng: random.Random, loc: Loc) -> NumFmt:
    if loc.lang == "zh":
        sym = rng.choice(["¥", "￥", "RMB "])
        return NumFmt(".", ",", sym.strip(), True, sym.endswith(" "))
    if loc.code == "en-US":
        return NumFmt(".", ",", "$", True, False)
    if loc.code == "en-GB":
        return NumFmt(".", ",", "£", True, False)
    if loc.code == "de-CH":
        return NumFmt(".", "'", "CHF", True, True)
    return NumFmt(",", ".", rng.choice(["EUR", "€"]), False, True)


def _price_scale(loc: Loc) -> Decimal:
    """Catalogue prices are euros; dollars and francs a little higher, yuan about 4.5 times."""
    if loc.lang == "zh":
        return Decimal("4.5")
    return Decimal("1.15") if loc.currency in ("USD", "CHF") else Decimal(1)


def _unit_price(rng: random.Random, it: tuple, fuel: bool, lang: str, scale: Decimal) -> Decimal:
    unit = Decimal(str(round(rng.uniform(it[4], it[5]), 3 if fuel else 2)))
    if not fuel:
        unit = q2(unit * scale)
        if lang == "zh":
            unit = unit.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP).quantize(CENT)
    elif lang == "zh":
        unit = (unit * scale).quantize(Decimal("0.01"))
    return unit


def _items(rng: random.Random, store: str, loc: Loc, fonts: RFonts, fmt: NumFmt, name_w: float,
           qty_style: str, upper: bool) -> list[RItem]:
    cat = RECEIPT_ITEMS[store]
    lang, li, scale = loc.lang, LANG_IDX[loc.lang], _price_scale(loc)
    n = rng.choice([1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 26]) if store != "fuel" else rng.randint(1, 3)
    if store != "grocery":
        n = min(n, len(cat) + 2)
    items: list[RItem] = []
    prices: dict[str, Decimal] = {}
    pool: list = []
    for k in range(n):
        if not pool:
            pool = list(cat)
            rng.shuffle(pool)
        it = cat[0] if store == "fuel" and k == 0 else pool.pop()
        name = it[li]
        if upper:
            name = name.upper()
        name = _fit(fonts.reg, name, name_w)
        weighed = it[6]
        fuel = store == "fuel" and weighed
        unit = prices.setdefault(it[0], _unit_price(rng, it, fuel, lang, scale))  # same article, same price
        if fuel:
            qty = _dec(rng.uniform(15, 65), 2)
        elif weighed:
            qty = _dec(rng.uniform(0.2, 2.5), 3)
        else:
            qty = Decimal(rng.choice([1, 1, 1, 1, 1, 2, 2, 3, 4, 6]))
        if qty_style == "none" and not weighed:
            qty = Decimal(1)
        amount = q2(qty * unit)
        printed = weighed or qty_style in ("inline", "table") or (qty_style == "sub" and qty != 1)
        items.append(RItem(name, qty, printed, unit, amount, weighed))
    # discount as a negative line
    if rng.random() < 0.15 and sum(i.amount for i in items) > 5:
        base = sum((i.amount for i in items), Decimal(0))
        cap = Decimal(rng.choice(["1.00", "2.00", "3.00", "5.00"])) * scale
        amt = -min(q2(base * Decimal("0.1")), cap).quantize(CENT)
        label = _DISCOUNT_LABEL[lang]
        if upper:
            label = label.upper()
        items.append(RItem(label, Decimal(1), False, amt, amt, False))
    return items


def _us_sums(rng: random.Random, store: str, items_sum: Decimal) -> _Sums:
    """Sales tax on top of the prices (sometimes 0 and not printed), often a tip at restaurants."""
    rate = rng.choice(_US_SALES_TAX["default"]) if store != "grocery" else rng.choice(_US_SALES_TAX["grocery"])
    subtotal = items_sum
    tax = q2(subtotal * Decimal(rate) / 100)
    printed_tax = rate != "0" or rng.random() < 0.5
    tax_lines = [(rate, tax)] if printed_tax else []
    tip = None
    if store in ("restaurant", "cafe") and rng.random() < 0.55:
        tip = q2(subtotal * Decimal(rng.choice([10, 15, 18, 20, 22])) / 100)
    total = subtotal + tax + (tip or 0)
    if not printed_tax:
        total = subtotal + (tip or 0)
    return _Sums("us", subtotal, tax if printed_tax else None, tax_lines, tip, total)


def _vat_sums(rng: random.Random, store: str, loc: Loc, items: list[RItem], items_sum: Decimal) -> _Sums:
    """VAT inside the prices, one or two rates (class A/B), the included amounts printed below the total."""
    rates = list(loc.rates[:2])
    by: dict[str, Decimal] = {}
    for it in items:
        standard = store in ("hardware", "fuel", "pharmacy") or rng.random() < 0.4 or len(rates) == 1
        r = rates[0] if standard else rates[1]
        if store == "grocery" and loc.lang in ("de", "fr") and rng.random() < 0.75:
            r = rates[1]
        it.tax_class = "A" if r == rates[0] else "B"
        by[r] = by.get(r, Decimal(0)) + it.amount
    tax_lines: list[tuple[str, Decimal]] = []
    for r in rates:
        if r in by:
            tax_lines.append((r, q2(by[r] * Decimal(r) / (100 + Decimal(r)))))
    tax_val = sum((x[1] for x in tax_lines), Decimal(0)) if tax_lines and rng.random() < 0.9 else None
    if tax_val is None:
        tax_lines = []
    tip = None
    if store in ("restaurant", "cafe") and rng.random() < 0.25:
        tip = Decimal(rng.choice(["0.50", "1.00", "1.50", "2.00", "3.00", "5.00"]))
    if tip is not None:
        # Receipt.subtotal + tax + tip must equal total, and VAT is already inside the
        # item prices here: print no VAT breakdown, so tax is not printed (null).
        return _Sums("vat", items_sum, None, [], tip, items_sum + tip)
    return _Sums("vat", None, tax_val, tax_lines, None, items_sum)


def _sums(rng: random.Random, store: str, loc: Loc, items: list[RItem]) -> _Sums:
    items_sum = sum((i.amount for i in items), Decimal(0))
    if loc.code == "en-US":
        return _us_sums(rng, store, items_sum)
    if loc.lang == "zh":
        return _Sums("cn", items_sum if rng.random() < 0.4 else None, None, [], None, items_sum)
    return _vat_sums(rng, store, loc, items, items_sum)


def _payment(rng: random.Random, lang: str, total: Decimal) -> tuple[str | None, str, Decimal | None]:
    """(payment method or None when not printed, printed label, cash handed over)."""
    pay_opts = PAYMENTS[lang]
    if rng.random() < 0.08:
        payment, pay_label = None, ""
    else:
        weights = [4, 2, 3, 2, 1][: len(pay_opts)] + [1] * (len(pay_opts) - 5)
        payment, pay_label = rng.choices(pay_opts, weights=weights)[0]
        pay_label = pay_label.format(d4=_digits(rng, 4))
    cash_given = None
    if payment == "cash":
        step = Decimal(rng.choice(["5", "10", "20", "50"])) * (Decimal(10) if lang == "zh" else 1)
        cash_given = (total / step).to_integral_value(rounding="ROUND_CEILING") * step
        if cash_given == total and rng.random() < 0.5:
            cash_given += step
        cash_given = cash_given.quantize(CENT)
    return payment, pay_label, cash_given


def _receipt_context(rng: random.Random, fonts: RFonts, width: int, loc: Loc) -> RecCtx:
    lang = loc.lang
    lab = RECEIPT_LABELS[lang]
    inner = width - 16
    store, merchant = _merchant(rng, fonts, inner, lang)
    address = [a for a in (_fit(fonts.reg, a, inner) for a in _address(rng, loc)) if a]
    when, t, time_str, date_str = _when(rng, loc)
    fmt = _receipt_fmt(rng, loc)
    upper = lang != "zh" and rng.random() < 0.55
    qty_style = "table" if lang == "zh" else rng.choice(["sub", "sub", "inline", "none"])
    if store == "restaurant" and lang != "zh":
        qty_style = rng.choice(["inline", "inline", "none"])
    amount_w = fonts.reg.getlength(" " + fmt.num(Decimal("9999.99")) + " A")
    name_w = inner - amount_w - (fonts.reg.getlength("00 ") if qty_style == "inline" else 0)
    items = _items(rng, store, loc, fonts, fmt, name_w, qty_style, upper)
    sums = _sums(rng, store, loc, items)
    payment, pay_label, cash_given = _payment(rng, lang, sums.total)
    extra = []
    if rng.random() < 0.6:
        cashier = f"{lab['cashier']}: {rng.randint(1, 12)}"
        extra.append(cashier + (f"  #{_digits(rng, 4)}" if rng.random() < 0.5 else ""))
    tax_id = None
    if rng.random() < 0.55:
        tax_id = _tax_id(rng, loc) if lang != "fr" else _digits(rng, 14)
    return RecCtx(
        loc=loc, lab=lab, fmt=fmt, store=store, merchant=merchant, address=address, phone=_phone(rng, loc),
        tax_id=tax_id, date=when, date_str=date_str, time=t, time_str=time_str, items=items, style=sums.style,
        subtotal=sums.subtotal, tax=sums.tax, tax_lines=sums.tax_lines, tip=sums.tip, total=sums.total,
        payment=payment, pay_label=pay_label, cash_given=cash_given, qty_style=qty_style, upper=upper,
        currency=loc.currency, extra_top=extra,
    )


def _receipt_model(c: RecCtx) -> Receipt:
    return Receipt.model_validate({
        "merchant": c.merchant,
        "address": ", ".join(c.address) if c.address else None,
        "date": c.date,
        "time": c.time,
        "currency": c.currency,
        "items": [{"description": i.desc, "quantity": i.qty if i.qty_printed else None, "amount": i.amount}
                  for i in c.items],
        "subtotal": c.subtotal,
        "tax": c.tax,
        "tip": c.tip,
        "total": c.total,
        "payment_method": c.payment,
    })
