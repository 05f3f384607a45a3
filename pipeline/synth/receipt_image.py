"""Receipts drawn like a thermal printer prints them (Pillow), saved as a PNG slip or as a phone photo of it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pipeline.synth.degrade import photograph, warp_box
from pipeline.synth.formats import LOCALES, REC_LOCALE_WEIGHTS, fmt_rate
from pipeline.synth.parties import _digits, _initials, _pick
from pipeline.synth.receipt_data import RecCtx, _receipt_context, _receipt_model
from pipeline.synth.receipt_fonts import RFonts, _fit, _receipt_fonts, cjk_receipts_available
from pipeline.synth.tables import load
from schemas import Receipt

_CN_COLUMNS: list[str] = load("labels.json")["receipt_cn_columns"]


def _ops_header(c: RecCtx, rng: random.Random) -> list[tuple]:
    """Logo, merchant, address, phone, tax id, date and time, table; up to the first separator."""
    lab = c.lab
    ops: list[tuple] = []
    if rng.random() < 0.45:
        ops.append(("logo", rng.choice(["circle", "box", "stripes"])))
    ops.append(("big", c.merchant))
    for a in c.address:
        ops.append(("center", a))
    if rng.random() < 0.7:
        ops.append(("center", f"{lab['tel']} {c.phone}"))
    if c.tax_id:
        ops.append(("center", f"{'SIRET' if c.loc.lang == 'fr' else c.loc.taxid_label} {c.tax_id}"))
    ops.append(("blank",))
    if c.style == "cn":
        ops.append(("center", lab["receipt"]))
    dt_line = f"{c.date_str} {c.time_str}".strip()
    if c.extra_top and rng.random() < 0.5:
        ops.append(("lr", dt_line, c.extra_top[0], False))
    else:
        ops.append(("left", dt_line))
        for e in c.extra_top:
            ops.append(("left", e))
    if c.store == "restaurant" and rng.random() < 0.6:
        ops.append(("lr", f"{lab['table']} {rng.randint(1, 40)}", f"{lab['guests']} {rng.randint(1, 6)}", False))
    ops.append(("sep", rng.choice("-=*")))
    return ops


def _ops_items(c: RecCtx, cur_mark: str) -> list[tuple]:
    """Column heads and one or two lines per item (quantity x unit price, kg, litres)."""
    lab, fmt = c.lab, c.fmt
    ops: list[tuple] = []
    if c.style == "cn":
        ops.append(("cols4", *_CN_COLUMNS, True))
    elif cur_mark and c.style != "us":
        ops.append(("lr", "", fmt.sym, False))
    for it in c.items:
        tax_class = f" {it.tax_class}" if c.style == "vat" and c.loc.lang == "de" and it.tax_class else ""
        amt = fmt.num(it.amount) + tax_class
        places = 3 if _exponent(it.unit) < -2 else 2
        if c.style == "cn" and it.amount < 0:
            ops.append(("lr", it.desc, fmt.num(it.amount), False))
            continue
        if c.style == "cn":
            ops.append(("left", it.desc))
            ops.append(("cols4", "", fmt.qty(it.qty), fmt.num(it.unit, places), fmt.num(it.amount), False))
            continue
        if c.qty_style == "inline" and not it.weighed and it.unit == it.amount / it.qty and it.amount > 0:
            ops.append(("lr", f"{fmt.qty(it.qty)} {it.desc}" if it.qty_printed else it.desc, amt, False))
            continue
        ops.append(("lr", it.desc, amt, False))
        if it.weighed:
            if c.store == "fuel":
                ops.append(("left", f"  {fmt.qty(it.qty)} L x {fmt.num(it.unit, places)} /L"))
            else:
                ops.append(("left", "  " + lab["kg"].format(q=fmt.qty(it.qty), p=fmt.num(it.unit, places))))
        elif it.qty_printed and c.qty_style in ("sub", "inline"):
            ops.append(("left", "  " + lab["qty_x"].format(q=fmt.qty(it.qty), p=fmt.num(it.unit))))
    ops.append(("sep", "-"))
    return ops


def _exponent(d: Any) -> int:
    exponent = d.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


def _ops_totals(c: RecCtx) -> list[tuple]:
    """Item count (China), subtotal, tax, tip and the big total."""
    lab, fmt = c.lab, c.fmt
    subtotal = c.subtotal if c.subtotal is not None else c.total
    ops: list[tuple] = []
    if c.style == "cn":
        ops.append(("lr", f"{lab['items']}: {len([i for i in c.items if i.amount > 0])}", "", False))
        if c.subtotal is not None:
            ops.append(("lr", lab["subtotal"], fmt.num(c.subtotal), False))
        ops.append(("lrbig", lab["total"], fmt.money(c.total)))
    elif c.style == "us":
        ops.append(("lr", lab["subtotal"], fmt.num(subtotal), False))
        for r, v in c.tax_lines:
            ops.append(("lr", lab["tax"].format(r=fmt_rate(fmt, r)), fmt.num(v), False))
        if c.tip is not None:
            ops.append(("lr", lab["tip"], fmt.num(c.tip), False))
        ops.append(("lrbig", lab["total"], fmt.money(c.total)))
    else:
        if c.tip is not None:
            ops.append(("lr", lab["subtotal"], fmt.num(subtotal), False))
            ops.append(("lr", lab["tip"], fmt.num(c.tip), False))
        total_label = lab["total"].upper() if c.upper and c.loc.lang != "fr" else lab["total"]
        ops.append(("lrbig", total_label, fmt.money(c.total)))
    return ops


def _ops_footer(c: RecCtx, rng: random.Random) -> list[tuple]:
    """Payment (cash and change, card auth code), VAT included, thanks, QR code or barcode, store number."""
    lab, fmt = c.lab, c.fmt
    ops: list[tuple] = []
    if c.payment is not None:
        ops.append(("blank",))
        if c.payment == "cash" and c.cash_given is not None:
            ops.append(("lr", c.pay_label, fmt.num(c.cash_given), False))
            ops.append(("lr", lab["change"], fmt.num(c.cash_given - c.total), False))
        else:
            ops.append(("lr", c.pay_label, fmt.num(c.total), False))
            if c.payment == "card":
                ops.append(("left", f"{lab['auth']}: {rng.randint(100000, 999999)}"))
    if c.style == "vat" and c.tax_lines:
        ops.append(("sep", "-"))
        for r, v in c.tax_lines:
            cls = ("A " if r == c.loc.rates[0] else "B ") if c.loc.lang == "de" else ""
            rate_s = fmt_rate(fmt, r)
            ops.append(("lr", cls + lab["vat_incl"].format(r=rate_s), fmt.num(v), False))
    ops.append(("blank",))
    ops.append(("center", rng.choice(lab["thanks"])))
    code = rng.random()
    if c.style == "cn" or code < 0.25:
        ops.append(("qr",))
    elif code < 0.65:
        ops.append(("barcode",))
    ops.append(("center", f"{lab['store']} {rng.randint(100, 9999)}  {_digits(rng, 6)}"))
    return ops


def _receipt_ops(c: RecCtx, rng: random.Random) -> list[tuple]:
    """Printable lines: (op, *args).  ops: logo, center, big, lr, lrbig, left, cols4, sep, blank, barcode, qr."""
    ops = _ops_header(c, rng)
    cur_mark = c.fmt.sym if rng.random() < 0.5 else ""
    return ops + _ops_items(c, cur_mark) + _ops_totals(c) + _ops_footer(c, rng)


@dataclass
class _Strip:
    """Draws receipt ops on the paper strip, one op at a time, at a given height."""

    d: ImageDraw.ImageDraw
    fonts: RFonts
    width: int
    m: int  # side margin
    ink: int
    log: list[tuple[float, float, str, Any]] = field(default_factory=list)  # (x, y, text, font) of every text

    def text(self, xy: tuple[float, float], s: str, font: Any, fill: int) -> None:
        self.d.text(xy, s, font=font, fill=fill)
        self.log.append((xy[0], xy[1], s, font))

    @property
    def inner(self) -> int:
        return self.width - 2 * self.m

    def center(self, text: str, font: Any, y: int) -> None:
        self.text(((self.width - font.getlength(text)) / 2, y), text, font, self.ink)

    def op(self, op: tuple, y: int, merchant: str, rng: random.Random) -> None:
        kind, fonts, m, inner, ink = op[0], self.fonts, self.m, self.inner, self.ink
        if kind == "logo":
            self.logo(op[1], merchant, y)
        elif kind == "big":
            self.center(op[1], fonts.big, y)
        elif kind == "center":
            self.center(_fit(fonts.reg, op[1], inner), fonts.reg, y)
        elif kind == "left":
            self.text((m, y), _fit(fonts.reg, op[1], inner), fonts.reg, ink)
        elif kind in ("lr", "lrbig"):
            self.left_right(op, y)
        elif kind == "cols4":
            f = fonts.bold if op[5] else fonts.reg
            xs = [m, m + inner * 0.42, m + inner * 0.70, self.width - m]
            if op[1]:
                self.text((xs[0], y), op[1], f, ink)
            for k, t in enumerate(op[2:5]):
                self.text((xs[k + 1] - f.getlength(t), y), t, f, ink)
        elif kind == "sep":
            cw = fonts.reg.getlength(op[1]) or 8
            self.text((m, y), op[1] * int(inner / cw), fonts.reg, ink)
        elif kind == "barcode":
            self.barcode(y, rng)
        elif kind == "qr":
            self.qr(y, rng)

    def logo(self, kind: str, merchant: str, y: int) -> None:
        d, fonts, width, m, ink = self.d, self.fonts, self.width, self.m, self.ink
        cx = width // 2
        if kind == "circle":
            d.ellipse((cx - 34, y + 4, cx + 34, y + 72), outline=ink, width=5)
            ini = _initials(merchant)[:2]
            f = fonts.big
            self.text((cx - f.getlength(ini) / 2, y + 38 - fonts.size * 0.8), ini, f, ink)
        elif kind == "box":
            d.rectangle((m + 10, y + 8, width - m - 10, y + 70), fill=ink)
            f = fonts.big
            t = _fit(f, merchant, self.inner - 30)
            self.text(((width - f.getlength(t)) / 2, y + 39 - fonts.size * 0.8), t, f, 255)
        else:
            for k in range(5):
                d.rectangle((cx - 50 + k * 22, y + 10 + k * 6, cx - 38 + k * 22, y + 72), fill=ink)

    def left_right(self, op: tuple, y: int) -> None:
        """Text on the left, an amount on the right; the big total falls back to bold when it does not fit."""
        kind, fonts, inner = op[0], self.fonts, self.inner
        f = fonts.big if kind == "lrbig" else (fonts.bold if op[3] else fonts.reg)
        left, right = op[1], op[2]
        rw = f.getlength(right)
        if kind == "lrbig" and rw + f.getlength(left) + 10 > inner:
            f = fonts.bold
            rw = f.getlength(right)
        self.text((self.m, y), _fit(f, left, inner - rw - 6), f, self.ink)
        self.text((self.width - self.m - rw, y), right, f, self.ink)

    def barcode(self, y: int, rng: random.Random) -> None:
        x = self.m + 20
        while x < self.width - self.m - 24:
            bw = rng.choice([2, 2, 3, 4, 6])
            self.d.rectangle((x, y + 8, x + bw - 1, y + 66), fill=self.ink)
            x += bw + rng.choice([2, 3, 4])

    def qr(self, y: int, rng: random.Random) -> None:
        """A QR-looking grid: random cells with the three finder squares."""
        n, cell = 21, 5
        x0 = (self.width - n * cell) // 2
        grid = [[rng.random() < 0.5 for _ in range(n)] for _ in range(n)]
        for gx, gy in ((0, 0), (n - 7, 0), (0, n - 7)):
            for a in range(7):
                for b in range(7):
                    edge = a in (0, 6) or b in (0, 6)
                    core = 2 <= a <= 4 and 2 <= b <= 4
                    grid[gy + b][gx + a] = edge or core
        for b in range(n):
            for a in range(n):
                if grid[b][a]:
                    x, yy = x0 + a * cell, y + 8 + b * cell
                    self.d.rectangle((x, yy, x + cell - 1, yy + cell - 1), fill=self.ink)


def render_thermal(c: RecCtx, ops: list[tuple], fonts: RFonts, width: int, rng: random.Random,
                   log: list[tuple[float, float, str, Any]] | None = None) -> Image.Image:
    """Draw the receipt ops onto a narrow white strip (mode L); ``log``: gets (x, y, text, font) of every text."""
    m = 8 if width <= 400 else 14
    lh = int(fonts.size * (1.45 if fonts.cjk else 1.3))
    big_h = int(fonts.size * 2.1)
    heights = {"logo": 84, "big": big_h, "blank": lh // 2, "barcode": 80, "qr": 130, "lrbig": big_h, "sep": lh}
    total_h = 30 + sum(heights.get(op[0], lh) for op in ops) + 40
    img = Image.new("L", (width, total_h), 255)
    strip = _Strip(ImageDraw.Draw(img), fonts, width, m, rng.randint(0, 60))
    y = 24
    for op in ops:
        strip.op(op, y, c.merchant, rng)
        y += heights.get(op[0], lh)
    if log is not None:
        log.extend(strip.log)
    return img.crop((0, 0, width, min(total_h, y + 36)))


def _thermal_finish(img: Image.Image, rng: random.Random) -> Image.Image:
    """Uneven thermal print density (fading bands, one side lighter) and sometimes a worn print-head streak."""
    a = np.asarray(img, dtype=np.float32)
    h, w = a.shape
    rows = np.interp(np.arange(h), np.linspace(0, h, 6), [rng.uniform(0.65, 1.0) for _ in range(6)]).astype(np.float32)
    cols = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0), w, dtype=np.float32)
    a = 255 - (255 - a) * rows[:, None] * cols[None, :]
    if rng.random() < 0.3:  # worn print-head dot: a light vertical streak
        x = rng.randint(10, w - 10)
        k = rng.randint(1, 2)
        a[:, x:x + k] = np.maximum(a[:, x:x + k], 200)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return out


def _make_receipt(path: Path, variant: str, rng: random.Random) -> tuple[Receipt, int, dict]:
    weights = dict(REC_LOCALE_WEIGHTS)
    if not cjk_receipts_available():
        weights.pop("zh-CN")
    loc = LOCALES[_pick(rng, weights)]
    width = rng.choice([384, 384, 512, 576, 576])
    fonts = _receipt_fonts(rng, width, loc.lang == "zh")
    ctx = _receipt_context(rng, fonts, width, loc)
    model = _receipt_model(ctx)
    ops = _receipt_ops(ctx, rng)
    log: list[tuple[float, float, str, Any]] = []
    img = render_thermal(ctx, ops, fonts, width, rng, log)
    boxes = _truth_boxes(ctx, log, img.size)
    img = _thermal_finish(img, rng)
    if variant == "png-receipt":
        if rng.random() < 0.35:
            img = img.point(lambda v: 0 if v < 150 else 255).convert("1")
        img.save(path, format="PNG", optimize=False, compress_level=6)
    else:
        warps: list[list[float]] = []
        photo = photograph(img, rng, warps)
        photo.save(path, format="JPEG", quality=rng.randint(68, 85))
        boxes = {f: [{"page": 1, "box": warp_box(b["box"], warps[0])} for b in bs] for f, bs in boxes.items()}
    meta = {"locale": loc.code, "store": ctx.store, "width": width, "style": ctx.style, "boxes": boxes}
    return model, 1, meta


def _printed_forms(c: RecCtx) -> dict[str, list[str]]:
    """Field path -> the strings the receipt prints for its value (as ``_receipt_ops`` formats them)."""
    fmt = c.fmt
    forms: dict[str, list[str]] = {"merchant": [c.merchant], "address": list(c.address), "total": [fmt.num(c.total)]}
    if c.date_str:
        forms["date"] = [c.date_str]
    if c.time_str:
        forms["time"] = [c.time_str]
    if c.subtotal is not None:
        forms["subtotal"] = [fmt.num(c.subtotal)]
    if c.tip is not None:
        forms["tip"] = [fmt.num(c.tip)]
    if c.tax is not None and len(c.tax_lines) == 1:
        forms["tax"] = [fmt.num(c.tax)]
    for i, it in enumerate(c.items):
        forms[f"items[{i}].description"] = [it.desc]
        forms[f"items[{i}].amount"] = [fmt.num(it.amount)]
    return forms


def _truth_boxes(c: RecCtx, log: list[tuple[float, float, str, Any]], size: tuple[int, int]) -> dict[str, list[dict]]:
    """Where each value was drawn: every drawn text that prints it (a value printed twice has two boxes; an
    amount also printed for another field shares that box), in fractions of the strip."""
    w, h = size
    out: dict[str, list[dict]] = {}
    for f, forms in _printed_forms(c).items():
        for x, y, text, font in log:
            for form in forms:
                at = text.find(form) if form else -1
                if at < 0 or (form[0].isdigit() and at > 0 and (text[at - 1].isdigit() or text[at - 1] in ".,")):
                    continue
                x0 = x + font.getlength(text[:at])
                _, t, _, b = font.getbbox(text)
                box = [x0 / w, (y + t) / h, (x0 + font.getlength(form)) / w, (y + b) / h]
                out.setdefault(f, []).append({"page": 1, "box": [round(max(0.0, min(1.0, v)), 5) for v in box]})
    return out
