"""What an evaluation reports: per-field counts and scores, item-list counts, per-document outcomes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """(precision, recall, F1); an empty denominator gives 0, no counts at all give 1."""
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, 2 * tp / (2 * tp + fp + fn)


@dataclass
class FieldStats:
    """Counts and scores of one field (``total``, ``vendor.name``, ``line_items.amount``)."""

    field: str
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    kind: str = "scalar"  # "scalar", "item" (a field of list items) or "overall"

    @classmethod
    def from_counts(cls, name: str, tp: int, fp: int, fn: int, kind: str = "scalar") -> FieldStats:
        return cls(name, tp, fp, fn, *prf(tp, fp, fn), kind=kind)

    @property
    def support(self) -> int:
        """Number of present truth values."""
        return self.tp + self.fn


@dataclass
class ItemStats:
    """Item-level counts of one item list; precision/recall/F1 count exactly matched items."""

    field: str
    truth_items: int
    predicted_items: int
    matched: int  # one-to-one pairs with at least one equal field
    exact: int  # pairs with every field equal
    precision: float
    recall: float
    f1: float


@dataclass
class DocResult:
    """How one truth document fared."""

    truth_file: str
    doc_id: str | None
    status: str  # "matched", "failed", "missing"
    exact: bool
    error_type: str | None = None
    mismatched: list[str] = field(default_factory=list)  # fields (and item lists) not equal to truth


@dataclass
class EvalReport:
    """Everything ``docextract eval`` reports; ``write_report`` / ``read_report`` persist it."""

    schema: str
    mode: str  # "documents" or "sroie"
    truth_path: str
    results_path: str
    truth_documents: int
    matched: int
    missing: int
    failed: int
    exact_matches: int
    exact_match_rate: float
    overall: FieldStats
    fields: list[FieldStats]
    items: list[ItemStats] = field(default_factory=list)
    failures_by_type: dict[str, int] = field(default_factory=dict)
    skipped_truth: int = 0  # truth documents declared for another schema
    documents: list[DocResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    evaluated_at: str = ""

    def field_stats(self, name: str) -> FieldStats:
        """The stats of field ``name`` (``total``, ``vendor.name``, ``line_items.amount``)."""
        for f in self.fields:
            if f.field == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        d = dict(d)
        d["overall"] = FieldStats(**d["overall"])
        d["fields"] = [FieldStats(**f) for f in d["fields"]]
        d["items"] = [ItemStats(**i) for i in d.get("items", [])]
        d["documents"] = [DocResult(**r) for r in d.get("documents", [])]
        return cls(**d)
