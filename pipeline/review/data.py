"""What the review page shows, read from an output: the current row of each document (through
:func:`pipeline.evaluate.outcomes.read_outcomes` and :func:`~pipeline.evaluate.outcomes.newest`, the
same reading ``eval`` does), its per-field evidence, and its review flags.

Optional inputs are optional: an output written before the trust layer has no ``needs_review`` /
``review_reasons`` columns (nothing is flagged) and no ``evidence/`` table (no boxes).  Evidence rows
count only when they carry the run_id of the document's current row: boxes from an earlier run of a
document could point at values it no longer holds.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import store
from pipeline.columns import RESERVED
from pipeline.errors import CouldNotStart
from pipeline.evaluate.errors import EvalError
from pipeline.evaluate.outcomes import Outcome, newest, read_outcomes
from pipeline.fields import leaf_values

log = logging.getLogger(__name__)

TRUST_COLUMNS = frozenset({"needs_review", "review_reasons"})  # on results rows, beside the schema's fields
EVIDENCE = "evidence"
Box = tuple[float, float, float, float]  # x0, y0, x1, y1: fractions of the upright page


@dataclass
class FieldRow:
    """One leaf value of a result, with where it was found and why it is flagged."""

    path: str  # pipeline.fields convention: vendor.name, line_items[3].amount
    value: str | None  # None: the document does not state it (a null leaf)
    confidence: float | None = None
    grounded: bool | None = None  # None: no evidence row for this field
    page: int | None = None  # 1-based
    box: Box | None = None
    source: str | None = None  # text_layer | ocr
    reasons: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


@dataclass
class FailureInfo:
    stage: str
    error_type: str
    message: str
    errors: list[str]
    raw_output: str | None
    retryable: bool | None


@dataclass
class DocView:
    """One document as the reviewer sees it: a result (with fields) or a failure."""

    doc_id: str
    source_path: str
    status: str  # "failed" | "flagged" | "ok"
    schema_name: str | None
    model: str | None
    run_id: str | None
    run_key: str | None
    doc_kind: str | None
    page_count: int | None
    pages_used: int | None
    when: str | None  # extracted_at / failed_at, ISO
    warnings: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # every review reason of the row
    fields: list[FieldRow] = field(default_factory=list)
    failure: FailureInfo | None = None

    @property
    def unplaced_reasons(self) -> list[str]:
        """Reasons naming no field shown in the table (a document-level reason, or a field path not found)."""
        placed = {r for f in self.fields for r in f.reasons}
        return [r for r in self.reasons if r not in placed]


@dataclass
class Review:
    docs: list[DocView]  # in the order shown: failed, flagged, ok; by source path within each
    total: int  # documents in the output (before --only-flagged)
    flagged: int
    failed: int
    has_evidence: bool
    has_flags: bool  # the results carry review columns (an output from before the trust layer does not)
    skipped: list[str] = field(default_factory=list)  # evidence parts that could not be read, with why


def reason_field(reason: str) -> str | None:
    """The field path a review reason names: the text before its first ``": "``."""
    head, sep, _ = reason.partition(": ")
    return head.strip() if sep and head.strip() else None


def _covers(path: str, leaf: str) -> bool:
    """Whether a reason about ``path`` concerns ``leaf`` (the field itself, or a leaf inside it)."""
    return leaf == path or leaf.startswith(path + ".") or leaf.startswith(path + "[")


def show_value(value: Any) -> str | None:
    """A leaf as the reviewer reads it: ISO dates, decimals without the column's padding beyond cents."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        exp = value.as_tuple().exponent
        if isinstance(exp, int) and exp < -2:
            value = value.normalize()
            exp = value.as_tuple().exponent
            if isinstance(exp, int) and exp > 0:
                value = value.quantize(Decimal(1))
        return format(value, "f")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _when(value: Any) -> str | None:
    """A row's timestamp as people read it: UTC, to the second."""
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC) if value.tzinfo is not None else value
        return value.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if value.tzinfo is not None else "")
    return None if value is None else str(value)


def read_evidence(out_dir: Path, skipped: list[str]) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], bool]:
    """Evidence rows by (doc_id, run_id), and whether the output has an evidence table at all.  A part
    that cannot be read costs its boxes, not the report: it is appended, with the reason, to ``skipped``."""
    parts = store.table_parts(out_dir, EVIDENCE)
    by_doc: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for part in parts:
        try:
            rows = store.read_part(part).to_pylist()
        except (pa.ArrowInvalid, OSError) as e:
            log.warning("evidence part %s skipped: %s", part, e)
            skipped.append(f"{part}: {e}")
            continue
        for r in rows:
            if r.get("doc_id") and r.get("field"):
                by_doc.setdefault((r["doc_id"], r.get("run_id") or ""), []).append(r)
    return by_doc, bool(parts)


def _box(ev: dict[str, Any]) -> Box | None:
    coords = [ev.get(k) for k in ("x0", "y0", "x1", "y1")]
    if ev.get("page") is None or not all(isinstance(c, int | float) and math.isfinite(c) for c in coords):
        return None
    x0, y0, x1, y1 = (min(max(float(c), 0.0), 1.0) for c in coords)  # type: ignore[arg-type]
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _field_rows(row: dict[str, Any], evidence: Sequence[dict[str, Any]], reasons: list[str]) -> list[FieldRow]:
    values = {k: v for k, v in row.items() if k not in RESERVED and k not in TRUST_COLUMNS}
    rows = [FieldRow(path, show_value(v)) for path, v in leaf_values(values)]
    by_path = {f.path: f for f in rows}
    for ev in evidence:
        f = by_path.get(ev["field"])
        if f is None:  # evidence for a leaf the row does not hold (e.g. an older column layout)
            f = by_path[ev["field"]] = FieldRow(ev["field"], ev.get("value"))
            rows.append(f)
        f.confidence = ev.get("confidence")
        f.grounded = ev.get("grounded")
        f.box = _box(ev)
        f.page = ev.get("page")
        f.source = ev.get("source")
    for reason in reasons:
        path = reason_field(reason)
        if path is None:
            continue
        for f in rows:
            if _covers(path, f.path):
                f.reasons.append(reason)
    return rows


def _result_view(row: dict[str, Any], evidence: dict[tuple[str, str], list[dict[str, Any]]]) -> DocView:
    reasons = [str(r) for r in (row.get("review_reasons") or [])]
    needs = row.get("needs_review")
    flagged = bool(needs) if needs is not None else bool(reasons)
    ev = evidence.get((row["doc_id"], row.get("run_id") or ""), [])
    return DocView(
        **_row_view(row),
        status="flagged" if flagged else "ok",
        pages_used=row.get("pages_used"),
        when=_when(row.get("extracted_at")),
        reasons=reasons,
        fields=_field_rows(row, ev, reasons),
    )


def _row_view(row: dict[str, Any]) -> dict[str, Any]:
    """What a results row and a failures row show alike."""
    return dict(
        doc_id=row["doc_id"],
        source_path=row.get("source_path") or "",
        schema_name=row.get("schema_name"),
        model=row.get("model"),
        run_id=row.get("run_id"),
        run_key=row.get("run_key"),
        doc_kind=row.get("doc_kind"),
        page_count=row.get("page_count"),
        warnings=[str(w) for w in (row.get("warnings") or [])],
    )


def _failure_view(row: dict[str, Any]) -> DocView:
    return DocView(
        **_row_view(row),
        status="failed",
        pages_used=None,
        when=_when(row.get("failed_at")),
        failure=FailureInfo(
            stage=str(row.get("stage") or ""),
            error_type=str(row.get("error_type") or ""),
            message=str(row.get("message") or ""),
            errors=[str(e) for e in (row.get("errors") or [])],
            raw_output=row.get("raw_output"),
            retryable=row.get("retryable"),
        ),
    )


ORDER = {"failed": 0, "flagged": 1, "ok": 2}


def load_review(out_dir: Path | str, only_flagged: bool = False) -> Review:
    """The documents of an output as the review page shows them.  ``CouldNotStart`` when ``out_dir``
    is not an output (no ``results/`` or ``failures/`` parts) or a part cannot be read."""
    out = Path(out_dir)
    try:
        current: dict[str, Outcome] = newest(read_outcomes(out, skip=()))
    except EvalError as e:
        raise CouldNotStart(str(e).replace("results directory", "output")) from e
    if not current and not store.table_parts(out, "results") and not store.table_parts(out, "failures"):
        raise CouldNotStart(f"{out} has no results/ or failures/ parts: not a docextract output")
    skipped: list[str] = []
    evidence, has_evidence = read_evidence(out, skipped)
    docs = [_result_view(o.row, evidence) if o.kind == "result" else _failure_view(o.row) for o in current.values()]
    has_flags = any(TRUST_COLUMNS & o.row.keys() for o in current.values() if o.kind == "result")
    counts = {s: sum(1 for d in docs if d.status == s) for s in ORDER}
    total = len(docs)
    if only_flagged:
        docs = [d for d in docs if d.status != "ok"]
    docs.sort(key=lambda d: (ORDER[d.status], d.source_path, d.doc_id))
    return Review(docs, total, counts["flagged"], counts["failed"], has_evidence, has_flags, skipped)
