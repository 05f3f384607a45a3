"""Score a run's output against ground truth: field-level precision, recall and F1.

The engine of ``docextract eval --truth T --results R``::

    report = evaluate(Path("data/samples"), Path("out/invoices"), schema="invoice")
    print(format_table(report))
    write_report(report, Path("eval/2024-06-01.json"))     # or .parquet: one row per field

**Ground truth** ``T`` is one of

* a *documents* directory: next to each document ``x.pdf`` a ``x.truth.json`` holding
  ``{"schema": "invoice", "truth": {...}}`` (or the bare schema dict), and/or a
  ``truth.jsonl`` index (lines with ``file``, ``schema``, ``truth``; ``T`` may also be
  that file).  Truth is matched to result rows by ``doc_id`` = SHA-256 of the
  document's bytes, or by the stem of ``source_path`` when the document is absent;
* an *SROIE* directory: ``*.txt`` / ``*.json`` files each holding one JSON object with
  ``company``, ``date``, ``address``, ``total``; mapped onto the receipt schema's
  ``merchant``, ``date``, ``address``, ``total`` (only those four are scored).  Other
  ``.txt`` files (SROIE's OCR box files) are ignored.

**Results** ``R`` is a run's output directory (``results/*.parquet``,
``failures/*.parquet``).  The newest row per ``doc_id`` counts (parts sort by name,
as in :func:`pipeline.store.reconcile`); rows written under another schema are ignored.

**Scoring.**  Values are normalised first (text: casefold, whitespace collapsed;
dates: parsed from common formats; amounts: ``Decimal``, thousands separators and
decimal commas understood; empty means absent).  Per field and document, a present
prediction equal to a present truth is a TP; a present wrong prediction is an FP *and*,
when truth is present, an FN; a missing prediction of a present truth is an FN.
Failed documents and documents without a row predict nothing: every truth field they
have is an FN.  Item lists (``line_items``, ``items``) are matched one-to-one by an
optimal assignment (most equal fields, ties by description similarity), never by
position; unmatched predicted items are FPs, unmatched truth items FNs.  A ratio with
an empty denominator is 0, except for a field with no counts at all (absent on both
sides everywhere), which scores 1.  ``overall`` is micro-averaged over all fields.
A document is an exact match when every scored field and every item list (as a
multiset) equals the truth after normalisation.

Modules: ``normalize`` (comparable values), ``plan`` (what a schema scores; documents as
normalised views), ``matching`` (one-to-one item assignment), ``truth`` (ground-truth loading),
``outcomes`` (the run's newest row per document, read through :mod:`pipeline.store`),
``scoring`` (counts and :func:`evaluate`), ``stats`` (the report's data), ``report`` (table,
JSON / Parquet files), ``errors``.
"""

from pipeline.evaluate.errors import EvalError, ReportFormatError
from pipeline.evaluate.matching import equal_fields, match_items, max_weight_pairs
from pipeline.evaluate.normalize import norm_text, normalize, parse_amount, parse_date, parse_time
from pipeline.evaluate.outcomes import SKIP_COLUMNS, Outcome, ResultIndex, read_outcomes
from pipeline.evaluate.plan import DocView, Item, Leaf, ListField, Plan, build_plan, empty_view, view
from pipeline.evaluate.report import (
    REPORT_METADATA_KEY,
    REPORT_SUFFIXES,
    format_table,
    read_report,
    report_format,
    write_report,
)
from pipeline.evaluate.scoring import Scorer, choose_schema, evaluate
from pipeline.evaluate.stats import DocResult, EvalReport, FieldStats, ItemStats, prf
from pipeline.evaluate.truth import (
    SROIE_MAP,
    TRUTH_INDEX,
    TRUTH_SUFFIX,
    TruthDoc,
    load_document_truth,
    load_sroie_truth,
    load_truth,
    sha256_file,
)

__all__ = [
    "REPORT_METADATA_KEY",
    "REPORT_SUFFIXES",
    "SKIP_COLUMNS",
    "SROIE_MAP",
    "TRUTH_INDEX",
    "TRUTH_SUFFIX",
    "DocResult",
    "DocView",
    "EvalError",
    "EvalReport",
    "FieldStats",
    "Item",
    "ItemStats",
    "Leaf",
    "ListField",
    "Outcome",
    "Plan",
    "ReportFormatError",
    "ResultIndex",
    "Scorer",
    "TruthDoc",
    "build_plan",
    "choose_schema",
    "empty_view",
    "equal_fields",
    "evaluate",
    "format_table",
    "load_document_truth",
    "load_sroie_truth",
    "load_truth",
    "match_items",
    "max_weight_pairs",
    "norm_text",
    "normalize",
    "parse_amount",
    "parse_date",
    "parse_time",
    "prf",
    "read_outcomes",
    "read_report",
    "report_format",
    "sha256_file",
    "view",
    "write_report",
]
