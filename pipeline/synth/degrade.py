"""Paper and camera damage: scanner skew, blur, toner/paper tone, uneven light, noise, JPEG; phone photos."""

from __future__ import annotations

import datetime as dt
import functools
import io
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from pipeline.synth.pdfcanvas import _pdf_bytes

Skew = tuple[float, int, int, int, int]  # angle (degrees, counter-clockwise), dx, dy, image width, height


def write_scans(doc: pymupdf.Document, path: Path, variant: str, rng: random.Random, when: dt.date) -> list[Skew]:
    """``doc``'s pages rendered, degraded like a scan and saved as ``variant`` (jpeg-scan, tiff-scan, pdf-scan).
    Returns each page's skew, to move the clean page's boxes where the scan shows them (``skew_box``)."""
    dpi = rng.choice([100, 110, 120, 130, 150])
    gray = rng.random() < 0.75
    quality = rng.randint(40, 72)
    frames = []
    skews: list[Skew] = []
    for page in doc.pages():
        pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY if gray else pymupdf.csRGB, alpha=False)
        img = Image.frombytes("L" if gray else "RGB", (pix.width, pix.height), pix.samples)
        del pix
        frames.append(scan_degrade(img, rng, skews))
    if variant == "jpeg-scan":
        frames[0].save(path, format="JPEG", quality=quality, dpi=(dpi, dpi), optimize=False)
    elif variant == "tiff-scan":
        frames[0].save(path, format="TIFF", save_all=True, append_images=frames[1:], compression="jpeg",
                       quality=quality, dpi=(dpi, dpi))
    else:  # pdf-scan
        out = pymupdf.open()
        for fr, page in zip(frames, doc.pages(), strict=True):
            buf = io.BytesIO()
            fr.save(buf, format="JPEG", quality=quality, dpi=(dpi, dpi))
            pg = out.new_page(width=page.rect.width, height=page.rect.height)
            pg.insert_image(pg.rect, stream=buf.getvalue())
        path.write_bytes(_pdf_bytes(out, when))
        out.close()
    return skews


def skew_box(box: list[float], skew: Skew) -> list[float]:
    """A box (fractions of the clean page) moved as ``scan_degrade`` rotated and shifted the page: the
    bounding box of its four corners after PIL's ``rotate(angle, translate=(dx, dy))`` about the centre."""
    angle, dx, dy, w, h = skew
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    xs, ys = [], []
    for fx, fy in ((box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])):
        x, y = fx * w - w / 2, fy * h - h / 2
        xs.append((c * x + s * y + w / 2 + dx) / w)
        ys.append((-s * x + c * y + h / 2 + dy) / h)
    return [round(max(0.0, min(1.0, v)), 5) for v in (min(xs), min(ys), max(xs), max(ys))]


@functools.lru_cache(maxsize=8)
def _noise_tile(sigma: int) -> Image.Image:
    """A fixed 1024x1024 tile of Gaussian noise centred on 128 (deterministic, cached per process)."""
    a = np.random.default_rng(9000 + sigma).standard_normal((1024, 1024), dtype=np.float32) * sigma + 128
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _add_noise(img: Image.Image, sigma: float, rng: random.Random) -> Image.Image:
    """img + N(0, sigma) (same noise on every channel), built from a cached tile at a random offset."""
    tile = _noise_tile(max(1, int(round(sigma))))
    w, h = img.size
    noise = Image.new("L", (w, h))
    ox, oy = rng.randrange(1024), rng.randrange(1024)
    for y in range(-oy, h, 1024):
        for x in range(-ox, w, 1024):
            noise.paste(tile, (x, y))
    if img.mode == "RGB":
        noise = Image.merge("RGB", (noise, noise, noise))
    return ImageChops.add(img, noise, 1.0, -128)


def _lut(img: Image.Image, fns: list[Callable[[int], float]]) -> Image.Image:
    """Apply a per-channel tone curve (one function per band) through a lookup table."""
    bands = len(img.getbands())
    table: list[int] = []
    for k in range(bands):
        f = fns[min(k, len(fns) - 1)]
        table += [max(0, min(255, int(round(f(v))))) for v in range(256)]
    return img.point(table)


def _toner_curve(black: float, paper: float, tint: float) -> Callable[[int], float]:
    """0 -> ``black``, 255 -> ``paper``, times a per-channel ``tint``."""
    return lambda v: (black + v * (paper - black) / 255.0) * tint


def _contrast_curve(k: float, lift: float, cast: float) -> Callable[[int], float]:
    """Contrast ``k`` around a ``lift``, times a per-channel colour ``cast``."""
    return lambda v: (v * k + lift) * cast


def scan_degrade(img: Image.Image, rng: random.Random, skews: list[Skew] | None = None) -> Image.Image:
    """Paper skew (±2°), optics blur, toner/paper tone, uneven illumination, sensor noise, scanner edge.
    ``skews``: the page's skew is appended to it."""
    w, h = img.size
    bg = 255 if img.mode == "L" else (255, 255, 255)
    angle = rng.uniform(-2.0, 2.0)
    dx, dy = rng.randint(-8, 8), rng.randint(-8, 8)
    if skews is not None:
        skews.append((angle, dx, dy, w, h))
    img = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=bg, translate=(dx, dy))
    img = img.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 0.75)))
    black = rng.uniform(12, 50)  # toner never quite black, paper never quite white
    paper = rng.uniform(230, 252)
    tint = [1.0, rng.uniform(0.975, 1.0), rng.uniform(0.93, 0.99)]
    img = _lut(img, [_toner_curve(black, paper, t) for t in tint])
    # illumination falloff across the page
    r0, r1 = rng.randint(232, 255), rng.randint(232, 255)
    ramp = Image.fromarray(np.linspace(r0, r1, w).astype(np.uint8)[None, :]).resize((w, h), Image.Resampling.NEAREST)
    if img.mode == "RGB":
        ramp = ramp.convert("RGB")
    img = ImageChops.multiply(img, ramp)
    img = _add_noise(img, rng.uniform(2.0, 6.0), rng)
    d = ImageDraw.Draw(img)
    dark = (40, 40, 40) if img.mode == "RGB" else 40
    if rng.random() < 0.3:  # dark scanner-lid edge
        e = rng.randint(3, 12)
        box = rng.choice([(0, 0, e, h), (w - e, 0, w, h), (0, 0, w, e), (0, h - e, w, h)])
        d.rectangle(box, fill=dark)
    if rng.random() < 0.3:  # dust speckles
        for _ in range(int(w * h * rng.uniform(1e-5, 4e-5))):
            x, y = rng.randrange(w), rng.randrange(h)
            d.rectangle((x, y, x + rng.randint(0, 2), y + rng.randint(0, 1)), fill=dark)
    return img


def _persp_coeffs(dst: list[tuple[float, float]], src: list[tuple[float, float]]) -> list[float]:
    """Coefficients for Image.transform(PERSPECTIVE): maps output (dst) points to input (src) points."""
    A, B = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        B += [u, v]
    return np.linalg.solve(np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)).tolist()


Warp = list[float]  # perspective coefficients: receipt pixel -> fraction of the photo (see ``warp_box``)


def warp_box(box: list[float], warp: Warp) -> list[float]:
    """A box (fractions of the receipt strip) where the photo shows it: the bounding box of its warped corners."""
    a, b, c, d, e, f, g, h, rw, rh, w, hh = warp
    xs, ys = [], []
    for fx, fy in ((box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])):
        x, y = fx * rw, fy * rh
        den = g * x + h * y + 1
        xs.append((a * x + b * y + c) / den / w)
        ys.append((d * x + e * y + f) / den / hh)
    return [round(max(0.0, min(1.0, v)), 5) for v in (min(xs), min(ys), max(xs), max(ys))]


def photograph(rec: Image.Image, rng: random.Random, warps: list[Warp] | None = None) -> Image.Image:
    """A phone photo of the receipt on a table: perspective, shadow, uneven light, low contrast, softness, noise.
    ``warps``: the receipt-to-photo perspective is appended to it (``warp_box``)."""
    rw, rh = rec.size
    H = rng.randint(1100, 1400)
    W = int(H * rng.uniform(0.62, 0.78))
    f = rng.uniform(0.68, 0.85)  # optics: compose small, upscale at the end (soft focus)
    w, h = int(W * f), int(H * f)
    s = min(0.9 * h / rh, 0.78 * w / rw, 1.25)
    qw, qh = rw * s, rh * s
    cx, cy = w / 2 + rng.uniform(-0.05, 0.05) * w, h / 2 + rng.uniform(-0.03, 0.03) * h
    ang = math.radians(rng.uniform(-5, 5))
    ca, sa = math.cos(ang), math.sin(ang)
    corners = []
    for ux, uy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        x, y = ux * qw / 2, uy * qh / 2
        if uy < 0:  # keystone: the far (top) edge looks narrower
            x *= rng.uniform(0.86, 0.97)
        x, y = x * ca - y * sa, x * sa + y * ca
        corners.append((cx + x + rng.uniform(-0.02, 0.02) * w, cy + y + rng.uniform(-0.015, 0.015) * h))
    coeffs = _persp_coeffs(corners, [(0, 0), (rw, 0), (rw, rh), (0, rh)])
    if warps is not None:  # the forward map: the photo is composed at (w, h), then only scaled
        warps.append([*_persp_coeffs([(0, 0), (rw, 0), (rw, rh), (0, rh)], corners), rw, rh, w, h])
    warm = rng.uniform(0.93, 0.99)
    paper = Image.merge("RGBA", (rec, _lut(rec, [lambda v: v * (1 + warm) / 2]), _lut(rec, [lambda v: v * warm]),
                                 Image.new("L", rec.size, 255)))
    warped = paper.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    alpha = warped.getchannel("A")
    # table: base colour with a low-frequency texture
    base = rng.choice([(120, 84, 52), (160, 120, 80), (90, 90, 95), (200, 198, 190), (60, 55, 50), (140, 150, 160)])
    grid = Image.new("RGB", (6, 8))
    cells = []
    for _ in range(48):
        g = 1 + rng.gauss(0, 0.07)  # brightness varies, hue barely
        cells.append(tuple(max(0, min(255, int(c * g + rng.gauss(0, 3)))) for c in base))
    grid.putdata(cells)
    photo = grid.resize((w, h), Image.Resampling.BICUBIC)
    # soft shadow, then the receipt
    shadow = Image.new("L", (w, h), 0)
    shadow.paste(_lut(alpha, [lambda v: v * 0.45]), (rng.randint(3, 10), rng.randint(4, 12)))
    photo.paste((0, 0, 0), (0, 0, w, h), shadow.filter(ImageFilter.BoxBlur(7)))
    photo.paste(warped.convert("RGB"), (0, 0), alpha)
    # uneven lighting: smooth random field times a directional ramp
    th = rng.uniform(0, 2 * math.pi)
    amp = rng.uniform(0.08, 0.2)
    field_vals = []
    for gy in range(6):
        for gx in range(5):
            ramp = 1 + amp * (math.cos(th) * (gx / 2 - 1) + math.sin(th) * (gy / 2.5 - 1))
            field_vals.append(int(max(0, min(255, 255 * rng.uniform(0.74, 0.92) * ramp))))
    light = Image.new("L", (5, 6))
    light.putdata(field_vals)
    light = light.resize((w, h), Image.Resampling.BICUBIC)
    photo = ImageChops.multiply(photo, Image.merge("RGB", (light, light, light)))
    # lower contrast and a colour cast
    k = rng.uniform(0.7, 0.88)
    lift = (1 - k) * rng.uniform(70, 120)
    cast = [rng.uniform(0.97, 1.06), 1.0, rng.uniform(0.88, 1.03)]
    photo = _lut(photo, [_contrast_curve(k, lift, c) for c in cast])
    photo = photo.resize((W, H), Image.Resampling.BICUBIC)
    return _add_noise(photo, rng.uniform(2.5, 6), rng)
