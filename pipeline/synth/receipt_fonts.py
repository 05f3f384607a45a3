"""Fonts for thermal receipts (Pillow): system mono/sans TrueType faces and a CJK face."""

from __future__ import annotations

import functools
import io
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymupdf
from PIL import ImageFont

from pipeline.synth.tables import load

_STYLE = load("style.json")
#: kind -> candidate file names (lower case), first found wins
_FONT_NAMES: dict[str, list[str]] = _STYLE["pil_fonts"]
_CJK_MARKERS: tuple[str, ...] = tuple(_STYLE["cjk_font_markers"])


@dataclass(frozen=True)
class RFonts:
    reg: Any
    bold: Any
    big: Any
    size: int
    cjk: bool
    mono: bool


@functools.cache
def _font_files() -> dict[str, str | None]:
    """Fonts Pillow can use here: mono/sans TrueType files and a CJK face (None if absent)."""
    found: dict[str, str | None] = {"mono": None, "mono_bold": None, "sans": None, "sans_bold": None, "cjk": None}
    roots = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts"]
    files = []
    for r in roots:
        if r.is_dir():
            files += sorted(str(p) for p in r.rglob("*") if p.suffix.lower() in (".ttf", ".otf", ".ttc"))
    by_name = {Path(f).name.lower(): f for f in files}
    for key, names in _FONT_NAMES.items():
        for n in names:
            if n in by_name:
                found[key] = by_name[n]
                break
    cjk = [f for f in files if any(k in Path(f).name.lower() for k in _CJK_MARKERS)]
    if not cjk and shutil.which("fc-list"):
        try:
            out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
            cjk = sorted(line.split(":")[0].strip() for line in out.splitlines() if line.strip())
        except (OSError, subprocess.SubprocessError):
            cjk = []
    found["cjk"] = cjk[0] if cjk else None
    return found


@functools.cache
def _cjk_font_bytes() -> bytes | None:
    """A CJK TrueType face: a system one, else the Droid Sans Fallback that ships inside PyMuPDF."""
    path = _font_files()["cjk"]
    if path:
        return Path(path).read_bytes()
    try:
        return bytes(pymupdf.Font("china-s").buffer)
    except Exception:  # pragma: no cover - PyMuPDF built without CJK fonts
        return None


def cjk_receipts_available() -> bool:
    return _cjk_font_bytes() is not None


@functools.lru_cache(maxsize=64)
def _pil_font(kind: str, size: int) -> Any:
    if kind == "cjk":
        b = _cjk_font_bytes()
        if b is None:  # callers check cjk_receipts_available() first
            raise RuntimeError("no CJK font for receipts")
        return ImageFont.truetype(io.BytesIO(b), size)
    path = _font_files().get(kind) or _font_files().get(kind.replace("_bold", ""))
    if path:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _receipt_fonts(rng: random.Random, width: int, cjk: bool) -> RFonts:
    if cjk:
        size = 20 if width <= 400 else rng.choice([22, 24])
        cjk_font = _pil_font("cjk", size)
        return RFonts(cjk_font, cjk_font, _pil_font("cjk", int(size * 1.45)), size, True, False)
    mono = rng.random() < 0.8 or _font_files()["sans"] is None
    size = rng.choice([17, 18, 19]) if width <= 400 else rng.choice([19, 20, 22, 24])
    if mono:
        return RFonts(_pil_font("mono", size), _pil_font("mono_bold", size), _pil_font("mono_bold", int(size * 1.5)),
                      size, False, True)
    return RFonts(_pil_font("sans", size), _pil_font("sans_bold", size), _pil_font("sans_bold", int(size * 1.5)),
                  size, False, False)


def _fit(font: Any, text: str, width: float) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text) > width:
        text = text[:-1]
    return text.rstrip(" ,.-(")
