"""Deterministic synthetic invoices and receipts with exact ground truth (``docextract synth``).

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

Modules: ``batch`` (plan, write documents + truth, samples), ``formats`` (locales,
numbers, dates, labels), ``parties`` (names, addresses, ids), ``invoice_data`` and
``receipt_data`` (the documents' content), ``pdfcanvas`` and ``invoice_pdf`` (invoice
drawing), ``receipt_fonts`` and ``receipt_image`` (thermal slips), ``degrade`` (scans,
phone photos), ``tables`` (the vocabulary in ``data/*.json``).
"""

from pipeline.synth.batch import (
    BAD_SAMPLES,
    DEFAULT_MIX,
    EXTENSIONS,
    SAMPLES_SEED,
    VARIANTS,
    SynthDoc,
    count_pages,
    generate,
    make_document,
    plan_variants,
    write_bad_samples,
    write_samples,
)
from pipeline.synth.degrade import photograph, scan_degrade
from pipeline.synth.formats import (
    CENT,
    FOREIGN,
    INV_LOCALE_WEIGHTS,
    LABELS,
    LOCALES,
    MONTHS,
    REC_LOCALE_WEIGHTS,
    RECEIPT_LABELS,
    Loc,
    NumFmt,
    fmt_date,
    fmt_rate,
    q2,
)
from pipeline.synth.invoice_data import CATALOG, DETAILS, LANG_IDX, UNITS, InvCtx, Line
from pipeline.synth.invoice_pdf import InvoiceDrawer
from pipeline.synth.invoice_style import ACCENTS, InvStyle
from pipeline.synth.parties import CITIES, NAME_PARTS, TRANSLIT
from pipeline.synth.pdfcanvas import FAMILIES, PdfCanvas
from pipeline.synth.receipt_data import RECEIPT_ITEMS, STORE_NAMES, STORE_WORDS, RecCtx, RItem
from pipeline.synth.receipt_fonts import RFonts, cjk_receipts_available
from pipeline.synth.receipt_image import render_thermal

__all__ = [
    "ACCENTS", "BAD_SAMPLES", "CATALOG", "CENT", "CITIES", "DEFAULT_MIX", "DETAILS", "EXTENSIONS", "FAMILIES",
    "FOREIGN", "INV_LOCALE_WEIGHTS", "LABELS", "LANG_IDX", "LOCALES", "MONTHS", "NAME_PARTS", "RECEIPT_ITEMS",
    "RECEIPT_LABELS", "REC_LOCALE_WEIGHTS", "SAMPLES_SEED", "STORE_NAMES", "STORE_WORDS", "TRANSLIT", "UNITS",
    "VARIANTS", "InvCtx", "InvStyle", "InvoiceDrawer", "Line", "Loc", "NumFmt", "PdfCanvas", "RFonts", "RItem",
    "RecCtx", "SynthDoc", "cjk_receipts_available", "count_pages", "fmt_date", "fmt_rate", "generate", "make_document",
    "photograph", "plan_variants", "q2", "render_thermal", "scan_degrade", "write_bad_samples", "write_samples",
]
