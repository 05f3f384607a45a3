"""Invoices drawn as PDFs (three layouts, 1-3 pages), written as a digital PDF or as scans of it."""

from __future__ import annotations

import random
import re
from decimal import Decimal
from pathlib import Path

import pymupdf

from pipeline.synth.degrade import Skew, skew_box, write_scans
from pipeline.synth.formats import EU_VAT_ID_LABELS, _tld, fmt_date, fmt_rate
from pipeline.synth.invoice_data import (
    InvCtx,
    Line,
    _add_discount_line,
    _finish_totals,
    _gen_lines,
    _invoice_context,
    _invoice_model,
)
from pipeline.synth.invoice_style import InvStyle, _invoice_style
from pipeline.synth.parties import _initials
from pipeline.synth.pdfcanvas import PdfCanvas, _draw_logo, _pdf_bytes, _wrap
from schemas import Invoice


class InvoiceDrawer:
    """Draws an InvCtx with a given style; the same code measures (page=None) and paints."""

    def __init__(self, ctx: InvCtx, st: InvStyle):
        self.c, self.st = ctx, st
        s = st.size
        self.lh = s * 1.3
        self.pad = s * 0.45
        self.meta_fields: dict[int, str] = {}
        self.truth_boxes: dict[str, list[dict]] = {}  # field path -> [{"page": 1-based, "box": [x0, y0, x1, y1]}]
        self._cols()

    # --- geometry -------------------------------------------------------------------
    def _cols(self) -> None:
        st, lab, s = self.st, self.c.lab, self.st.size / 9
        cols: list[tuple[str, str, float, str]] = []
        if st.pos_col:
            cols.append(("pos", lab["pos"], 26 * s, "c"))
        cols.append(("desc", lab["desc"], 0, "l"))
        cols.append(("qty", lab["qty"], 44 * s, "r"))
        if st.unit_col:
            cols.append(("unit", lab["unit"], 44 * s, "l"))
        cols.append(("price", lab["price"], (84 if self.c.loc.lang == "fr" else 72) * s, "r"))
        if any(ln.disc for ln in self.c.lines):
            cols.append(("disc", lab["disc"], 44 * s, "r"))
        if len({ln.rate for ln in self.c.lines}) > 1:
            cols.append(("rate", lab["rate"], 40 * s, "r"))
        cols.append(("amount", lab["amount"], 82 * s, "r"))
        x0, x1 = st.margin, st.pw - st.margin
        fixed = sum(c[2] for c in cols)
        self.cols = []
        x = x0
        for key, head, w, al in cols:
            if key == "desc":
                w = (x1 - x0) - fixed
            self.cols.append((key, head, x, w, al))
            x += w
        self.desc_w = next(c[3] for c in self.cols if c[0] == "desc") - 2 * self.pad

    def row_lines(self, cv: PdfCanvas, ln: Line) -> list[str]:
        return _wrap(cv, ln.desc, self.desc_w, self.st.size)

    def row_h(self, cv: PdfCanvas, ln: Line) -> float:
        return len(self.row_lines(cv, ln)) * self.lh + 2 * self.pad - (self.lh - self.st.size) + 2

    def footer_top(self) -> float:
        return self.st.ph - self.st.margin - 3.2 * self.st.size * 1.35

    # --- pagination -------------------------------------------------------------------
    def paginate(self) -> list[list[int]]:
        cv = PdfCanvas(None, self.st.family, self.st.cjk)
        first_y = self.header_first(cv)
        cont_y = self.header_cont(cv, 2)
        th = self.table_header(cv, 0)
        tot_h = self.totals(cv, 0)
        cont_h = self.lh * 2.2
        bottom = self.footer_top()
        heights = [self.row_h(cv, ln) for ln in self.c.lines]
        pages: list[list[int]] = []
        i, n, y0 = 0, len(heights), first_y
        while True:
            y = y0 + th + (self.lh * 1.2 if pages and self.st.carry else 0)
            cur: list[int] = []
            while i < n and (y + heights[i] <= bottom - cont_h or (not cur and y + heights[i] <= bottom)):
                cur.append(i)
                y += heights[i]
                i += 1
            if i == n and y + tot_h > bottom:
                if len(cur) > 1:  # leave the last line for the next page, with the totals
                    cur.pop()
                    i -= 1
                elif not cur:
                    raise RuntimeError("invoice line too tall for a page")
            if not cur:
                raise RuntimeError("cannot place invoice line")
            pages.append(cur)
            if i == n and y + tot_h <= bottom:
                break
            if i == n:  # everything placed but totals do not fit (single tall row) -> shouldn't happen
                break
            y0 = cont_y
        return pages

    # --- pieces ---------------------------------------------------------------------
    def _party_block(self, cv: PdfCanvas, x: float, y: float, title: str | None, party: tuple, bold_name: bool = True,
                     size: float | None = None, tax_label: bool = True) -> float:
        who = "vendor" if party[0] == self.c.vendor[0] else "customer"
        s = size or self.st.size
        lh = s * 1.3
        if title:
            cv.text(x, y, title, s * 0.9, True, self.st.accent)
            y += lh * 1.1
        cv.text(x, y, party[0], s * 1.05, bold_name, field=f"{who}.name")
        y += lh
        for a in party[1]:
            cv.text(x, y, a, s, field=f"{who}.address")
            y += lh
        if party[2] and tax_label:
            lbl = self.c.loc.taxid_label
            if party[2].startswith(("DE", "GB", "FR")):
                lbl = EU_VAT_ID_LABELS.get(self.c.loc.lang, lbl)
            elif party[2].startswith("CHE"):
                lbl = "UID"
            cv.text(x, y, f"{lbl}: {party[2]}", s * 0.92, field=f"{who}.tax_id", value=party[2])
            y += lh
        return y

    def _meta_rows(self) -> list[tuple[str, str]]:
        c, lab = self.c, self.c.lab
        rows = [(lab["number"], c.number), (lab["date"], fmt_date(c.issue, c.date_style, c.loc.lang))]
        if c.due is not None:
            rows.append((lab["due"], fmt_date(c.due, c.date_style, c.loc.lang)))
        self.meta_fields = {0: "invoice_number", 1: "issue_date", 2: "due_date" if c.due is not None else ""}
        if c.customer_no:
            rows.append((lab["customer_no"], c.customer_no))
        if c.order_ref:
            rows.append((lab["order"], c.order_ref))
        return rows

    def header_first(self, cv: PdfCanvas) -> float:
        """Draws the first page's header (vendor, customer, invoice data); returns where the table starts."""
        if self.st.layout == "classic":
            return self._header_classic(cv)
        if self.st.layout == "band":
            return self._header_band(cv)
        return self._header_letter(cv)

    def _header_classic(self, cv: PdfCanvas) -> float:
        st, c, lab, s = self.st, self.c, self.c.lab, self.st.size
        m, pw = st.margin, st.pw
        lh = s * 1.3
        _draw_logo(cv, m, m, 34, st.logo, st.accent, _initials(c.vendor[0]))
        cv.text(m + 44, m + 14, c.vendor[0], s * 1.45, True, st.accent, field="vendor.name")
        cv.text(pw - m, m + 20, lab["title"], s * 2.6, True, st.accent, "r")
        vendor = (c.vendor[0], c.vendor[1], c.vendor[2])
        y = self._party_block(cv, m, m + 52, None, vendor, bold_name=False, size=s * 0.95)
        mailbox = "info" if c.loc.lang != "zh" else "service"
        cv.text(m, y, f"{lab['phone']} {c.vendor_phone} · {mailbox}@{c.vendor_slug}.{_tld(c.loc)}", s * 0.9)
        y += lh * 1.6
        yb = self._party_block(cv, m, y, lab["bill_to"], c.customer)
        # meta box on the right
        rows = self._meta_rows()
        bx0, bx1 = pw - m - 210 * s / 9, pw - m
        by0 = m + 52
        cv.rect(bx0, by0 - s * 1.2, bx1, by0 - s * 1.2 + len(rows) * lh + s * 0.9, stroke=(0.5, 0.5, 0.5), width=0.6)
        for k, (a, b) in enumerate(rows):
            cv.text(bx0 + 6, by0 + k * lh, a, s * 0.95, True)
            cv.text(bx1 - 6, by0 + k * lh, b, s * 0.95, False, (0, 0, 0), "r", field=self.meta_fields.get(k) or None)
        return max(yb, by0 + len(rows) * lh) + lh * 1.2

    def _header_band(self, cv: PdfCanvas) -> float:
        st, c, lab, s = self.st, self.c, self.c.lab, self.st.size
        m, pw = st.margin, st.pw
        lh = s * 1.3
        band_h = 64
        cv.rect(0, 0, pw, band_h, fill=st.accent)
        cv.text(m, 42, lab["title"], s * 2.8, True, (1, 1, 1))
        _draw_logo(cv, pw - m - 34, 15, 34, st.logo, tuple(min(1, x + 0.45) for x in st.accent), _initials(c.vendor[0]))
        cv.text(pw - m - 42, 30, c.vendor[0], s * 1.2, True, (1, 1, 1), "r", field="vendor.name")
        cv.text(pw - m - 42, 30 + lh, f"{c.vendor_phone}", s * 0.9, False, (1, 1, 1), "r")
        y: float = band_h + 28
        colw = (pw - 2 * m) / 2
        y1 = self._party_block(cv, m, y, lab["seller"], c.vendor)
        y2 = self._party_block(cv, m + colw, y, lab["bill_to"], c.customer)
        y = max(y1, y2) + lh * 0.6
        rows = self._meta_rows()
        bw = (pw - 2 * m) / len(rows)
        for k, (a, b) in enumerate(rows):
            x = m + k * bw
            cv.rect(x + 1, y, x + bw - 3, y + 2.6 * lh, fill=(0.95, 0.95, 0.95))
            cv.text(x + 7, y + lh, a, s * 0.85, False, (0.35, 0.35, 0.35))
            cv.text(x + 7, y + 2.1 * lh, b, s * 1.05, True, field=self.meta_fields.get(k) or None)
        return y + 2.6 * lh + lh * 1.4

    def _header_letter(self, cv: PdfCanvas) -> float:
        """DIN 5008-like: sender top right, return address line, recipient window, subject line."""
        st, c, lab, s = self.st, self.c, self.c.lab, self.st.size
        m, pw = st.margin, st.pw
        lh = s * 1.3
        _draw_logo(cv, pw - m - 40, m - 6, 40, st.logo, st.accent, _initials(c.vendor[0]))
        cv.text(pw - m - 48, m + 10, c.vendor[0], s * 1.35, True, st.accent, "r", field="vendor.name")
        yv = m + 10 + lh
        for a in c.vendor[1]:
            cv.text(pw - m - 48, yv, a, s * 0.9, False, (0.3, 0.3, 0.3), "r", field="vendor.address")
            yv += lh * 0.9
        yw = 128
        ret = " · ".join([c.vendor[0]] + c.vendor[1][:2])
        cv.text(m, yw, ret, s * 0.7, False, (0.35, 0.35, 0.35),
                marks=(("vendor.name", c.vendor[0]), *(("vendor.address", a) for a in c.vendor[1][:2])))
        cv.line(m, yw + 2.5, m + cv.tlen(ret, s * 0.7), yw + 2.5, (0.5, 0.5, 0.5), 0.4)
        yc = self._party_block(cv, m, yw + lh * 1.5, None, c.customer, bold_name=False)
        lx = pw - m - 200 * s / 9
        ym: float = yw
        for k, (a, b) in enumerate(self._meta_rows()):
            cv.text(lx, ym, a + ":", s * 0.92)
            cv.text(pw - m, ym, b, s * 0.92, False, (0, 0, 0), "r", field=self.meta_fields.get(k) or None)
            ym += lh
        y = max(yc, ym) + lh * 1.6
        title = f"{lab['title'].capitalize() if c.loc.lang != 'zh' else lab['title']} {c.number}"
        cv.text(m, y, title, s * 1.6, True, field="invoice_number", value=c.number)
        y += lh * 1.2
        if lab["dear"]:
            y += lh * 0.4
            cv.text(m, y, lab["dear"], s)
            y += lh * 0.6
        return y + lh * 0.6

    def header_cont(self, cv: PdfCanvas, page_no: int) -> float:
        st, c, s = self.st, self.c, self.st.size
        m, pw = st.margin, st.pw
        if st.layout == "band":
            cv.rect(0, 0, pw, 30, fill=st.accent)
            cv.text(m, 20, f"{c.lab['title']} {c.number}", s * 1.2, True, (1, 1, 1), field="invoice_number", value=c.number)
            cv.text(pw - m, 20, c.vendor[0], s, False, (1, 1, 1), "r", field="vendor.name")
            return 56
        _draw_logo(cv, m, m - 8, 22, st.logo, st.accent, _initials(c.vendor[0]))
        cv.text(m + 30, m + 7, c.vendor[0], s * 1.1, True, st.accent, field="vendor.name")
        issued = fmt_date(c.issue, c.date_style, c.loc.lang)
        cv.text(pw - m, m + 7, f"{c.lab['number']} {c.number} · {issued}", s * 0.95, False, (0, 0, 0), "r",
                marks=(("invoice_number", c.number), ("issue_date", issued)))
        cv.line(m, m + 16, pw - m, m + 16, (0.6, 0.6, 0.6), 0.5)
        return m + 36

    def table_header(self, cv: PdfCanvas, y: float) -> float:
        st, s = self.st, self.st.size
        h = self.lh + 2 * self.pad
        x0, x1 = st.margin, st.pw - st.margin
        if st.layout == "classic":
            cv.rect(x0, y, x1, y + h, fill=(0.88, 0.88, 0.88), stroke=(0.3, 0.3, 0.3), width=0.6)
            color = (0, 0, 0)
        elif st.layout == "band":
            cv.rect(x0, y, x1, y + h, fill=st.accent)
            color = (1, 1, 1)
        else:
            cv.line(x0, y + h, x1, y + h, (0, 0, 0), 1.0)
            color = (0, 0, 0)
        for _key, head, x, w, al in self.cols:
            tx = x + self.pad if al == "l" else (x + w - self.pad if al == "r" else x + w / 2)
            cv.text(tx, y + self.pad + s, head, s * 0.92, True, color, al)
        if st.layout == "classic":
            for col in self.cols[1:]:
                cv.line(col[2], y, col[2], y + h, (0.3, 0.3, 0.3), 0.6)
        return h

    def row(self, cv: PdfCanvas, y: float, idx: int, k: int) -> float:
        st, s, fmt, ln = self.st, self.st.size, self.c.fmt, self.c.lines[idx]
        lines = self.row_lines(cv, ln)
        h = self.row_h(cv, ln)
        x0, x1 = st.margin, st.pw - st.margin
        if st.layout == "band" and k % 2 == 1:
            cv.rect(x0, y, x1, y + h, fill=(0.94, 0.95, 0.97))
        vals = {
            "pos": str(idx + 1) if not ln.is_discount else "",
            "qty": fmt.qty(ln.qty),
            "unit": ln.unit,
            "price": fmt.num(ln.price),
            "disc": f"{ln.disc} %" if ln.disc else "",
            "rate": f"{fmt_rate(fmt, ln.rate)} %",
            "amount": fmt.num(ln.amount),
        }
        base = y + self.pad + s
        fields = {"desc": "description", "qty": "quantity", "price": "unit_price", "amount": "amount"}
        for key, _head, x, w, al in self.cols:
            f = f"line_items[{idx}].{fields[key]}" if key in fields else None
            if key == "desc":
                for j, t in enumerate(lines):
                    cv.text(x + self.pad, base + j * self.lh, t, s, False, field=f)
                continue
            tx = x + self.pad if al == "l" else (x + w - self.pad if al == "r" else x + w / 2)
            cv.text(tx, base, vals[key], s, False, (0, 0, 0), al, field=f)
        if st.layout == "classic":
            cv.line(x0, y, x0, y + h, (0.3, 0.3, 0.3), 0.6)
            cv.line(x1, y, x1, y + h, (0.3, 0.3, 0.3), 0.6)
            for col in self.cols[1:]:
                cv.line(col[2], y, col[2], y + h, (0.3, 0.3, 0.3), 0.6)
            cv.line(x0, y + h, x1, y + h, (0.3, 0.3, 0.3), 0.6)
        elif st.layout == "letter":
            cv.line(x0, y + h, x1, y + h, (0.75, 0.75, 0.75), 0.4)
        return h

    def totals(self, cv: PdfCanvas, y: float) -> float:
        st, c, lab, fmt, s = self.st, self.c, self.c.lab, self.c.fmt, self.st.size
        lh = s * 1.45
        x1 = st.pw - st.margin
        xl = x1 - 230 * s / 9
        y0 = y + lh * 0.9
        rows: list[tuple[str, str, bool]] = [(lab["subtotal"], fmt.money(c.subtotal), False)]
        fields = ["subtotal"]
        for rate, base, tax in c.tax_rows:
            rate_s = fmt_rate(fmt, rate)
            if c.loc.code == "en-US" and rate == "0":
                continue
            template = lab["tax_on"] if len(c.tax_rows) > 1 else lab["tax"]
            label = template.format(name=c.loc.tax_name, rate=rate_s, base=fmt.num(base))
            rows.append((label, fmt.money(tax), False))
            fields.append("tax" if tax == c.tax else "")  # one of several rates: not the field's value
        total_label = lab["total_due"] if st.show_paid or st.layout == "letter" else lab["total"]
        rows.append((total_label, fmt.money(c.total), True))
        fields.append("total")
        if st.show_paid:
            rows.append((lab["paid"], fmt.money(Decimal(0)), False))
            rows.append((lab["balance"], fmt.money(c.total), True))
            fields += ["", "total"]
        h = len(rows) * lh + lh * 0.6
        if st.layout == "band":
            cv.rect(xl - 10, y0 - lh * 0.2, x1, y0 + h - lh * 0.3, fill=(0.93, 0.94, 0.96))
        elif st.layout == "classic":
            cv.rect(xl - 10, y0 - lh * 0.2, x1, y0 + h - lh * 0.3, stroke=(0.3, 0.3, 0.3), width=0.8)
        yy = y0 + lh * 0.7
        for k, (a, b, bold) in enumerate(rows):
            sz = s * (1.12 if bold else 1.0)
            if bold and st.layout == "letter":
                cv.line(xl, yy - lh * 0.8, x1, yy - lh * 0.8, (0, 0, 0), 0.7)
            cv.text(xl, yy, a, sz, bold)
            cv.text(x1 - 4, yy, b, sz, bold, (0, 0, 0), "r", field=fields[k] or None, value=_amount_part(b))
            if bold and st.layout == "letter" and k == len(rows) - 1:
                cv.line(xl, yy + 4, x1, yy + 4, (0, 0, 0), 0.7)
                cv.line(xl, yy + 6, x1, yy + 6, (0, 0, 0), 0.7)
            yy += lh
        yy += lh * 0.4
        notes = []
        if c.reverse_charge and lab["reverse"]:
            notes.append(lab["reverse"])
        if c.terms:
            notes.append(lab["terms"].format(d=c.terms))
        notes.append(lab["thanks"])
        for t in notes:
            cv.text(st.margin, yy, t, s * 0.95, False, (0.2, 0.2, 0.2))
            yy += lh * 0.9
        return yy - y

    def footer(self, cv: PdfCanvas, page_no: int, n_pages: int) -> None:
        st, c, s = self.st, self.c, self.st.size
        m, pw = st.margin, st.pw
        top = self.footer_top()
        fs = s * 0.78
        lh = fs * 1.35
        cv.line(m, top + 4, pw - m, top + 4, (0.6, 0.6, 0.6), 0.4)
        y = top + 4 + lh
        left = [c.vendor[0]] + c.vendor[1][:2]
        mid = [f"{c.lab['bank']}:"] + c.bank.split(" · ")
        right = [f"{c.loc.taxid_label}: {c.vendor[2]}", f"www.{c.vendor_slug}.{_tld(c.loc)}"]
        if st.layout == "letter":
            cols = [left, mid, right]
            w = (pw - 2 * m) / 3
            for k, col in enumerate(cols):
                for j, t in enumerate(col):
                    cv.text(m + k * w, y + j * lh, t, fs, False, (0.3, 0.3, 0.3), marks=self._footer_marks(t))
        else:
            cv.text(pw / 2, y, " · ".join(left), fs, False, (0.3, 0.3, 0.3), "c", marks=self._footer_marks(" · ".join(left)))
            cv.text(pw / 2, y + lh, f"{c.lab['bank']}: {c.bank}", fs, False, (0.3, 0.3, 0.3), "c")
        if st.page_numbers or n_pages > 1:
            cv.text(pw - m, y + 2 * lh, c.lab["page"].format(i=page_no, n=n_pages), fs, False, (0, 0, 0), "r")

    def _footer_marks(self, t: str) -> tuple[tuple[str, str], ...]:
        """The vendor's name, address lines and tax id where a footer line repeats them."""
        v = self.c.vendor
        pairs = [("vendor.name", v[0]), *(("vendor.address", a) for a in v[1][:2])]
        if v[2]:
            pairs.append(("vendor.tax_id", v[2]))
        return tuple((f, x) for f, x in pairs if x and x in t)

    # --- whole document -------------------------------------------------------------
    def draw(self, pages: list[list[int]]) -> pymupdf.Document:
        st, c, s = self.st, self.c, self.st.size
        doc = pymupdf.open()
        carried = Decimal(0)
        n = len(pages)
        for p, rows in enumerate(pages):
            page = doc.new_page(width=st.pw, height=st.ph)
            cv = PdfCanvas(page, st.family, st.cjk)
            y = self.header_first(cv) if p == 0 else self.header_cont(cv, p + 1)
            y += self.table_header(cv, y)
            x1 = st.pw - st.margin
            if p > 0 and st.carry:
                cv.text(st.margin + self.pad, y + self.lh * 0.9, c.lab["brought"], s, True)
                cv.text(x1 - self.pad, y + self.lh * 0.9, c.fmt.num(carried), s, True, (0, 0, 0), "r")
                y += self.lh * 1.2
            for k, idx in enumerate(rows):
                y += self.row(cv, y, idx, k)
                carried += c.lines[idx].amount
            if p < n - 1:
                if st.carry:
                    cv.text(st.margin + self.pad, y + self.lh * 1.0, c.lab["carried"], s, True)
                    cv.text(x1 - self.pad, y + self.lh * 1.0, c.fmt.num(carried), s, True, (0, 0, 0), "r")
                else:
                    cv.text(x1, y + self.lh * 1.2, c.lab["cont"].format(n=p + 2), s * 0.9, False, (0.3, 0.3, 0.3), "r")
            else:
                self.totals(cv, y)
            self.footer(cv, p + 1, n)
            cv.commit()
            for f, (x0, y0, x1, y1) in cv.boxes:
                box = [round(max(0.0, min(1.0, v)), 5) for v in (x0 / st.pw, y0 / st.ph, x1 / st.pw, y1 / st.ph)]
                self.truth_boxes.setdefault(f, []).append({"page": p + 1, "box": box})
        return doc


def _amount_part(money: str) -> str:
    """The number in a money string (``$1,234.50`` -> ``1,234.50``): the value's box leaves the sign out."""
    m = re.search(r"-?\d[\d.,' \u00a0\u202f]*\d|\d", money)
    return m.group(0) if m else money


def _make_invoice(path: Path, variant: str, rng: random.Random) -> tuple[Invoice, int, dict]:
    ctx = _invoice_context(rng)
    style = _invoice_style(rng, ctx)
    max_pages = 1 if variant == "jpeg-scan" else 3
    target = 1 if max_pages == 1 else rng.choices([1, 2, 3], weights=[60, 26, 14])[0]
    n = {1: rng.randint(1, 12), 2: rng.randint(22, 40), 3: rng.randint(45, 75)}[target]
    lines = _gen_lines(rng, ctx, n)
    discount = rng.random() < 0.15
    while True:
        ctx.lines = list(lines)
        if discount:
            _add_discount_line(rng, ctx, ctx.lines)
        drawer = InvoiceDrawer(ctx, style)
        pages = drawer.paginate()
        if len(pages) <= max_pages or len(lines) <= 1:
            break
        # too many pages for this variant: drop lines until it fits
        over = sum(len(p) for p in pages[max_pages:])
        lines = lines[: max(1, len(lines) - max(1, over))]
    _finish_totals(ctx)
    model = _invoice_model(ctx)
    doc = drawer.draw(pages)
    skews = _write_invoice(doc, path, variant, rng, ctx)
    boxes = drawer.truth_boxes
    if skews:  # a scan: the clean page's boxes, rotated and shifted as the page was
        boxes = {f: [{"page": b["page"], "box": skew_box(b["box"], skews[b["page"] - 1])} for b in bs]
                 for f, bs in boxes.items()}
    meta = {"locale": ctx.loc.code, "layout": style.layout, "font": style.family,
            "items_per_page": [len(p) for p in pages], "boxes": boxes}
    return model, len(pages), meta


def _write_invoice(doc: pymupdf.Document, path: Path, variant: str, rng: random.Random, ctx: InvCtx) -> list[Skew]:
    """Writes the document; for a scan, returns each page's skew."""
    try:
        if variant == "pdf-digital":
            doc.subset_fonts()
            path.write_bytes(_pdf_bytes(doc, ctx.issue))
            return []
        return write_scans(doc, path, variant, rng, ctx.issue)
    finally:
        doc.close()
