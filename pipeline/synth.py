"""Deterministic synthetic invoices and receipts with exact ground truth.

Every document is produced in two steps: first the *data* (a validated
``schemas.Invoice`` / ``schemas.Receipt``, Decimal amounts rounded to cents,
totals that add up), then a drawing of exactly that data:

* ``pdf-digital``  invoice as a text PDF (PyMuPDF), 3 layouts, 1-3 pages.
* ``pdf-scan``     the same pages rendered, skewed, blurred, noised, JPEG'd,
                   one image per page in a PDF.
* ``tiff-scan``    same, as a multi-frame TIFF (JPEG compression), one frame a page.
* ``jpeg-scan``    same, single-page invoices only, as a plain JPEG.
* ``png-receipt``  narrow thermal-printer receipt (Pillow), PNG.
* ``jpeg-photo-receipt`` that receipt photographed: perspective, shadow,
                   uneven light, low contrast, JPEG.

Everything is driven by ``random.Random`` instances (one per document, seeded
from ``(seed, index)``), so a batch is reproducible and can be produced by
several worker processes with identical output.

    python -m pipeline.synth OUT_DIR --count 1000 --seed 0 --workers 2
    python -m pipeline.synth --bench 20          # pages/s for every variant
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import io
import json
import math
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pymupdf
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from schemas import Invoice, Receipt

# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------

VARIANTS: dict[str, str] = {
    "pdf-digital": "invoice",
    "pdf-scan": "invoice",
    "tiff-scan": "invoice",
    "jpeg-scan": "invoice",
    "png-receipt": "receipt",
    "jpeg-photo-receipt": "receipt",
}
EXTENSIONS = {
    "pdf-digital": ".pdf",
    "pdf-scan": ".pdf",
    "tiff-scan": ".tiff",
    "jpeg-scan": ".jpg",
    "png-receipt": ".png",
    "jpeg-photo-receipt": ".jpg",
}
#: More scans than digital PDFs, about half invoices and half receipts.
DEFAULT_MIX: dict[str, float] = {
    "pdf-digital": 0.14,
    "pdf-scan": 0.16,
    "tiff-scan": 0.10,
    "jpeg-scan": 0.10,
    "png-receipt": 0.22,
    "jpeg-photo-receipt": 0.28,
}
SAMPLES_SEED = 38  # picked: 2- and 3-page invoices, multi-page PDF scan and TIFF, all 6 locales
_OWN_FILE = re.compile(r"^(\d{5}-(invoice|receipt)-[a-z-]+\.(pdf|tiff|jpg|png|truth\.json)|bad-[a-z]+\.pdf)$")


@dataclass(frozen=True)
class SynthDoc:
    path: Path
    kind: str  # "invoice" | "receipt"
    truth: dict  # schema JSON, model_dump(mode="json")
    variant: str
    pages: int
    #: Generation details useful to tests and error analysis: locale, layout,
    #: items_per_page (invoices), ...
    meta: dict = field(default_factory=dict, compare=False)


def generate(
    out_dir: Path,
    count: int,
    seed: int = 0,
    kinds: tuple[str, ...] = ("invoice", "receipt"),
    mix: dict[str, float] | None = None,
    workers: int = 1,
) -> list[SynthDoc]:
    """Write ``count`` documents (+ ``<stem>.truth.json`` each, + ``truth.jsonl``) into ``out_dir``.

    ``mix`` maps variant names (or ``"invoice"`` / ``"receipt"``, expanded with the
    default proportions) to weights; only variants of ``kinds`` are used.  Each
    variant with a positive weight appears at least once when ``count`` allows.
    The output does not depend on ``workers``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(count, seed, kinds, mix)
    jobs = [(str(out_dir), seed, i, v) for i, v in enumerate(plan)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers) as pool:
            docs = pool.map(_job, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))
    else:
        docs = [_job(j) for j in jobs]
    with open(out_dir / "truth.jsonl", "w", encoding="utf-8") as fh:
        for d in docs:
            row = {"file": d.path.name, "schema": d.kind, "variant": d.variant, "pages": d.pages, "truth": d.truth}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return docs


def write_samples(out_dir: Path) -> list[SynthDoc]:
    """A dozen small documents covering every variant (fixed seed), for ``data/samples/``.

    Invoices go to ``out_dir/invoices`` and receipts to ``out_dir/receipts`` so each
    folder can be run with its own schema (``docextract run data/samples/invoices
    --schema invoice``).  Files a previous call wrote are removed first.
    """
    out_dir = Path(out_dir)
    for d in (out_dir, out_dir / "invoices", out_dir / "receipts"):
        if d.is_dir():  # only files this module names
            for f in d.iterdir():
                if f.is_file() and (f.name == "truth.jsonl" or _OWN_FILE.match(f.name)):
                    f.unlink()
    inv = generate(out_dir / "invoices", 8, seed=SAMPLES_SEED, kinds=("invoice",),
                   mix={"pdf-digital": 3, "pdf-scan": 2, "tiff-scan": 2, "jpeg-scan": 1})
    rec = generate(out_dir / "receipts", 4, seed=SAMPLES_SEED, kinds=("receipt",),
                   mix={"png-receipt": 2, "jpeg-photo-receipt": 2})
    write_bad_samples(out_dir / "invoices")
    return inv + rec


BAD_SAMPLES = {
    "bad-truncated.pdf": ("rasterize", "corrupt"),
    "bad-encrypted.pdf": ("rasterize", "encrypted"),
    "bad-empty.pdf": ("discover", "empty_file"),
    "bad-notes.pdf": ("discover", "unsupported_type"),
}


def write_bad_samples(out_dir: Path) -> dict[str, tuple[str, str]]:
    """The inputs every backlog has: a truncated PDF, an encrypted PDF, a zero-byte file and a
    text file named ``.pdf``.  Returns file name -> (expected stage, expected error type)."""
    import pymupdf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = pymupdf.open()
    for i in range(3):
        doc.new_page().insert_text((72, 72), f"Invoice INV-{i:04d} page {i + 1}", fontsize=14)
    full = doc.tobytes()
    doc.close()
    (out_dir / "bad-truncated.pdf").write_bytes(full[: len(full) // 2])
    enc = pymupdf.open()
    enc.new_page().insert_text((72, 72), "Confidential invoice", fontsize=14)
    enc.save(out_dir / "bad-encrypted.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner", user_pw="secret")
    enc.close()
    (out_dir / "bad-empty.pdf").write_bytes(b"")
    (out_dir / "bad-notes.pdf").write_text("Reminder: scan the March invoices.\n", encoding="utf-8")
    return dict(BAD_SAMPLES)


# --------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------


def _plan(count: int, seed: int, kinds: tuple[str, ...], mix: dict[str, float] | None) -> list[str]:
    if count < 0:
        raise ValueError("count must be >= 0")
    bad = set(kinds) - {"invoice", "receipt"}
    if bad:
        raise ValueError(f"unknown kinds {sorted(bad)}")
    weights: dict[str, float] = {}
    for key, w in (mix if mix is not None else DEFAULT_MIX).items():
        if key in VARIANTS:
            weights[key] = weights.get(key, 0.0) + float(w)
        elif key in ("invoice", "receipt"):
            sub = {v: DEFAULT_MIX[v] for v in VARIANTS if VARIANTS[v] == key}
            s = sum(sub.values())
            for v, x in sub.items():
                weights[v] = weights.get(v, 0.0) + float(w) * x / s
        else:
            raise ValueError(f"unknown variant {key!r} in mix; use {sorted(VARIANTS)}")
    weights = {v: w for v, w in weights.items() if w > 0 and VARIANTS[v] in kinds}
    if not weights and count:
        raise ValueError("mix and kinds leave no variant to generate")
    names = [v for v in VARIANTS if v in weights]  # stable order
    total = sum(weights.values())
    exact = {v: count * weights[v] / total for v in names}
    quota = {v: int(exact[v]) for v in names}
    left = count - sum(quota.values())
    for v in sorted(names, key=lambda v: (-(exact[v] - quota[v]), names.index(v)))[:left]:
        quota[v] += 1
    if count >= len(names):  # every variant at least once
        for v in names:
            while quota[v] == 0:
                donor = max(names, key=lambda u: quota[u])
                quota[donor] -= 1
                quota[v] += 1
    plan = [v for v in names for _ in range(quota[v])]
    random.Random(f"plan:{seed}:{count}").shuffle(plan)
    return plan


def _job(args: tuple[str, int, int, str]) -> SynthDoc:
    out_dir, seed, index, variant = args
    rng = random.Random(f"docextract-synth:{seed}:{index}")
    stem = f"{index:05d}-{VARIANTS[variant]}-{variant}"
    return make_document(Path(out_dir), stem, variant, rng)


def make_document(out_dir: Path, stem: str, variant: str, rng: random.Random) -> SynthDoc:
    """Generate one document of ``variant`` and write it (plus its truth file)."""
    kind = VARIANTS[variant]
    path = out_dir / (stem + EXTENSIONS[variant])
    if kind == "invoice":
        model, pages, meta = _make_invoice(path, variant, rng)
    else:
        model, pages, meta = _make_receipt(path, variant, rng)
    truth = model.model_dump(mode="json")
    with open(out_dir / f"{stem}.truth.json", "w", encoding="utf-8") as fh:
        json.dump({"schema": kind, "truth": truth}, fh, ensure_ascii=False, indent=1)
    return SynthDoc(path=path, kind=kind, truth=truth, variant=variant, pages=pages, meta=meta)


# --------------------------------------------------------------------------------------
# money, numbers, dates
# --------------------------------------------------------------------------------------

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
        places = max(0, -q.normalize().as_tuple().exponent)
        return self.num(q, places)


def fmt_rate(fmt: NumFmt, rate: str) -> str:
    """A tax rate string ("8.875") with the document's decimal separator."""
    return rate.replace(".", fmt.dec)


MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"],
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
           "November", "Dezember"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"],
}


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


# --------------------------------------------------------------------------------------
# locales
# --------------------------------------------------------------------------------------


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


LOCALES: dict[str, Loc] = {
    "en-US": Loc("en-US", "en", "USA", "USD", "$", True, ".", (",",), ("mdy/", "mon d, y", "month d, y", "iso"),
                 ("mdy/", "mdy/short", "mon d, y"), ("7", "6.25", "8.875", "8.25", "6", "9.5"), "Sales Tax", "EIN",
                 letter=True),
    "en-GB": Loc("en-GB", "en", "United Kingdom", "GBP", "£", True, ".", (",",), ("dmy/", "d mon y", "d month y", "iso"),
                 ("dmy/", "dmy/short", "d mon y"), ("20", "5"), "VAT", "VAT Reg. No."),
    "de-DE": Loc("de-DE", "de", "Deutschland", "EUR", "€", False, ",", (".",), ("dmy.", "d mon y", "iso"),
                 ("dmy.", "dmy.short"), ("19", "7"), "MwSt.", "USt-IdNr."),
    "de-CH": Loc("de-CH", "de", "Schweiz", "CHF", "CHF", True, ".", ("'",), ("dmy.", "d mon y"),
                 ("dmy.", "dmy.short"), ("8.1", "2.6"), "MWST", "UID"),
    "fr-FR": Loc("fr-FR", "fr", "France", "EUR", "€", False, ",", (" ", "."), ("dmy/", "d mon y", "iso"),
                 ("dmy/", "dmy/short"), ("20", "10", "5.5"), "TVA", "N° TVA intracom."),
    "zh-CN": Loc("zh-CN", "zh", "中国", "CNY", "¥", True, ".", (",",), ("zh", "iso", "ymd/"),
                 ("iso", "ymd/", "zh"), ("13", "9", "6"), "增值税", "纳税人识别号"),
}
INV_LOCALE_WEIGHTS = {"en-US": 3, "en-GB": 2, "de-DE": 3, "de-CH": 1, "fr-FR": 2, "zh-CN": 2}
REC_LOCALE_WEIGHTS = {"en-US": 3, "en-GB": 2, "de-DE": 3, "de-CH": 1, "fr-FR": 2, "zh-CN": 2}
FOREIGN = {"USD": ("$", True), "EUR": ("€", False), "GBP": ("£", True), "CHF": ("CHF", True)}

LABELS: dict[str, dict[str, str]] = {
    "en": dict(
        title="INVOICE", number="Invoice No.", date="Invoice Date", due="Due Date", bill_to="Bill To",
        seller="From", pos="#", desc="Description", qty="Qty", unit="Unit", price="Unit Price", disc="Disc.",
        rate="Tax", amount="Amount", subtotal="Subtotal", tax="{name} {rate}%", tax_on="{name} {rate}% on {base}",
        total="Total", total_due="Total Due", page="Page {i} of {n}", cont="Continued on page {n}",
        carried="Carried forward", brought="Brought forward", bank="Bank details", terms="Payment terms: {d} days net",
        thanks="Thank you for your business!", discount="Discount {p}%", loyalty="Loyalty discount",
        reverse="Reverse charge - VAT to be accounted for by the recipient", customer_no="Customer No.",
        order="Order ref.", phone="Tel.", paid="Amount paid", balance="Balance due", dear="",
    ),
    "de": dict(
        title="RECHNUNG", number="Rechnungsnr.", date="Rechnungsdatum", due="Fällig am", bill_to="Rechnungsempfänger",
        seller="Absender", pos="Pos.", desc="Bezeichnung", qty="Menge", unit="Einheit", price="Einzelpreis",
        disc="Rabatt", rate="MwSt.", amount="Gesamt", subtotal="Zwischensumme", tax="{name} {rate} %",
        tax_on="{name} {rate} % auf {base}", total="Gesamtbetrag", total_due="Rechnungsbetrag",
        page="Seite {i} von {n}", cont="Fortsetzung auf Seite {n}", carried="Übertrag", brought="Übertrag",
        bank="Bankverbindung", terms="Zahlbar innerhalb von {d} Tagen ohne Abzug",
        thanks="Vielen Dank für Ihren Auftrag!", discount="Rabatt {p} %", loyalty="Treuerabatt",
        reverse="Steuerschuldnerschaft des Leistungsempfängers (Reverse Charge)", customer_no="Kundennr.",
        order="Bestellnr.", phone="Tel.", paid="Bereits bezahlt", balance="Offener Betrag",
        dear="Sehr geehrte Damen und Herren, wir berechnen Ihnen folgende Leistungen:",
    ),
    "fr": dict(
        title="FACTURE", number="Facture n°", date="Date de facture", due="Date d'échéance", bill_to="Facturé à",
        seller="Émetteur", pos="N°", desc="Désignation", qty="Qté", unit="Unité", price="Prix unitaire HT",
        disc="Remise", rate="TVA", amount="Montant HT", subtotal="Total HT", tax="{name} {rate} %",
        tax_on="{name} {rate} % sur {base}", total="Total TTC", total_due="Net à payer",
        page="Page {i} sur {n}", cont="Suite page {n}", carried="Report", brought="Report",
        bank="Coordonnées bancaires", terms="Paiement à {d} jours", thanks="Merci de votre confiance.",
        discount="Remise {p} %", loyalty="Remise fidélité", reverse="Autoliquidation - TVA due par le preneur",
        customer_no="Code client", order="Réf. commande", phone="Tél.", paid="Acompte versé",
        balance="Reste à payer", dear="",
    ),
    "zh": dict(
        title="发票", number="发票号码", date="开票日期", due="付款期限", bill_to="购买方", seller="销售方",
        pos="序号", desc="项目名称", qty="数量", unit="单位", price="单价", disc="折扣", rate="税率", amount="金额",
        subtotal="小计", tax="{name}（{rate}%）", tax_on="{name}（{rate}%）", total="合计", total_due="价税合计",
        page="第 {i} 页 / 共 {n} 页", cont="续第 {n} 页", carried="承前页", brought="承前页", bank="开户行及账号",
        terms="付款期限：{d} 天", thanks="感谢您的惠顾！", discount="折扣 {p}%", loyalty="优惠",
        reverse="", customer_no="客户编号", order="订单号", phone="电话", paid="已付金额", balance="应付余额",
        dear="",
    ),
}
UNITS = {
    "h": ("h", "Std.", "h", "小时"), "pc": ("pcs", "Stk.", "pce", "个"), "mo": ("month", "Monat", "mois", "月"),
    "kg": ("kg", "kg", "kg", "千克"), "m": ("m", "m", "m", "米"), "day": ("day", "Tag", "jour", "天"),
    "lump": ("lump sum", "pauschal", "forfait", "项"),
}
LANG_IDX = {"en": 0, "de": 1, "fr": 2, "zh": 3}

# (en, de, fr, zh, unit, low, high)
CATALOG: dict[str, list[tuple[str, str, str, str, str, float, float]]] = {
    "it": [
        ("Consulting services", "Beratungsleistung", "Prestation de conseil", "咨询服务", "h", 80, 180),
        ("Software development", "Softwareentwicklung", "Développement logiciel", "软件开发服务", "h", 70, 160),
        ("Project management", "Projektmanagement", "Gestion de projet", "项目管理", "h", 60, 140),
        ("Cloud hosting (monthly)", "Cloud-Hosting (monatlich)", "Hébergement cloud (mensuel)", "云主机托管（月）", "mo", 40, 900),
        ("Software license, annual", "Softwarelizenz, jährlich", "Licence logicielle annuelle", "软件许可（年度）", "pc", 99, 2500),
        ("Technical support", "Technischer Support", "Support technique", "技术支持", "h", 50, 120),
        ("Domain registration", "Domainregistrierung", "Enregistrement de domaine", "域名注册", "pc", 8, 40),
        ("Data migration", "Datenmigration", "Migration de données", "数据迁移", "lump", 300, 4000),
        ("Security audit", "Sicherheitsaudit", "Audit de sécurité", "安全审计", "lump", 800, 6000),
        ("Training workshop", "Schulung / Workshop", "Atelier de formation", "培训课程", "day", 600, 1800),
        ("Backup storage 500 GB", "Backup-Speicher 500 GB", "Stockage de sauvegarde 500 Go", "备份存储 500GB", "mo", 15, 120),
        ("Code review", "Code-Review", "Revue de code", "代码审查", "h", 75, 150),
    ],
    "office": [
        ("Copy paper A4, 500 sheets", "Kopierpapier A4, 500 Blatt", "Papier A4, ramette de 500", "A4复印纸（500张）", "pc", 3.5, 8),
        ("Toner cartridge, black", "Tonerkartusche schwarz", "Cartouche de toner noir", "黑色硒鼓", "pc", 35, 160),
        ("Office chair, ergonomic", "Bürostuhl, ergonomisch", "Chaise de bureau ergonomique", "人体工学办公椅", "pc", 120, 650),
        ("LED desk lamp", "LED-Schreibtischleuchte", "Lampe de bureau LED", "LED台灯", "pc", 19, 89),
        ("Ballpoint pens, box of 50", "Kugelschreiber, 50 Stück", "Stylos à bille, boîte de 50", "圆珠笔（50支装）", "pc", 6, 25),
        ("Monitor 27-inch", "Monitor 27 Zoll", "Écran 27 pouces", "27英寸显示器", "pc", 160, 480),
        ("USB-C docking station", "USB-C-Dockingstation", "Station d'accueil USB-C", "USB-C扩展坞", "pc", 80, 260),
        ("Filing folders, pack of 25", "Aktenordner, 25er-Pack", "Classeurs, lot de 25", "文件夹（25个装）", "pc", 12, 45),
        ("Whiteboard 120x90 cm", "Whiteboard 120x90 cm", "Tableau blanc 120x90 cm", "白板 120x90cm", "pc", 60, 190),
        ("Sticky notes, 12 pads", "Haftnotizen, 12 Blöcke", "Notes adhésives, 12 blocs", "便利贴（12本）", "pc", 4, 15),
        ("Wireless keyboard", "Funktastatur", "Clavier sans fil", "无线键盘", "pc", 25, 110),
    ],
    "parts": [
        ("Hex bolts M8x40, box of 100", "Sechskantschrauben M8x40, 100 Stück", "Boulons hexagonaux M8x40, boîte de 100",
         "六角螺栓 M8x40（100个）", "pc", 6, 30),
        ("Hydraulic pump HP-200", "Hydraulikpumpe HP-200", "Pompe hydraulique HP-200", "液压泵 HP-200", "pc", 450, 2200),
        ("Stainless steel sheet 2 mm", "Edelstahlblech 2 mm", "Tôle inox 2 mm", "不锈钢板 2mm", "kg", 3, 9),
        ("Copper cable 3x1.5 mm2", "Kupferkabel 3x1,5 mm2", "Câble cuivre 3x1,5 mm2", "铜芯电缆 3x1.5mm2", "m", 0.8, 4),
        ("Ball bearing 6204-2RS", "Kugellager 6204-2RS", "Roulement à billes 6204-2RS", "深沟球轴承 6204-2RS", "pc", 3, 18),
        ("Machine maintenance", "Maschinenwartung", "Maintenance machine", "设备维护", "h", 55, 120),
        ("Freight charges", "Frachtkosten", "Frais de transport", "运费", "lump", 25, 400),
        ("Aluminium profile 40x40", "Aluminiumprofil 40x40", "Profilé aluminium 40x40", "铝型材 40x40", "m", 6, 22),
        ("Pneumatic cylinder DN32", "Pneumatikzylinder DN32", "Vérin pneumatique DN32", "气缸 DN32", "pc", 45, 180),
        ("Safety gloves, 12 pairs", "Schutzhandschuhe, 12 Paar", "Gants de protection, 12 paires", "防护手套（12副）", "pc", 15, 48),
        ("Welding wire 1.0 mm", "Schweißdraht 1,0 mm", "Fil de soudure 1,0 mm", "焊丝 1.0mm", "kg", 4, 12),
    ],
    "print": [
        ("Business cards, 500 pcs", "Visitenkarten, 500 Stück", "Cartes de visite, 500 ex.", "名片（500张）", "pc", 25, 90),
        ("Flyer A5, full colour", "Flyer A5, vierfarbig", "Flyers A5 quadrichromie", "A5彩色传单", "pc", 0.08, 0.4),
        ("Logo design", "Logogestaltung", "Création de logo", "标志设计", "lump", 300, 2500),
        ("Photography, half day", "Fotografie, halber Tag", "Séance photo, demi-journée", "摄影服务（半天）", "pc", 350, 900),
        ("Social media campaign", "Social-Media-Kampagne", "Campagne réseaux sociaux", "社交媒体推广", "mo", 500, 3000),
        ("Banner printing 2x1 m", "Bannerdruck 2x1 m", "Impression banderole 2x1 m", "横幅印刷 2x1m", "pc", 40, 150),
        ("Copywriting", "Texterstellung", "Rédaction", "文案撰写", "h", 45, 110),
        ("Brochure layout, 16 pages", "Broschürenlayout, 16 Seiten", "Mise en page brochure, 16 pages", "宣传册排版（16页）", "lump", 400, 1600),
        ("Poster A1", "Plakat A1", "Affiche A1", "A1海报", "pc", 8, 35),
        ("Website banner set", "Webbanner-Set", "Jeu de bannières web", "网页横幅套装", "lump", 150, 700),
    ],
}
DETAILS = {
    "en": ["including installation and configuration on site", "as per quotation of {m}", "for period {m}",
           "project ref. {ref}", "delivered to warehouse 2", "priority handling", "incl. documentation"],
    "de": ["inkl. Installation und Konfiguration vor Ort", "gemäß Angebot vom {m}", "Leistungszeitraum {m}",
           "Projekt {ref}", "Lieferung an Lager 2", "Expresszuschlag enthalten", "inkl. Dokumentation"],
    "fr": ["y compris installation et configuration sur site", "selon devis du {m}", "période {m}",
           "projet {ref}", "livré à l'entrepôt 2", "traitement prioritaire", "documentation incluse"],
    "zh": ["含现场安装与调试", "依据{m}报价单", "服务期间：{m}", "项目编号 {ref}", "送货至二号仓库", "加急处理", "含说明文档"],
}

# --------------------------------------------------------------------------------------
# names, addresses, ids
# --------------------------------------------------------------------------------------

NAME_PARTS = {
    "en": dict(
        first=["Emily", "James", "Olivia", "Michael", "Sophia", "Daniel", "Grace", "Ethan", "Chloe", "Henry", "Ava",
               "Samuel", "Lucy", "Noah", "Hannah"],
        last=["Carter", "Bennett", "Hughes", "Morgan", "Foster", "Reed", "Turner", "Parker", "Collins", "Ward",
              "Brooks", "Hayes", "Sullivan", "Price", "Walsh"],
        word=["Bluefield", "Northwind", "Silverline", "Harbor", "Redwood", "Summit", "Keystone", "Brightpath",
              "Ironbridge", "Clearwater", "Oakridge", "Pinecrest", "Lakeside", "Granite", "Westbrook"],
        trade=["Analytics", "Consulting", "Supplies", "Logistics", "Engineering", "Digital", "Print Works",
               "Industrial", "Systems", "Media", "Solutions", "Trading"],
        suffix_US=["LLC", "Inc.", "Corp.", "Co."], suffix_GB=["Ltd", "Ltd.", "LLP", "plc"],
        streets=["Maple Avenue", "Oak Street", "Main Street", "Park Road", "High Street", "Church Lane",
                 "Station Road", "Elm Drive", "Market Street", "Victoria Road", "Commerce Blvd", "Lakeview Drive"],
    ),
    "de": dict(
        first=["Jonas", "Lena", "Lukas", "Anna", "Felix", "Marie", "Paul", "Sophie", "Maximilian", "Laura",
               "Tobias", "Katharina", "Jürgen", "Sabine"],
        last=["Müller", "Schneider", "Fischer", "Weber", "Becker", "Hoffmann", "Schäfer", "Koch", "Bauer",
              "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Zimmermann"],
        word=["Nordlicht", "Alpen", "Rheintal", "Lindenhof", "Sonnenberg", "Elbe", "Weißenfels", "Tannenwald",
              "Bergblick", "Isar", "Brückner", "Ostsee"],
        trade=["Haustechnik", "Software", "Bürobedarf", "Logistik", "Maschinenbau", "Druckerei", "Metallbau",
               "Beratung", "Medien", "Elektrotechnik", "Handel", "Systemhaus"],
        suffix=["GmbH", "AG", "KG", "GmbH & Co. KG", "e.K.", "UG (haftungsbeschränkt)"],
        streets=["Lindenstraße", "Hauptstraße", "Bahnhofstraße", "Gartenweg", "Schillerstraße", "Industriestraße",
                 "Am Markt", "Goethestraße", "Mühlenweg", "Rosenstraße", "Bergstraße", "Dorfstraße"],
    ),
    "fr": dict(
        first=["Camille", "Louis", "Léa", "Hugo", "Chloé", "Jules", "Manon", "Arthur", "Inès", "Théo", "Élodie",
               "Mathieu"],
        last=["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
              "Lefèvre", "Girard", "Fontaine", "Rousseau"],
        word=["Atelier", "Groupe", "Société", "Ateliers", "Maison", "Cabinet", "Établissements"],
        trade=["Conseil", "Informatique", "Fournitures", "Transports", "Mécanique", "Imprimerie", "Services",
               "Communication", "Ingénierie", "Distribution"],
        suffix=["SARL", "SAS", "SA", "EURL", "SASU"],
        streets=["rue des Lilas", "avenue de la République", "boulevard Voltaire", "rue du Moulin",
                 "rue de la Paix", "place de la Gare", "rue Victor Hugo", "chemin des Vignes", "rue Pasteur",
                 "avenue Jean Jaurès"],
    ),
    "zh": dict(
        first=["伟", "芳", "娜", "敏", "静", "磊", "洋", "艳", "勇", "杰", "婷", "强"],
        last=["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "周", "吴"],
        word=[("华信", "huaxin"), ("恒达", "hengda"), ("博远", "boyuan"), ("鑫源", "xinyuan"), ("天成", "tiancheng"),
              ("瑞丰", "ruifeng"), ("东方", "dongfang"), ("嘉禾", "jiahe"), ("中创", "zhongchuang"),
              ("宏图", "hongtu"), ("新锐", "xinrui"), ("安和", "anhe")],
        trade=["科技", "贸易", "信息技术", "物流", "机械设备", "文化传媒", "办公用品", "电子", "咨询", "印务"],
        streets=["世纪大道", "人民路", "建国路", "中山路", "解放路", "长江路", "科技园路", "南京西路", "天府大道", "深南大道"],
    ),
}
CITIES = {
    "en-US": [("Springfield", "IL", "627"), ("Austin", "TX", "787"), ("Portland", "OR", "972"), ("Denver", "CO", "802"),
              ("Columbus", "OH", "432"), ("Raleigh", "NC", "276"), ("Madison", "WI", "537"), ("Boston", "MA", "021"),
              ("San Jose", "CA", "951"), ("Seattle", "WA", "981")],
    "en-GB": [("London", "EC1A", ""), ("Manchester", "M1", ""), ("Bristol", "BS1", ""), ("Leeds", "LS1", ""),
              ("Birmingham", "B2", ""), ("Edinburgh", "EH1", ""), ("Cardiff", "CF10", ""), ("Nottingham", "NG1", "")],
    "de-DE": [("Berlin", "10", ""), ("Hamburg", "20", ""), ("München", "80", ""), ("Köln", "50", ""),
              ("Frankfurt am Main", "60", ""), ("Stuttgart", "70", ""), ("Leipzig", "04", ""), ("Dresden", "01", ""),
              ("Hannover", "30", ""), ("Nürnberg", "90", "")],
    "de-CH": [("Zürich", "80", ""), ("Bern", "30", ""), ("Basel", "40", ""), ("Luzern", "60", ""),
              ("Winterthur", "84", ""), ("St. Gallen", "90", "")],
    "fr-FR": [("Paris", "750", ""), ("Lyon", "6900", ""), ("Marseille", "130", ""), ("Toulouse", "310", ""),
              ("Nantes", "440", ""), ("Bordeaux", "330", ""), ("Lille", "590", ""), ("Strasbourg", "670", "")],
    "zh-CN": [("上海市", "浦东新区", ""), ("北京市", "朝阳区", ""), ("深圳市", "南山区", ""), ("广州市", "天河区", ""),
              ("杭州市", "西湖区", ""), ("成都市", "高新区", ""), ("南京市", "鼓楼区", ""), ("苏州市", "工业园区", "")],
}
TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "è": "e", "ê": "e", "à": "a",
                          "ç": "c", "ô": "o", "É": "e", "î": "i", "û": "u", "ë": "e", "Ä": "ae", "Ö": "oe",
                          "Ü": "ue", "&": "", ".": "", "'": ""})


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _slug(s: str) -> str:
    s = s.lower().translate(TRANSLIT)
    return "-".join(w for w in "".join(c if c.isalnum() else " " for c in s).split() if w.isascii())[:30] or "info"


def _person(rng: random.Random, lang: str) -> str:
    p = NAME_PARTS[lang]
    if lang == "zh":
        return rng.choice(p["last"]) + rng.choice(p["first"]) + (rng.choice(p["first"]) if rng.random() < 0.5 else "")
    return f"{rng.choice(p['first'])} {rng.choice(p['last'])}"


def _company(rng: random.Random, loc: Loc) -> tuple[str, str]:
    """(name, ascii slug for emails/websites)."""
    lang = loc.lang
    p = NAME_PARTS[lang]
    if lang == "zh":
        w, py = rng.choice(p["word"])
        city = rng.choice(CITIES["zh-CN"])[0].rstrip("市")
        name = f"{city}{w}{rng.choice(p['trade'])}有限公司"
        return name, py
    if lang == "en":
        suffix = rng.choice(p["suffix_US"] if loc.code == "en-US" else p["suffix_GB"])
        if rng.random() < 0.3:
            base = f"{rng.choice(p['last'])} & {rng.choice(p['last'])}"
        else:
            base = f"{rng.choice(p['word'])} {rng.choice(p['trade'])}"
        name = f"{base} {suffix}"
        return name, _slug(base)
    if lang == "de":
        r = rng.random()
        if r < 0.35:
            base = f"{rng.choice(p['last'])} {rng.choice(p['trade'])}"
        elif r < 0.6:
            base = f"{rng.choice(p['last'])} & {rng.choice(p['last'])}"
        else:
            base = f"{rng.choice(p['word'])} {rng.choice(p['trade'])}"
        return f"{base} {rng.choice(p['suffix'])}", _slug(base)
    r = rng.random()
    if r < 0.5:
        base = f"{rng.choice(p['word'])} {rng.choice(p['last'])}"
    else:
        base = f"{rng.choice(p['trade'])} {rng.choice(p['last'])}"
    return f"{base} {rng.choice(p['suffix'])}", _slug(base)


def _address(rng: random.Random, loc: Loc, country: bool = False) -> list[str]:
    p = NAME_PARTS[loc.lang]
    city = rng.choice(CITIES[loc.code])
    n = rng.randint(1, 240)
    if loc.code == "en-US":
        lines = [f"{rng.randint(10, 9999)} {rng.choice(p['streets'])}" + (f", Suite {rng.randint(100, 950)}" if rng.random() < 0.3 else ""),
                 f"{city[0]}, {city[1]} {city[2]}{_digits(rng, 2)}"]
    elif loc.code == "en-GB":
        pc = f"{city[1]} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
        lines = [f"{n} {rng.choice(p['streets'])}", f"{city[0]} {pc}"]
    elif loc.code in ("de-DE", "de-CH"):
        pc = city[1] + _digits(rng, 5 - len(city[1])) if loc.code == "de-DE" else city[1] + _digits(rng, 4 - len(city[1]))
        lines = [f"{rng.choice(p['streets'])} {n}", f"{pc} {city[0]}"]
        if loc.code == "de-CH":
            lines[0] = lines[0].replace("straße", "strasse")
    elif loc.code == "fr-FR":
        pc = city[1] + _digits(rng, 5 - len(city[1]))
        lines = [f"{n}{rng.choice(['', '', ' bis'])} {rng.choice(p['streets'])}", f"{pc} {city[0]}"]
    else:
        return [f"{city[0]}{city[1]}{rng.choice(p['streets'])}{n}号" + (f"{rng.randint(2, 30)}楼" if rng.random() < 0.5 else "")]
    if country:
        lines.append(loc.country)
    return lines


def _tax_id(rng: random.Random, loc: Loc) -> str:
    c = loc.code
    if c == "en-US":
        return f"{rng.randint(10, 99)}-{_digits(rng, 7)}"
    if c == "en-GB":
        return "GB" + _digits(rng, 9)
    if c == "de-DE":
        return "DE" + str(rng.randint(1, 9)) + _digits(rng, 8)
    if c == "de-CH":
        return f"CHE-{_digits(rng, 3)}.{_digits(rng, 3)}.{_digits(rng, 3)} MWST"
    if c == "fr-FR":
        return "FR" + _digits(rng, 2) + str(rng.randint(1, 9)) + _digits(rng, 8)
    alnum = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    return "91" + _digits(rng, 6) + "".join(rng.choice(alnum) for _ in range(10))


def _phone(rng: random.Random, loc: Loc) -> str:
    c = loc.code
    if c == "en-US":
        return f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{_digits(rng, 4)}"
    if c == "en-GB":
        return f"0{rng.randint(20, 199)} {_digits(rng, 3)} {_digits(rng, 4)}"
    if c == "de-DE":
        return f"0{rng.randint(30, 899)} {_digits(rng, 6)}"
    if c == "de-CH":
        return f"0{rng.randint(21, 91)} {_digits(rng, 3)} {_digits(rng, 2)} {_digits(rng, 2)}"
    if c == "fr-FR":
        return "0" + str(rng.randint(1, 5)) + " " + " ".join(_digits(rng, 2) for _ in range(4))
    return f"0{rng.randint(10, 29)}-{_digits(rng, 8)}"


def _bank(rng: random.Random, loc: Loc) -> str:
    c = loc.code
    if c in ("de-DE", "fr-FR", "de-CH"):
        cc = {"de-DE": "DE", "fr-FR": "FR", "de-CH": "CH"}[c]
        n = {"DE": 20, "FR": 25, "CH": 19}[cc]
        raw = cc + _digits(rng, 2) + _digits(rng, n)
        iban = " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))
        bic = "".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ") for _ in range(4)) + cc + "XX" + rng.choice(["", "XXX"])
        return f"IBAN {iban} · BIC {bic}"
    if c == "en-GB":
        return f"Sort code {_digits(rng, 2)}-{_digits(rng, 2)}-{_digits(rng, 2)} · Account {_digits(rng, 8)}"
    if c == "en-US":
        return f"ABA/Routing {_digits(rng, 9)} · Account {_digits(rng, 10)}"
    bank = rng.choice(["中国工商银行", "中国建设银行", "招商银行", "中国银行"])
    return f"{bank}{rng.choice(CITIES['zh-CN'])[0].rstrip('市')}分行 {' '.join(_digits(rng, 4) for _ in range(4))}"


def _invoice_number(rng: random.Random, loc: Loc, d: dt.date) -> str:
    n = rng.randint(1, 99999)
    if loc.lang == "zh":
        return rng.choice([_digits(rng, 8), f"{d.year}{_digits(rng, 6)}", f"FP{d.year}{n:05d}"])
    if loc.lang == "de":
        return rng.choice([f"RE-{d.year}-{n:05d}", f"R{d.year % 100:02d}{n:05d}", f"{d.year}-{n:04d}", f"RG{n:06d}"])
    if loc.lang == "fr":
        return rng.choice([f"F{d.year}-{n:04d}", f"FA-{n:05d}", f"{d.year}{d.month:02d}-{n:03d}", f"FAC{n:06d}"])
    return rng.choice([f"INV-{d.year}-{n:05d}", f"{n:06d}", f"INV{n:05d}", f"{d.year % 100:02d}-{n:04d}",
                       f"A{rng.randint(1, 9)}-{n:05d}"])


# --------------------------------------------------------------------------------------
# invoice data
# --------------------------------------------------------------------------------------


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


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


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
    reverse = cross and cloc.code != loc.code and loc.code in ("de-DE", "fr-FR") and cloc.code in ("de-DE", "fr-FR", "en-GB") and rng.random() < 0.6
    return InvCtx(
        loc=loc, lab=lab, fmt=fmt, currency=currency, date_style=rng.choice(loc.inv_dates),
        number=_invoice_number(rng, loc, issue), issue=issue, due=due, terms=terms, vendor=vendor,
        customer=customer, vendor_slug=vslug, vendor_phone=_phone(rng, loc), bank=_bank(rng, loc), lines=[],
        reverse_charge=reverse, customer_no=f"{rng.randint(10000, 99999)}" if rng.random() < 0.4 else None,
        order_ref=f"PO-{_digits(rng, 6)}" if rng.random() < 0.3 else None,
    )


def _qty(rng: random.Random, unit: str) -> Decimal:
    if unit == "h":
        return Decimal(rng.choice(["0.5", "1", "1.5", "2", "2.25", "3", "4", "4.5", "6", "7.5", "8", "12", "16", "24", "37.5"]))
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
    month_word = lambda: fmt_date(ctx.issue - dt.timedelta(days=rng.randint(0, 60)), rng.choice(["dmy/", "iso"]) if loc.lang != "zh" else "zh", loc.lang)  # noqa: E731
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


# --------------------------------------------------------------------------------------
# PDF drawing
# --------------------------------------------------------------------------------------

FAMILIES = {"helv": ("helv", "hebo"), "tiro": ("tiro", "tibo"), "cour": ("cour", "cobo")}


@functools.lru_cache(maxsize=None)
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

    def tlen(self, s: str, size: float, bold: bool = False) -> float:
        if self.cjk:
            return _text_width("china-s", s, size) * (1.02 if bold else 1.0)
        return _text_width(self.bold if bold else self.reg, s, size)

    def text(self, x: float, y: float, s: str, size: float = 9, bold: bool = False, color: tuple = (0, 0, 0),
             align: str = "l") -> float:
        w = self.tlen(s, size, bold)
        if align == "r":
            x -= w
        elif align == "c":
            x -= w / 2
        if self.page is not None and s:
            self.texts.append((x, y, s, size, bold, tuple(color)))
        return w

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

    def circle(self, cx: float, cy: float, r: float, fill: tuple | None, stroke: tuple | None = None, width: float = 1) -> None:
        if self.shape is not None:
            self.shape.draw_circle((cx, cy), r)
            self.shape.finish(color=stroke, fill=fill, width=width)

    def commit(self) -> None:
        if self.page is None:
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
        for (color, fake_bold), tw in runs:
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


ACCENTS = [(0.10, 0.30, 0.55), (0.70, 0.15, 0.15), (0.05, 0.45, 0.35), (0.35, 0.20, 0.55), (0.85, 0.45, 0.05),
           (0.15, 0.15, 0.15), (0.00, 0.40, 0.60), (0.45, 0.30, 0.15)]


@dataclass
class InvStyle:
    layout: str  # classic | band | letter
    family: str
    cjk: bool
    accent: tuple
    size: float
    pw: float
    ph: float
    margin: float
    pos_col: bool
    unit_col: bool
    logo: str
    carry: bool
    page_numbers: bool
    show_paid: bool


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
        pts = [(x + s / 2 + s / 2 * math.cos(math.pi / 3 * k + math.pi / 6), y + s / 2 + s / 2 * math.sin(math.pi / 3 * k + math.pi / 6)) for k in range(6)]
        cv.poly(pts, fill=accent)
        cv.text(x + s / 2, y + s * 0.63, initials[:1], s * 0.45, True, (1, 1, 1), "c")
    else:  # bars
        for k in range(4):
            h = s * (0.35 + 0.2 * k)
            cv.rect(x + k * s / 4, y + s - h, x + k * s / 4 + s / 5, y + s, fill=accent if k % 2 else light)


def _initials(name: str) -> str:
    words = [w for w in name.replace("&", " ").split() if w[:1].isalpha()]
    if not words:
        return "X"
    if not name.isascii() and not any(c.isalpha() and c.isascii() for c in name):
        return name[2] if len(name) > 2 else name[0]
    return "".join(w[0] for w in words[:2]).upper()


class InvoiceDrawer:
    """Draws an InvCtx with a given style; the same code measures (page=None) and paints."""

    def __init__(self, ctx: InvCtx, st: InvStyle):
        self.c, self.st = ctx, st
        s = st.size
        self.lh = s * 1.3
        self.pad = s * 0.45
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
        s = size or self.st.size
        lh = s * 1.3
        if title:
            cv.text(x, y, title, s * 0.9, True, self.st.accent)
            y += lh * 1.1
        cv.text(x, y, party[0], s * 1.05, bold_name)
        y += lh
        for a in party[1]:
            cv.text(x, y, a, s)
            y += lh
        if party[2] and tax_label:
            lbl = self.c.loc.taxid_label
            if party[2].startswith(("DE", "GB", "FR")):
                lbl = {"de": "USt-IdNr.", "fr": "N° TVA intracom.", "en": "VAT No."}.get(self.c.loc.lang, lbl)
            elif party[2].startswith("CHE"):
                lbl = "UID"
            cv.text(x, y, f"{lbl}: {party[2]}", s * 0.92)
            y += lh
        return y

    def _meta_rows(self) -> list[tuple[str, str]]:
        c, lab = self.c, self.c.lab
        rows = [(lab["number"], c.number), (lab["date"], fmt_date(c.issue, c.date_style, c.loc.lang))]
        if c.due is not None:
            rows.append((lab["due"], fmt_date(c.due, c.date_style, c.loc.lang)))
        if c.customer_no:
            rows.append((lab["customer_no"], c.customer_no))
        if c.order_ref:
            rows.append((lab["order"], c.order_ref))
        return rows

    def header_first(self, cv: PdfCanvas) -> float:
        st, c, lab, s = self.st, self.c, self.c.lab, self.st.size
        m, pw = st.margin, st.pw
        ini = _initials(c.vendor[0])
        lh = s * 1.3
        if st.layout == "classic":
            _draw_logo(cv, m, m, 34, st.logo, st.accent, ini)
            cv.text(m + 44, m + 14, c.vendor[0], s * 1.45, True, st.accent)
            cv.text(pw - m, m + 20, lab["title"], s * 2.6, True, st.accent, "r")
            y = self._party_block(cv, m, m + 52, None, (c.vendor[0], c.vendor[1], c.vendor[2]), bold_name=False, size=s * 0.95)
            cv.text(m, y, f"{lab['phone']} {c.vendor_phone} · {'info' if c.loc.lang != 'zh' else 'service'}@{c.vendor_slug}.{_tld(c.loc)}", s * 0.9)
            y += lh * 1.6
            yb = self._party_block(cv, m, y, lab["bill_to"], c.customer)
            # meta box on the right
            rows = self._meta_rows()
            bx0, bx1 = pw - m - 210 * s / 9, pw - m
            by0 = m + 52
            cv.rect(bx0, by0 - s * 1.2, bx1, by0 - s * 1.2 + len(rows) * lh + s * 0.9, stroke=(0.5, 0.5, 0.5), width=0.6)
            for k, (a, b) in enumerate(rows):
                cv.text(bx0 + 6, by0 + k * lh, a, s * 0.95, True)
                cv.text(bx1 - 6, by0 + k * lh, b, s * 0.95, False, (0, 0, 0), "r")
            return max(yb, by0 + len(rows) * lh) + lh * 1.2
        if st.layout == "band":
            band_h = 64
            cv.rect(0, 0, pw, band_h, fill=st.accent)
            cv.text(m, 42, lab["title"], s * 2.8, True, (1, 1, 1))
            _draw_logo(cv, pw - m - 34, 15, 34, st.logo, tuple(min(1, x + 0.45) for x in st.accent), ini)
            cv.text(pw - m - 42, 30, c.vendor[0], s * 1.2, True, (1, 1, 1), "r")
            cv.text(pw - m - 42, 30 + lh, f"{c.vendor_phone}", s * 0.9, False, (1, 1, 1), "r")
            y = band_h + 28
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
                cv.text(x + 7, y + 2.1 * lh, b, s * 1.05, True)
            return y + 2.6 * lh + lh * 1.4
        # letter (DIN 5008-like)
        _draw_logo(cv, pw - m - 40, m - 6, 40, st.logo, st.accent, ini)
        cv.text(pw - m - 48, m + 10, c.vendor[0], s * 1.35, True, st.accent, "r")
        yv = m + 10 + lh
        for a in c.vendor[1]:
            cv.text(pw - m - 48, yv, a, s * 0.9, False, (0.3, 0.3, 0.3), "r")
            yv += lh * 0.9
        yw = 128
        ret = " · ".join([c.vendor[0]] + c.vendor[1][:2])
        cv.text(m, yw, ret, s * 0.7, False, (0.35, 0.35, 0.35))
        cv.line(m, yw + 2.5, m + cv.tlen(ret, s * 0.7), yw + 2.5, (0.5, 0.5, 0.5), 0.4)
        yc = self._party_block(cv, m, yw + lh * 1.5, None, c.customer, bold_name=False)
        rows = self._meta_rows()
        lx = pw - m - 200 * s / 9
        ym = yw
        for a, b in rows:
            cv.text(lx, ym, a + ":", s * 0.92)
            cv.text(pw - m, ym, b, s * 0.92, False, (0, 0, 0), "r")
            ym += lh
        y = max(yc, ym) + lh * 1.6
        title = f"{lab['title'].capitalize() if c.loc.lang != 'zh' else lab['title']} {c.number}"
        cv.text(m, y, title, s * 1.6, True)
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
            cv.text(m, 20, f"{c.lab['title']} {c.number}", s * 1.2, True, (1, 1, 1))
            cv.text(pw - m, 20, c.vendor[0], s, False, (1, 1, 1), "r")
            return 56
        _draw_logo(cv, m, m - 8, 22, st.logo, st.accent, _initials(c.vendor[0]))
        cv.text(m + 30, m + 7, c.vendor[0], s * 1.1, True, st.accent)
        cv.text(pw - m, m + 7, f"{c.lab['number']} {c.number} · {fmt_date(c.issue, c.date_style, c.loc.lang)}", s * 0.95, False, (0, 0, 0), "r")
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
        for key, head, x, w, al in self.cols:
            tx = x + self.pad if al == "l" else (x + w - self.pad if al == "r" else x + w / 2)
            cv.text(tx, y + self.pad + s, head, s * 0.92, True, color, al)
        if st.layout == "classic":
            for key, head, x, w, al in self.cols[1:]:
                cv.line(x, y, x, y + h, (0.3, 0.3, 0.3), 0.6)
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
        for key, head, x, w, al in self.cols:
            if key == "desc":
                for j, t in enumerate(lines):
                    cv.text(x + self.pad, base + j * self.lh, t, s, False)
                continue
            tx = x + self.pad if al == "l" else (x + w - self.pad if al == "r" else x + w / 2)
            cv.text(tx, base, vals[key], s, False, (0, 0, 0), al)
        if st.layout == "classic":
            cv.line(x0, y, x0, y + h, (0.3, 0.3, 0.3), 0.6)
            cv.line(x1, y, x1, y + h, (0.3, 0.3, 0.3), 0.6)
            for key, head, x, w, al in self.cols[1:]:
                cv.line(x, y, x, y + h, (0.3, 0.3, 0.3), 0.6)
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
        for rate, base, tax in c.tax_rows:
            rate_s = fmt_rate(fmt, rate)
            if c.loc.code == "en-US" and rate == "0":
                continue
            label = (lab["tax_on"] if len(c.tax_rows) > 1 else lab["tax"]).format(name=c.loc.tax_name, rate=rate_s, base=fmt.num(base))
            rows.append((label, fmt.money(tax), False))
        rows.append((lab["total_due"] if st.show_paid or st.layout == "letter" else lab["total"], fmt.money(c.total), True))
        if st.show_paid:
            rows.append((lab["paid"], fmt.money(Decimal(0)), False))
            rows.append((lab["balance"], fmt.money(c.total), True))
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
            cv.text(x1 - 4, yy, b, sz, bold, (0, 0, 0), "r")
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
                    cv.text(m + k * w, y + j * lh, t, fs, False, (0.3, 0.3, 0.3))
        else:
            cv.text(pw / 2, y, " · ".join(left), fs, False, (0.3, 0.3, 0.3), "c")
            cv.text(pw / 2, y + lh, f"{c.lab['bank']}: {c.bank}", fs, False, (0.3, 0.3, 0.3), "c")
        if st.page_numbers or n_pages > 1:
            cv.text(pw - m, y + 2 * lh, c.lab["page"].format(i=page_no, n=n_pages), fs, False, (0, 0, 0), "r")

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
        return doc


def _tld(loc: Loc) -> str:
    return {"en-US": "com", "en-GB": "co.uk", "de-DE": "de", "de-CH": "ch", "fr-FR": "fr", "zh-CN": "cn"}[loc.code]


def _invoice_style(rng: random.Random, ctx: InvCtx) -> InvStyle:
    cjk = ctx.loc.lang == "zh"
    layout = rng.choice(["classic", "band", "letter"])
    family = "cjk" if cjk else rng.choices(["helv", "tiro", "cour"], weights=[6, 3, 1])[0]
    pw, ph = (612, 792) if ctx.loc.letter else (595, 842)
    return InvStyle(
        layout=layout, family=family, cjk=cjk, accent=rng.choice(ACCENTS),
        size=rng.choice([8.5, 9, 9, 9.5, 10]) if family != "cour" else 8.5,
        pw=pw, ph=ph, margin=rng.choice([40, 45, 50, 56]), pos_col=rng.random() < 0.5,
        unit_col=rng.random() < 0.45, logo=rng.choice(["circle", "squares", "triangle", "hexagon", "bars"]),
        carry=layout == "letter" and rng.random() < 0.7, page_numbers=rng.random() < 0.5,
        show_paid=ctx.loc.code in ("en-US", "en-GB") and rng.random() < 0.2,
    )


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
    _write_invoice(doc, path, variant, rng, ctx)
    meta = {"locale": ctx.loc.code, "layout": style.layout, "font": style.family,
            "items_per_page": [len(p) for p in pages]}
    return model, len(pages), meta


# --------------------------------------------------------------------------------------
# scans
# --------------------------------------------------------------------------------------


def _pdf_bytes(doc: pymupdf.Document, when: dt.date) -> bytes:
    stamp = f"D:{when:%Y%m%d}093000Z"
    doc.set_metadata({"creationDate": stamp, "modDate": stamp, "producer": "docextract-synth", "creator": "docextract-synth"})
    return doc.tobytes(garbage=3, deflate=True, no_new_id=True)


def _write_invoice(doc: pymupdf.Document, path: Path, variant: str, rng: random.Random, ctx: InvCtx) -> None:
    try:
        if variant == "pdf-digital":
            doc.subset_fonts()
            path.write_bytes(_pdf_bytes(doc, ctx.issue))
            return
        dpi = rng.choice([100, 110, 120, 130, 150])
        gray = rng.random() < 0.75
        quality = rng.randint(40, 72)
        frames = []
        for page in doc:
            pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY if gray else pymupdf.csRGB, alpha=False)
            img = Image.frombytes("L" if gray else "RGB", (pix.width, pix.height), pix.samples)
            del pix
            frames.append(scan_degrade(img, rng))
        if variant == "jpeg-scan":
            frames[0].save(path, format="JPEG", quality=quality, dpi=(dpi, dpi), optimize=False)
        elif variant == "tiff-scan":
            frames[0].save(path, format="TIFF", save_all=True, append_images=frames[1:], compression="jpeg",
                           quality=quality, dpi=(dpi, dpi))
        else:  # pdf-scan
            out = pymupdf.open()
            for fr, page in zip(frames, doc):
                buf = io.BytesIO()
                fr.save(buf, format="JPEG", quality=quality, dpi=(dpi, dpi))
                pg = out.new_page(width=page.rect.width, height=page.rect.height)
                pg.insert_image(pg.rect, stream=buf.getvalue())
            path.write_bytes(_pdf_bytes(out, ctx.issue))
            out.close()
    finally:
        doc.close()


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


def scan_degrade(img: Image.Image, rng: random.Random) -> Image.Image:
    """Paper skew (±2°), optics blur, toner/paper tone, uneven illumination, sensor noise, scanner edge."""
    w, h = img.size
    bg = 255 if img.mode == "L" else (255, 255, 255)
    angle = rng.uniform(-2.0, 2.0)
    dx, dy = rng.randint(-8, 8), rng.randint(-8, 8)
    img = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=bg, translate=(dx, dy))
    img = img.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 0.75)))
    black = rng.uniform(12, 50)  # toner never quite black, paper never quite white
    paper = rng.uniform(230, 252)
    tint = [1.0, rng.uniform(0.975, 1.0), rng.uniform(0.93, 0.99)]
    img = _lut(img, [lambda v, t=t: (black + v * (paper - black) / 255.0) * t for t in tint])
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


# --------------------------------------------------------------------------------------
# receipts
# --------------------------------------------------------------------------------------

# store type -> [(en, de, fr, zh, low, high, weighed)]
RECEIPT_ITEMS: dict[str, list[tuple[str, str, str, str, float, float, bool]]] = {
    "grocery": [
        ("Whole milk 1L", "Vollmilch 3,5% 1L", "Lait entier 1L", "纯牛奶 1L", 0.89, 1.99, False),
        ("Sourdough bread", "Bauernbrot 750g", "Pain de campagne", "全麦面包", 2.2, 4.9, False),
        ("Bananas", "Bananen", "Bananes", "香蕉", 1.1, 2.5, True),
        ("Free range eggs x10", "Eier Freiland 10St", "Oeufs plein air x10", "鸡蛋 10枚", 2.3, 4.5, False),
        ("Butter 250g", "Butter 250g", "Beurre doux 250g", "黄油 250g", 1.8, 3.6, False),
        ("Cheddar 400g", "Gouda jung 400g", "Comté 250g", "奶酪片", 2.9, 6.5, False),
        ("Apples Gala", "Äpfel Elstar", "Pommes Gala", "红富士苹果", 1.5, 3.9, True),
        ("Coffee beans 500g", "Kaffee Bohnen 500g", "Café en grains 500g", "咖啡豆 500g", 5.5, 12.9, False),
        ("Orange juice 1L", "Orangensaft 1L", "Jus d'orange 1L", "橙汁 1L", 1.3, 3.5, False),
        ("Spaghetti 500g", "Spaghetti 500g", "Spaghetti 500g", "意大利面 500g", 0.79, 2.2, False),
        ("Tomatoes", "Tomaten", "Tomates grappe", "西红柿", 1.9, 4.5, True),
        ("Greek yogurt", "Joghurt griech. Art", "Yaourt nature x4", "酸奶", 0.6, 2.8, False),
        ("Dark chocolate", "Zartbitterschokolade", "Chocolat noir 70%", "黑巧克力", 0.99, 3.5, False),
        ("Sparkling water 6x1.5L", "Mineralwasser 6x1,5L", "Eau gazeuse 6x1,5L", "矿泉水 6x1.5L", 1.9, 4.8, False),
        ("Basmati rice 1kg", "Basmatireis 1kg", "Riz basmati 1kg", "东北大米 5kg", 1.9, 5.9, False),
        ("Chicken breast", "Hähnchenbrust", "Filet de poulet", "鸡胸肉", 5.9, 11.9, True),
    ],
    "cafe": [
        ("Cappuccino", "Cappuccino", "Cappuccino", "卡布奇诺", 2.8, 4.9, False),
        ("Caffe latte", "Milchkaffee", "Café crème", "拿铁咖啡", 3.0, 5.2, False),
        ("Espresso", "Espresso", "Expresso", "意式浓缩", 1.8, 3.2, False),
        ("Croissant", "Croissant", "Croissant", "牛角包", 1.2, 2.9, False),
        ("Blueberry muffin", "Blaubeermuffin", "Muffin myrtille", "蓝莓松饼", 2.2, 3.9, False),
        ("Club sandwich", "Belegtes Brötchen", "Sandwich jambon-beurre", "三明治", 3.9, 8.5, False),
        ("Earl Grey tea", "Tee Earl Grey", "Thé Earl Grey", "伯爵红茶", 2.2, 3.8, False),
        ("Cheesecake", "Käsekuchen", "Tarte au citron", "芝士蛋糕", 3.2, 5.5, False),
        ("Hot chocolate", "Heiße Schokolade", "Chocolat chaud", "热巧克力", 2.8, 4.5, False),
    ],
    "restaurant": [
        ("Cheeseburger", "Cheeseburger", "Burger maison", "宫保鸡丁", 9.5, 16.9, False),
        ("Caesar salad", "Caesar Salat", "Salade César", "凉拌黄瓜", 7.5, 13.5, False),
        ("Pasta carbonara", "Spaghetti Carbonara", "Pâtes carbonara", "红烧肉", 10.5, 17.5, False),
        ("Steak frites", "Rumpsteak mit Pommes", "Steak frites", "水煮鱼", 17.0, 29.0, False),
        ("Soup of the day", "Tagessuppe", "Soupe du jour", "酸辣汤", 4.5, 8.5, False),
        ("Pizza Margherita", "Pizza Margherita", "Pizza Margherita", "扬州炒饭", 8.0, 13.5, False),
        ("Sparkling water", "Mineralwasser 0,5L", "Eau pétillante", "米饭", 2.5, 4.5, False),
        ("Glass of red wine", "Glas Rotwein 0,2L", "Verre de vin rouge", "青岛啤酒", 5.0, 9.5, False),
        ("Draft beer", "Pils 0,4L", "Bière pression", "鲜榨橙汁", 3.8, 7.0, False),
        ("Tiramisu", "Tiramisu", "Tiramisu", "麻婆豆腐", 5.0, 8.5, False),
    ],
    "hardware": [
        ("Wood screws 4x40 200pc", "Spanplattenschr. 4x40", "Vis à bois 4x40 x200", "木螺丝 4x40", 3.5, 8.9, False),
        ("Wall paint white 2.5L", "Wandfarbe weiß 2,5L", "Peinture blanche 2,5L", "白色乳胶漆 2.5L", 14.9, 39.0, False),
        ("Paint roller 25cm", "Farbroller 25cm", "Rouleau peinture 25cm", "油漆滚筒", 4.5, 12.9, False),
        ("Drill bit set HSS", "HSS-Bohrerset 19tlg", "Coffret forets HSS", "麻花钻头套装", 9.9, 29.9, False),
        ("Duct tape 50m", "Gewebeband 50m", "Ruban adhésif 50m", "布基胶带", 3.9, 9.9, False),
        ("LED bulb E27 9W", "LED-Lampe E27 9W", "Ampoule LED E27 9W", "LED灯泡 E27", 2.5, 7.9, False),
        ("Extension cord 5m", "Verlängerung 5m", "Rallonge 5m", "插线板 5米", 7.9, 19.9, False),
        ("Work gloves", "Arbeitshandschuhe", "Gants de travail", "劳保手套", 2.9, 9.9, False),
        ("Cable ties 100pc", "Kabelbinder 100St", "Colliers serrage x100", "扎带 100条", 1.9, 5.9, False),
    ],
    "pharmacy": [
        ("Ibuprofen 400mg 20ct", "Ibuprofen 400mg 20St", "Ibuprofène 400mg", "布洛芬缓释胶囊", 2.9, 7.9, False),
        ("Vitamin C 1000mg", "Vitamin C 1000mg", "Vitamine C 1000mg", "维生素C片", 4.9, 12.9, False),
        ("Adhesive bandages", "Pflaster Strips", "Pansements", "创可贴", 1.9, 5.5, False),
        ("Hand cream 75ml", "Handcreme 75ml", "Crème mains 75ml", "护手霜", 2.9, 8.9, False),
        ("Toothpaste", "Zahnpasta 75ml", "Dentifrice", "牙膏", 1.5, 4.9, False),
        ("Sunscreen SPF50", "Sonnenspray LSF50", "Crème solaire SPF50", "防晒霜", 7.9, 18.9, False),
        ("Cough syrup", "Hustensaft 100ml", "Sirop toux", "止咳糖浆", 5.9, 11.9, False),
        ("Nasal spray", "Nasenspray", "Spray nasal", "鼻喷剂", 3.5, 7.5, False),
    ],
    "fuel": [
        ("Diesel", "Diesel", "Gazole", "0号柴油", 1.45, 2.05, True),
        ("Unleaded 95", "Super E5", "SP95-E10", "92号汽油", 1.55, 2.15, True),
        ("Coffee to go", "Kaffee to go", "Café à emporter", "瓶装咖啡", 1.9, 3.9, False),
        ("Chocolate bar", "Schokoriegel", "Barre chocolatée", "巧克力棒", 0.99, 2.2, False),
        ("Windscreen wash 3L", "Scheibenklar 3L", "Lave-glace 3L", "玻璃水", 3.5, 7.9, False),
        ("Sandwich", "Sandwich", "Sandwich", "三明治", 2.9, 5.9, False),
    ],
}
STORE_NAMES = {
    "en": {"grocery": ["{w} Market", "{w} Grocers", "{w} Foods"], "cafe": ["{w} Coffee", "{w} Café", "The {w} Bean"],
           "restaurant": ["{w} Kitchen", "{w} Diner", "The {w} Tavern", "{w} Bistro"],
           "hardware": ["{w} Hardware", "{w} Home & Garden"], "pharmacy": ["{w} Pharmacy", "{w} Chemist"],
           "fuel": ["{w} Fuel Stop", "{w} Gas & Go"]},
    "de": {"grocery": ["{w} Markt", "Frischemarkt {w}", "{w} Feinkost"], "cafe": ["Café {w}", "Bäckerei {l}", "Kaffeehaus {w}"],
           "restaurant": ["Gasthaus {w}", "Restaurant {w}", "Trattoria {w}", "Brauhaus {w}"],
           "hardware": ["Baumarkt {w}", "{l} Eisenwaren"], "pharmacy": ["{w}-Apotheke", "Apotheke am {w}"],
           "fuel": ["Tankstelle {l}", "{w} Tankstelle"]},
    "fr": {"grocery": ["Épicerie {w}", "Marché {w}", "Supérette {w}"], "cafe": ["Café {w}", "Boulangerie {l}"],
           "restaurant": ["Brasserie {w}", "Le {w}", "Bistrot {w}"], "hardware": ["Quincaillerie {l}", "Bricolage {w}"],
           "pharmacy": ["Pharmacie {w}", "Pharmacie du {w}"], "fuel": ["Station {w}", "Relais {w}"]},
    "zh": {"grocery": ["{w}超市", "{w}便利店", "{w}生鲜"], "cafe": ["{w}咖啡", "{w}面包坊"],
           "restaurant": ["{w}餐厅", "{w}小馆", "{w}酒家"], "hardware": ["{w}五金店", "{w}建材"],
           "pharmacy": ["{w}大药房", "{w}药店"], "fuel": ["{w}加油站"]},
}
STORE_WORDS = {
    "en": ["Sunrise", "Maple", "Harbor", "Golden", "Riverside", "Urban", "Oak Tree", "Blue Door", "Corner", "Hilltop",
           "Village", "Greenway", "Liberty", "Union Street"],
    "de": ["Lindenhof", "Sonnenschein", "Nordstern", "Marktplatz", "Rosengarten", "Stadtpark", "Bergblick",
           "Mühlbach", "Rathaus", "Alte Post"],
    "fr": ["Central", "de la Gare", "du Marché", "des Lilas", "Saint-Michel", "du Port", "Le Petit Zinc",
           "Bellevue", "des Arts", "Voltaire"],
    "zh": ["好又多", "万家", "百姓", "阳光", "金桥", "福满", "鑫鑫", "老街", "同心", "欣悦"],
}
RECEIPT_LABELS = {
    "en": dict(subtotal="SUBTOTAL", tax="TAX {r}%", tip="TIP", total="TOTAL", cash="CASH", change="CHANGE",
               card="CARD", vat_incl="VAT {r}% incl.", thanks=["THANK YOU!", "Thank you for shopping with us",
               "Please come again"], items="ITEMS", receipt="RECEIPT", cashier="Cashier", table="Table",
               guests="Guests", tax_id="VAT No.", tel="Tel", qty_x="{q} @ {p}", kg="{q} kg @ {p}/kg",
               voucher="GIFT CARD", coupon="COUPON", auth="AUTH CODE", store="Store"),
    "de": dict(subtotal="ZWISCHENSUMME", tax="MwSt {r}%", tip="Trinkgeld", total="SUMME", cash="BAR",
               change="Rückgeld", card="EC-Karte", vat_incl="enth. MwSt {r}%", thanks=["Vielen Dank für Ihren Einkauf!",
               "Danke und bis bald", "Bitte Bon aufbewahren"], items="Artikel", receipt="Kassenbon",
               cashier="Kasse", table="Tisch", guests="Gäste", tax_id="St-Nr.", tel="Tel.", qty_x="{q} x {p}",
               kg="{q} kg x {p} EUR/kg", voucher="Gutschein", coupon="Coupon", auth="Beleg-Nr.", store="Filiale"),
    "fr": dict(subtotal="SOUS-TOTAL", tax="TVA {r}%", tip="Pourboire", total="TOTAL TTC", cash="ESPECES",
               change="RENDU", card="CB", vat_incl="dont TVA {r}%", thanks=["Merci de votre visite", "A bientôt !",
               "Merci et bonne journée"], items="Articles", receipt="Ticket", cashier="Caisse", table="Table",
               guests="Couverts", tax_id="SIRET", tel="Tél", qty_x="{q} x {p}", kg="{q} kg x {p} €/kg",
               voucher="Bon d'achat", coupon="Bon de réduction", auth="Autorisation", store="Magasin"),
    "zh": dict(subtotal="小计", tax="税额 {r}%", tip="小费", total="合计", cash="现金", change="找零", card="银行卡",
               vat_incl="含税 {r}%", thanks=["谢谢惠顾，欢迎再次光临", "谢谢惠顾", "请妥善保管小票"], items="件数",
               receipt="购物小票", cashier="收银员", table="桌号", guests="人数", tax_id="税号", tel="电话",
               qty_x="{q} x {p}", kg="{q}kg x {p}/kg", voucher="购物卡", coupon="优惠券", auth="流水号",
               store="门店"),
}


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


@dataclass(frozen=True)
class RFonts:
    reg: Any
    bold: Any
    big: Any
    size: int
    cjk: bool
    mono: bool


@functools.lru_cache(maxsize=None)
def _font_files() -> dict[str, str | None]:
    """Fonts Pillow can use here: mono/sans TrueType files and a CJK face (None if absent)."""
    found: dict[str, str | None] = {"mono": None, "mono_bold": None, "sans": None, "sans_bold": None, "cjk": None}
    roots = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts"]
    files = []
    for r in roots:
        if r.is_dir():
            files += sorted(str(p) for p in r.rglob("*") if p.suffix.lower() in (".ttf", ".otf", ".ttc"))
    by_name = {Path(f).name.lower(): f for f in files}
    for key, names in {
        "mono": ["dejavusansmono.ttf", "liberationmono-regular.ttf", "freemono.ttf", "notosansmono-regular.ttf"],
        "mono_bold": ["dejavusansmono-bold.ttf", "liberationmono-bold.ttf", "freemonobold.ttf", "notosansmono-bold.ttf"],
        "sans": ["dejavusanscondensed.ttf", "dejavusans.ttf", "liberationsans-regular.ttf"],
        "sans_bold": ["dejavusanscondensed-bold.ttf", "dejavusans-bold.ttf", "liberationsans-bold.ttf"],
    }.items():
        for n in names:
            if n in by_name:
                found[key] = by_name[n]
                break
    cjk = [f for f in files if any(k in Path(f).name.lower() for k in ("notosanscjk", "notoserifcjk", "wqy", "droidsansfallback", "sourcehansans", "ukai", "uming"))]
    if not cjk and shutil.which("fc-list"):
        try:
            out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
            cjk = sorted(line.split(":")[0].strip() for line in out.splitlines() if line.strip())
        except (OSError, subprocess.SubprocessError):
            cjk = []
    found["cjk"] = cjk[0] if cjk else None
    return found


@functools.lru_cache(maxsize=None)
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
        return ImageFont.truetype(io.BytesIO(b), size)
    path = _font_files().get(kind) or _font_files().get(kind.replace("_bold", ""))
    if path:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _receipt_fonts(rng: random.Random, width: int, cjk: bool) -> RFonts:
    if cjk:
        size = 20 if width <= 400 else rng.choice([22, 24])
        return RFonts(_pil_font("cjk", size), _pil_font("cjk", size), _pil_font("cjk", int(size * 1.45)), size, True, False)
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


def _receipt_context(rng: random.Random, fonts: RFonts, width: int, loc: Loc) -> RecCtx:
    lang = loc.lang
    lab = RECEIPT_LABELS[lang]
    store = rng.choices(list(RECEIPT_ITEMS), weights=[5, 3, 3, 2, 2, 1])[0]
    tmpl = rng.choice(STORE_NAMES[lang][store])
    merchant = tmpl.format(w=rng.choice(STORE_WORDS[lang]), l=_person(rng, lang).split()[-1] if lang != "zh" else "")
    if lang == "en" and rng.random() < 0.5:
        merchant = merchant.upper()
    inner = width - 16
    merchant = _fit(fonts.big, merchant, inner)
    address = _address(rng, loc)
    address = [_fit(fonts.reg, a, inner) for a in address]
    address = [a for a in address if a]
    when = dt.date(2021, 1, 1) + dt.timedelta(days=rng.randint(0, 5 * 365))
    hour = rng.choice([7, 8, 9, 10, 11, 12, 12, 13, 13, 14, 15, 16, 17, 18, 18, 19, 19, 20, 21])
    t = dt.time(hour, rng.randint(0, 59), rng.randint(0, 59) if rng.random() < 0.5 else 0)
    has_time = rng.random() < 0.88
    if has_time:
        if loc.code == "en-US" and rng.random() < 0.5:
            h12 = t.hour % 12 or 12
            time_str = f"{h12}:{t.minute:02d}{':%02d' % t.second if t.second else ''} {'PM' if t.hour >= 12 else 'AM'}"
        else:
            time_str = f"{t.hour:02d}:{t.minute:02d}" + (f":{t.second:02d}" if t.second else "")
    else:
        t, time_str = None, ""
    date_str = fmt_date(when, rng.choice(loc.rec_dates), lang)
    # currency printing
    code = loc.currency
    if lang == "zh":
        sym = rng.choice(["¥", "￥", "RMB "])
        fmt = NumFmt(".", ",", sym.strip(), True, sym.endswith(" "))
    elif loc.code == "en-US":
        fmt = NumFmt(".", ",", "$", True, False)
    elif loc.code == "en-GB":
        fmt = NumFmt(".", ",", "£", True, False)
    elif loc.code == "de-CH":
        fmt = NumFmt(".", "'", "CHF", True, True)
    else:
        fmt = NumFmt(",", ".", rng.choice(["EUR", "€"]), False, True)
    upper = lang != "zh" and rng.random() < 0.55
    qty_style = "table" if lang == "zh" else rng.choice(["sub", "sub", "inline", "none"])
    if store == "restaurant" and lang != "zh":
        qty_style = rng.choice(["inline", "inline", "none"])
    cat = RECEIPT_ITEMS[store]
    li = LANG_IDX[lang]
    n = rng.choice([1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 26]) if store != "fuel" else rng.randint(1, 3)
    if store != "grocery":
        n = min(n, len(cat) + 2)
    items: list[RItem] = []
    amount_w = fonts.reg.getlength(" " + fmt.num(Decimal("9999.99")) + " A")
    name_w = inner - amount_w - (fonts.reg.getlength("00 ") if qty_style == "inline" else 0)
    usd = loc.currency in ("USD", "CHF")
    scale = Decimal("4.5") if lang == "zh" else (Decimal("1.15") if usd else Decimal(1))
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
        unit = Decimal(str(round(rng.uniform(it[4], it[5]), 3 if fuel else 2)))
        if not fuel:
            unit = q2(unit * scale)
            if lang == "zh":
                unit = unit.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP).quantize(CENT)
        elif lang == "zh":
            unit = (unit * scale).quantize(Decimal("0.01"))
        unit = prices.setdefault(it[0], unit)  # same article, same price
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
        amt = -min(q2(base * Decimal("0.1")), Decimal(rng.choice(["1.00", "2.00", "3.00", "5.00"])) * scale).quantize(CENT)
        label = {"en": "Coupon", "de": "Rabatt", "fr": "Remise fidélité", "zh": "会员优惠"}[lang]
        if upper:
            label = label.upper()
        items.append(RItem(label, Decimal(1), False, amt, amt, False))
    items_sum = sum((i.amount for i in items), Decimal(0))
    # taxes
    tip = None
    tax_lines: list[tuple[str, Decimal]] = []
    if loc.code == "en-US":
        style = "us"
        rate = rng.choice(["0", "6", "6.25", "7", "8.25", "8.875", "9.5"]) if store != "grocery" else rng.choice(["0", "0", "2.5", "6"])
        subtotal = items_sum
        tax = q2(subtotal * Decimal(rate) / 100)
        printed_tax = rate != "0" or rng.random() < 0.5
        if printed_tax:
            tax_lines = [(rate, tax)]
        if store in ("restaurant", "cafe") and rng.random() < 0.55:
            tip = q2(subtotal * Decimal(rng.choice([10, 15, 18, 20, 22])) / 100)
        total = subtotal + tax + (tip or 0)
        tax_val: Decimal | None = tax if printed_tax else None
        if not printed_tax:
            total = subtotal + (tip or 0)
        subtotal_val: Decimal | None = subtotal
    elif lang == "zh":
        style = "cn"
        subtotal_val = items_sum if rng.random() < 0.4 else None
        tax_val = None
        total = items_sum
    else:
        style = "vat"
        rates = list(loc.rates[:2])
        by: dict[str, Decimal] = {}
        for it in items:
            r = rates[0] if (store in ("hardware", "fuel", "pharmacy") or rng.random() < 0.4 or len(rates) == 1) else rates[1]
            if store == "grocery" and loc.lang in ("de", "fr") and rng.random() < 0.75:
                r = rates[1]
            it.tax_class = "A" if r == rates[0] else "B"
            by[r] = by.get(r, Decimal(0)) + it.amount
        for r in rates:
            if r in by:
                tax_lines.append((r, q2(by[r] * Decimal(r) / (100 + Decimal(r)))))
        tax_val = sum((x[1] for x in tax_lines), Decimal(0)) if tax_lines and rng.random() < 0.9 else None
        if tax_val is None:
            tax_lines = []
        subtotal_val = None
        total = items_sum
        if store in ("restaurant", "cafe") and rng.random() < 0.25:
            tip = Decimal(rng.choice(["0.50", "1.00", "1.50", "2.00", "3.00", "5.00"]))
    if style == "vat" and tip is not None:
        total = items_sum + tip
        subtotal_val = items_sum
        # Receipt.subtotal + tax + tip must equal total, and VAT is already inside the
        # item prices here: print no VAT breakdown, so tax is not printed (null).
        tax_val = None
        tax_lines = []
    # payment
    pay_opts = {
        "en": [("card", "VISA ****{d4}"), ("card", "MASTERCARD ****{d4}"), ("cash", "CASH"), ("mobile", "APPLE PAY"),
               ("mobile", "GOOGLE PAY"), ("voucher", "GIFT CARD")],
        "de": [("card", "EC-Karte / girocard"), ("card", "VISA ****{d4}"), ("cash", "BAR"), ("mobile", "Apple Pay"),
               ("voucher", "Gutschein")],
        "fr": [("card", "CB SANS CONTACT"), ("card", "CARTE BANCAIRE"), ("cash", "ESPECES"), ("mobile", "APPLE PAY"),
               ("voucher", "TICKET RESTAURANT")],
        "zh": [("mobile", "微信支付"), ("mobile", "支付宝"), ("cash", "现金"), ("card", "银联卡 ****{d4}"), ("voucher", "购物卡")],
    }[lang]
    if rng.random() < 0.08:
        payment, pay_label = None, ""
    else:
        payment, pay_label = rng.choices(pay_opts, weights=[4, 2, 3, 2, 1][: len(pay_opts)] + [1] * (len(pay_opts) - 5))[0]
        pay_label = pay_label.format(d4=_digits(rng, 4))
    cash_given = None
    if payment == "cash":
        step = Decimal(rng.choice(["5", "10", "20", "50"])) * (Decimal(10) if lang == "zh" else 1)
        cash_given = (total / step).to_integral_value(rounding="ROUND_CEILING") * step
        if cash_given == total and rng.random() < 0.5:
            cash_given += step
        cash_given = cash_given.quantize(CENT)
    extra = []
    if rng.random() < 0.6:
        extra.append(f"{lab['cashier']}: {rng.randint(1, 12)}" + (f"  #{_digits(rng, 4)}" if rng.random() < 0.5 else ""))
    tax_id = None
    if rng.random() < 0.55:
        tax_id = _tax_id(rng, loc) if lang != "fr" else _digits(rng, 14)
    return RecCtx(
        loc=loc, lab=lab, fmt=fmt, store=store, merchant=merchant, address=address, phone=_phone(rng, loc),
        tax_id=tax_id, date=when, date_str=date_str, time=t, time_str=time_str, items=items, style=style,
        subtotal=subtotal_val, tax=tax_val, tax_lines=tax_lines, tip=tip, total=total, payment=payment,
        pay_label=pay_label, cash_given=cash_given, qty_style=qty_style, upper=upper, currency=code, extra_top=extra,
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


def _receipt_ops(c: RecCtx, rng: random.Random) -> list[tuple]:
    """Printable lines: (op, *args).  ops: logo, center, big, lr, left, sep, blank, barcode, qr."""
    lab, fmt = c.lab, c.fmt
    up = (lambda s: s.upper()) if c.upper else (lambda s: s)
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
    cur_mark = fmt.sym if rng.random() < 0.5 else ""
    if c.style == "cn":
        ops.append(("cols4", "品名", "数量", "单价", "金额", True))
    elif cur_mark and c.style != "us":
        ops.append(("lr", "", fmt.sym, False))
    for it in c.items:
        amt = fmt.num(it.amount) + (f" {it.tax_class}" if c.style == "vat" and c.loc.lang == "de" and it.tax_class else "")
        if c.style == "cn" and it.amount < 0:
            ops.append(("lr", it.desc, fmt.num(it.amount), False))
            continue
        if c.style == "cn":
            ops.append(("left", it.desc))
            ops.append(("cols4", "", fmt.qty(it.qty), fmt.num(it.unit, 3 if it.unit.as_tuple().exponent < -2 else 2),
                        fmt.num(it.amount), False))
            continue
        if c.qty_style == "inline" and not it.weighed and it.unit == it.amount / it.qty and it.amount > 0:
            ops.append(("lr", f"{fmt.qty(it.qty)} {it.desc}" if it.qty_printed else it.desc, amt, False))
            continue
        ops.append(("lr", it.desc, amt, False))
        if it.weighed:
            places = 3 if it.unit.as_tuple().exponent < -2 else 2
            if c.store == "fuel":
                ops.append(("left", f"  {fmt.qty(it.qty)} L x {fmt.num(it.unit, places)} /L"))
            else:
                ops.append(("left", "  " + lab["kg"].format(q=fmt.qty(it.qty), p=fmt.num(it.unit, places))))
        elif it.qty_printed and c.qty_style in ("sub", "inline"):
            ops.append(("left", "  " + lab["qty_x"].format(q=fmt.qty(it.qty), p=fmt.num(it.unit))))
    ops.append(("sep", "-"))
    if c.style == "cn":
        ops.append(("lr", f"{lab['items']}: {len([i for i in c.items if i.amount > 0])}", "", False))
        if c.subtotal is not None:
            ops.append(("lr", lab["subtotal"], fmt.num(c.subtotal), False))
        ops.append(("lrbig", lab["total"], fmt.money(c.total)))
    elif c.style == "us":
        ops.append(("lr", lab["subtotal"], fmt.num(c.subtotal), False))
        for r, v in c.tax_lines:
            ops.append(("lr", lab["tax"].format(r=fmt_rate(fmt, r)), fmt.num(v), False))
        if c.tip is not None:
            ops.append(("lr", lab["tip"], fmt.num(c.tip), False))
        ops.append(("lrbig", lab["total"], fmt.money(c.total)))
    else:
        if c.tip is not None:
            ops.append(("lr", lab["subtotal"], fmt.num(c.subtotal), False))
            ops.append(("lr", lab["tip"], fmt.num(c.tip), False))
        ops.append(("lrbig", up(lab["total"]) if c.loc.lang != "fr" else lab["total"], fmt.money(c.total)))
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
    r = rng.random()
    if c.style == "cn" or r < 0.25:
        ops.append(("qr",))
    elif r < 0.65:
        ops.append(("barcode",))
    ops.append(("center", f"{lab['store']} {rng.randint(100, 9999)}  {_digits(rng, 6)}"))
    return ops


def render_thermal(c: RecCtx, ops: list[tuple], fonts: RFonts, width: int, rng: random.Random) -> Image.Image:
    """Draw the receipt ops onto a narrow white strip (mode L)."""
    m = 8 if width <= 400 else 14
    lh = int(fonts.size * (1.45 if fonts.cjk else 1.3))
    big_h = int(fonts.size * 2.1)
    heights = {"logo": 84, "big": big_h, "blank": lh // 2, "barcode": 80, "qr": 130, "lrbig": big_h, "sep": lh}
    total_h = 30 + sum(heights.get(op[0], lh) for op in ops) + 40
    img = Image.new("L", (width, total_h), 255)
    d = ImageDraw.Draw(img)
    ink = rng.randint(0, 60)
    y = 24
    inner = width - 2 * m

    def center(text: str, font: Any, yy: int) -> None:
        d.text(((width - font.getlength(text)) / 2, yy), text, font=font, fill=ink)

    for op in ops:
        kind = op[0]
        if kind == "logo":
            cx = width // 2
            if op[1] == "circle":
                d.ellipse((cx - 34, y + 4, cx + 34, y + 72), outline=ink, width=5)
                ini = _initials(c.merchant)[:2]
                f = fonts.big
                d.text((cx - f.getlength(ini) / 2, y + 38 - fonts.size * 0.8), ini, font=f, fill=ink)
            elif op[1] == "box":
                d.rectangle((m + 10, y + 8, width - m - 10, y + 70), fill=ink)
                f = fonts.big
                t = _fit(f, c.merchant, inner - 30)
                d.text(((width - f.getlength(t)) / 2, y + 39 - fonts.size * 0.8), t, font=f, fill=255)
            else:
                for k in range(5):
                    d.rectangle((cx - 50 + k * 22, y + 10 + k * 6, cx - 38 + k * 22, y + 72), fill=ink)
        elif kind == "big":
            center(op[1], fonts.big, y)
        elif kind == "center":
            center(_fit(fonts.reg, op[1], inner), fonts.reg, y)
        elif kind == "left":
            d.text((m, y), _fit(fonts.reg, op[1], inner), font=fonts.reg, fill=ink)
        elif kind in ("lr", "lrbig"):
            f = fonts.big if kind == "lrbig" else (fonts.bold if op[3] else fonts.reg)
            left, right = op[1], op[2]
            rw = f.getlength(right)
            if kind == "lrbig" and rw + f.getlength(left) + 10 > inner:
                f = fonts.bold
                rw = f.getlength(right)
            d.text((m, y), _fit(f, left, inner - rw - 6), font=f, fill=ink)
            d.text((width - m - rw, y), right, font=f, fill=ink)
        elif kind == "cols4":
            f = fonts.bold if op[5] else fonts.reg
            xs = [m, m + inner * 0.42, m + inner * 0.70, width - m]
            if op[1]:
                d.text((xs[0], y), op[1], font=f, fill=ink)
            for k, t in enumerate(op[2:5]):
                d.text((xs[k + 1] - f.getlength(t), y), t, font=f, fill=ink)
        elif kind == "sep":
            cw = fonts.reg.getlength(op[1]) or 8
            d.text((m, y), op[1] * int(inner / cw), font=fonts.reg, fill=ink)
        elif kind == "barcode":
            x = m + 20
            while x < width - m - 24:
                bw = rng.choice([2, 2, 3, 4, 6])
                d.rectangle((x, y + 8, x + bw - 1, y + 66), fill=ink)
                x += bw + rng.choice([2, 3, 4])
        elif kind == "qr":
            n, cell = 21, 5
            x0 = (width - n * cell) // 2
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
                        d.rectangle((x0 + a * cell, y + 8 + b * cell, x0 + a * cell + cell - 1, y + 8 + b * cell + cell - 1), fill=ink)
        y += heights.get(kind, lh)
    img = img.crop((0, 0, width, min(total_h, y + 36)))
    return img


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


def _persp_coeffs(dst: list[tuple[float, float]], src: list[tuple[float, float]]) -> list[float]:
    """Coefficients for Image.transform(PERSPECTIVE): maps output (dst) points to input (src) points."""
    A, B = [], []
    for (x, y), (u, v) in zip(dst, src):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        B += [u, v]
    return np.linalg.solve(np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)).tolist()


def photograph(rec: Image.Image, rng: random.Random) -> Image.Image:
    """A phone photo of the receipt on a table: perspective, shadow, uneven light, low contrast, softness, noise."""
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
    photo = _lut(photo, [lambda v, c=c: (v * k + lift) * c for c in cast])
    photo = photo.resize((W, H), Image.Resampling.BICUBIC)
    return _add_noise(photo, rng.uniform(2.5, 6), rng)


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
    img = render_thermal(ctx, ops, fonts, width, rng)
    img = _thermal_finish(img, rng)
    if variant == "png-receipt":
        if rng.random() < 0.35:
            img = img.point(lambda v: 0 if v < 150 else 255).convert("1")
        img.save(path, format="PNG", optimize=False, compress_level=6)
    else:
        photo = photograph(img, rng)
        photo.save(path, format="JPEG", quality=rng.randint(68, 85))
    meta = {"locale": loc.code, "store": ctx.store, "width": width, "style": ctx.style}
    return model, 1, meta


# --------------------------------------------------------------------------------------
# file inspection helpers (used by tests and the benchmark)
# --------------------------------------------------------------------------------------


def count_pages(path: Path) -> int:
    """Pages of a generated file: PDF pages, TIFF frames, 1 for PNG/JPEG."""
    path = Path(path)
    if path.suffix.lower() == ".pdf":
        with pymupdf.open(path) as doc:
            return doc.page_count
    with Image.open(path) as im:
        return getattr(im, "n_frames", 1)


def bench(per_variant: int = 20, seed: int = 0, out_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """Single-process pages/s for each variant."""
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(out_dir or tmp)
        for v in VARIANTS:
            d = base / v
            d.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            docs = generate(d, per_variant, seed=seed, mix={v: 1.0}, kinds=(VARIANTS[v],))
            el = time.perf_counter() - t
            pages = sum(x.pages for x in docs)
            size = sum(x.path.stat().st_size for x in docs)
            results[v] = {"docs": len(docs), "pages": pages, "seconds": round(el, 2),
                          "pages_per_s": round(pages / el, 1), "kb_per_page": round(size / 1024 / pages, 1)}
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.synth", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", type=Path)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default="invoice,receipt")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--samples", action="store_true", help="write the fixed sample set into out_dir")
    ap.add_argument("--bench", type=int, metavar="N", help="benchmark: N documents per variant, 1 process")
    a = ap.parse_args(argv)
    if a.bench:
        for v, r in bench(a.bench, a.seed).items():
            print(f"{v:20s} {r['docs']:4d} docs {r['pages']:4d} pages {r['seconds']:7.2f}s "
                  f"{r['pages_per_s']:7.1f} pages/s {r['kb_per_page']:7.1f} KiB/page")
        return 0
    if a.out_dir is None:
        ap.error("out_dir is required")
    t = time.perf_counter()
    if a.samples:
        docs = write_samples(a.out_dir)
    else:
        docs = generate(a.out_dir, a.count, a.seed, tuple(a.kinds.split(",")), workers=a.workers)
    el = time.perf_counter() - t
    pages = sum(d.pages for d in docs)
    print(f"{len(docs)} documents, {pages} pages in {el:.1f}s ({pages / max(el, 1e-9):.1f} pages/s) -> {a.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
