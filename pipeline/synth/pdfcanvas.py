"""A small PyMuPDF drawing surface for invoices: measured text, shapes, word wrap, logos.

The same drawing code measures (``page=None``) and paints, so pagination and output agree.
"""

from __future__ import annotations

import datetime as dt
import functools
import math

import pymupdf

from pipeline.synth.tables import load

#: family -> (regular, bold) PyMuPDF base-14 font names
FAMILIES: dict[str, tuple[str, str]] = {k: (r, b) for k, (r, b) in load("style.json")["pdf_families"].items()}


@functools.cache
def _mfont(name: str) -> pymupdf.Font:
    return pymupdf.Font(name)


_ADV: dict[str, dict[str, float]] = {}


def _text_width(fontname: str, s: str, size: float) -> float:
    """Advance width of ``s`` (no kerning, like TextWriter), with per-character caching:
    ``pymupdf.Font.text_length`` walks the string in Python and dominated the run time."""
    adv = _ADV.setdefault(fontname, {})
    total = 0.0
    for ch in s:
        a = adv.get(ch)
        if a is None:
            a = adv[ch] = _mfont(fontname).text_length(ch, 1.0)
        total += a
    return total * size


class PdfCanvas:
    """Collects shapes and text for one page; text goes on top when committed."""

    def __init__(self, page: pymupdf.Page | None, family: str, cjk: bool):
        self.page = page
        self.shape = page.new_shape() if page is not None else None
        self.cjk = cjk
        self.reg, self.bold = FAMILIES.get(family, ("helv", "hebo"))
        self.texts: list[tuple[float, float, str, float, bool, tuple]] = []
        self.boxes: list[tuple[str, tuple[float, float, float, float]]] = []  # (field path, box in points)

    def tlen(self, s: str, size: float, bold: bool = False) -> float:
        if self.cjk:
            return _text_width("china-s", s, size) * (1.02 if bold else 1.0)
        return _text_width(self.bold if bold else self.reg, s, size)

    def text(self, x: float, y: float, s: str, size: float = 9, bold: bool = False, color: tuple = (0, 0, 0),
             align: str = "l", field: str | None = None, value: str | None = None,
             marks: tuple[tuple[str, str], ...] = ()) -> float:
        """Draw ``s`` with its baseline at ``y``; ``field``: record the box of ``value`` (all of ``s`` when None),
        the truth of where that field's value is printed; ``marks``: more (field, value) pairs in ``s``."""
        w = self.tlen(s, size, bold)
        if align == "r":
            x -= w
        elif align == "c":
            x -= w / 2
        if self.page is not None and s:
            self.texts.append((x, y, s, size, bold, tuple(color)))
            for f, v in ((field, value if value is not None else s), *marks):
                if f:
                    self._box(f, x, y, s, v, size, bold)
        return w

    def _box(self, field: str, x: float, y: float, s: str, value: str, size: float, bold: bool) -> None:
        at = s.find(value)
        if at < 0 or not value:
            return
        font = _mfont("china-s") if self.cjk else _mfont(self.bold if bold else self.reg)
        x0 = x + self.tlen(s[:at], size, bold)
        self.boxes.append((field, (x0, y - font.ascender * size, x0 + self.tlen(value, size, bold),
                                   y - font.descender * size)))

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: tuple | None = None,
             stroke: tuple | None = None, width: float = 0.6) -> None:
        if self.shape is not None:
            self.shape.draw_rect(pymupdf.Rect(x0, y0, x1, y1))
            self.shape.finish(color=stroke, fill=fill, width=width)

    def line(self, x0: float, y0: float, x1: float, y1: float, color: tuple = (0, 0, 0), width: float = 0.6) -> None:
        if self.shape is not None:
            self.shape.draw_line((x0, y0), (x1, y1))
            self.shape.finish(color=color, width=width)

    def poly(self, pts: list[tuple[float, float]], fill: tuple | None, stroke: tuple | None = None) -> None:
        if self.shape is not None:
            self.shape.draw_polyline(pts)
            self.shape.finish(color=stroke, fill=fill, closePath=True, width=0.5)

    def circle(self, cx: float, cy: float, r: float, fill: tuple | None, stroke: tuple | None = None,
               width: float = 1) -> None:
        if self.shape is not None:
            self.shape.draw_circle((cx, cy), r)
            self.shape.finish(color=stroke, fill=fill, width=width)

    def commit(self) -> None:
        if self.page is None or self.shape is None:
            return
        self.shape.commit()
        # One TextWriter per run of same-coloured text, so the content stream (and
        # text extraction order) follows the drawing order.
        runs: list[tuple[tuple, pymupdf.TextWriter]] = []
        for x, y, s, size, bold, color in self.texts:
            key = (color, bold and self.cjk)
            if not runs or runs[-1][0] != key:
                runs.append((key, pymupdf.TextWriter(self.page.rect, color=color)))
            font = _mfont("china-s") if self.cjk else _mfont(self.bold if bold else self.reg)
            runs[-1][1].append((x, y), s, font=font, fontsize=size)
        for (_color, fake_bold), tw in runs:
            # CJK has no bold face here: fill + stroke
            tw.write_text(self.page, render_mode=2 if fake_bold else 0)


def _wrap(cv: PdfCanvas, text: str, width: float, size: float) -> list[str]:
    if cv.tlen(text, size) <= width:
        return [text]
    if cv.cjk:
        out, cur = [], ""
        for ch in text:
            if cur and cv.tlen(cur + ch, size) > width:
                out.append(cur)
                cur = ""
            cur += ch
        return out + ([cur] if cur else [])
    out, cur = [], ""
    for w in text.split(" "):
        cand = f"{cur} {w}" if cur else w
        if cur and cv.tlen(cand, size) > width:
            out.append(cur)
            cur = w
        else:
            cur = cand
    return out + ([cur] if cur else [])


def _draw_logo(cv: PdfCanvas, x: float, y: float, s: float, kind: str, accent: tuple, initials: str) -> None:
    """Logo in the box (x, y, x+s, y+s)."""
    light = tuple(min(1, c + 0.35) for c in accent)
    if kind == "circle":
        cv.circle(x + s / 2, y + s / 2, s / 2, fill=accent)
        cv.text(x + s / 2, y + s * 0.64, initials, s * 0.38, True, (1, 1, 1), "c")
    elif kind == "squares":
        cv.rect(x, y, x + s * 0.62, y + s * 0.62, fill=accent)
        cv.rect(x + s * 0.38, y + s * 0.38, x + s, y + s, fill=light)
    elif kind == "triangle":
        cv.poly([(x, y + s), (x + s / 2, y), (x + s, y + s)], fill=accent)
        cv.poly([(x + s * 0.3, y + s), (x + s / 2, y + s * 0.55), (x + s * 0.7, y + s)], fill=(1, 1, 1))
    elif kind == "hexagon":
        angles = [math.pi / 3 * k + math.pi / 6 for k in range(6)]
        pts = [(x + s / 2 + s / 2 * math.cos(a), y + s / 2 + s / 2 * math.sin(a)) for a in angles]
        cv.poly(pts, fill=accent)
        cv.text(x + s / 2, y + s * 0.63, initials[:1], s * 0.45, True, (1, 1, 1), "c")
    else:  # bars
        for k in range(4):
            h = s * (0.35 + 0.2 * k)
            cv.rect(x + k * s / 4, y + s - h, x + k * s / 4 + s / 5, y + s, fill=accent if k % 2 else light)


def _pdf_bytes(doc: pymupdf.Document, when: dt.date) -> bytes:
    stamp = f"D:{when:%Y%m%d}093000Z"
    doc.set_metadata(
        {"creationDate": stamp, "modDate": stamp, "producer": "docextract-synth", "creator": "docextract-synth"}
    )
    return doc.tobytes(garbage=3, deflate=True, no_new_id=True)
