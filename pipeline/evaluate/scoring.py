"""Scoring a run against ground truth, document by document: per-field counts, item lists, exact match.

Per field and document, a present prediction equal to a present truth is a TP; a present wrong
prediction is an FP *and*, when truth is present, an FN; a missing prediction of a present truth is an
FN.  Failed documents and documents without a row predict nothing, so every truth field they have is
an FN.  Item lists are paired by :func:`pipeline.evaluate.matching.match_items`; unmatched predicted
items are FPs, unmatched truth items FNs.  A document is an exact match when every scored field and
every item list (as a multiset) equals the truth.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.evaluate.errors import EvalError
from pipeline.evaluate.matching import match_items
from pipeline.evaluate.outcomes import Outcome, ResultIndex, read_outcomes
from pipeline.evaluate.plan import DocView, Item, ListField, Plan, build_plan, empty_view, view
from pipeline.evaluate.stats import DocResult, EvalReport, FieldStats, ItemStats, prf
from pipeline.evaluate.truth import SROIE_MAP, TruthDoc, load_truth
from schemas import resolve


@dataclass
class Scorer:
    """Accumulates counts document by document."""

    plan: Plan
    counts: dict[str, list[int]] = field(default_factory=dict)  # field -> [tp, fp, fn]
    items: dict[str, list[int]] = field(default_factory=dict)  # list -> [truth, predicted, matched, exact]

    def __post_init__(self) -> None:
        for leaf in self.plan.scalars:
            self.counts[leaf.name] = [0, 0, 0]
        for lf in self.plan.lists:
            self.items[lf.name] = [0, 0, 0, 0]
            for leaf in lf.leaves:
                self.counts[f"{lf.name}.{leaf.name}"] = [0, 0, 0]

    def _count(self, name: str, t: Any, p: Any) -> bool:
        """Add one comparison; True when equal (both absent included)."""
        c = self.counts[name]
        if t is not None and t == p:
            c[0] += 1
            return True
        if p is not None:
            c[1] += 1
        if t is not None:
            c[2] += 1
        return t is None and p is None

    def add(self, truth: DocView, pred: DocView) -> list[str]:
        """Score one document; returns the names of fields and item lists that differ."""
        wrong = [
            leaf.name
            for leaf, t, p in zip(self.plan.scalars, truth.scalars, pred.scalars, strict=True)
            if not self._count(leaf.name, t, p)
        ]
        for lf, t_items, p_items in zip(self.plan.lists, truth.lists, pred.lists, strict=True):
            if not self._add_items(lf, t_items, p_items):
                wrong.append(lf.name)
        return wrong

    def _add_items(self, lf: ListField, truth: list[Item], pred: list[Item]) -> bool:
        pairs = match_items(truth, pred, lf.key)
        names = [f"{lf.name}.{leaf.name}" for leaf in lf.leaves]
        exact = 0
        for i, j in pairs:
            exact += all([self._count(n, t, p) for n, t, p in zip(names, truth[i], pred[j], strict=True)])
        paired_t, paired_p = {i for i, _ in pairs}, {j for _, j in pairs}
        for i in set(range(len(truth))) - paired_t:
            for n, t in zip(names, truth[i], strict=True):
                self._count(n, t, None)
        for j in set(range(len(pred))) - paired_p:
            for n, p in zip(names, pred[j], strict=True):
                self._count(n, None, p)
        s = self.items[lf.name]
        s[0], s[1], s[2], s[3] = s[0] + len(truth), s[1] + len(pred), s[2] + len(pairs), s[3] + exact
        return Counter(truth) == Counter(pred)

    def field_stats(self) -> list[FieldStats]:
        kinds = {f"{lf.name}.{leaf.name}": "item" for lf in self.plan.lists for leaf in lf.leaves}
        out = []
        for name, (tp, fp, fn) in self.counts.items():
            out.append(FieldStats.from_counts(name, tp, fp, fn, kind=kinds.get(name, "scalar")))
        return out

    def item_stats(self) -> list[ItemStats]:
        out = []
        for name, (truth, pred, matched, exact) in self.items.items():
            out.append(ItemStats(name, truth, pred, matched, exact, *prf(exact, pred - exact, truth - exact)))
        return out


def choose_schema(mode: str, docs: list[TruthDoc], outcomes: list[Outcome], schema: str | None) -> str:
    """The schema to score: given, else the truth's only declared schema, else the results' only schema."""
    if mode == "sroie":
        if schema not in (None, "receipt"):
            raise EvalError(f"SROIE ground truth maps onto the receipt schema, not {schema!r}")
        return "receipt"
    if schema:
        return schema
    declared = Counter(d.schema for d in docs if d.schema)
    produced = {o.row["schema_name"] for o in outcomes if o.row.get("schema_name")}
    if len(declared) == 1:
        return next(iter(declared))
    if len(produced) == 1 and (not declared or next(iter(produced)) in declared):
        return next(iter(produced))
    counts = ", ".join(f"{k}: {n}" for k, n in sorted(declared.items())) or "none declared"
    made = ", ".join(sorted(produced)) or "none"
    raise EvalError(f"cannot tell which schema to score (truth: {counts}; results: {made}); pass a schema")


def _dedupe(docs: list[TruthDoc], warnings: list[str]) -> list[TruthDoc]:
    """One truth per document: identical bytes under two names are one document (as in a run)."""
    seen: dict[str, TruthDoc] = {}
    out = []
    for d in docs:
        if d.doc_id is not None and d.doc_id in seen:
            warnings.append(f"{d.label}: same document bytes as {seen[d.doc_id].label}; scored once")
            continue
        if d.doc_id is not None:
            seen[d.doc_id] = d
        out.append(d)
    return out


def _status(outcome: Outcome | None) -> tuple[str, str | None]:
    if outcome is None:
        return "missing", None
    if outcome.kind == "failure":
        return "failed", outcome.row.get("error_type") or "unknown"
    return "matched", None


@dataclass
class Scoring:
    """What is scored: the schema, the plan, the truth documents selected and the run's rows by document."""

    name: str
    mode: str
    plan: Plan
    selected: list[TruthDoc]
    skipped: int
    index: ResultIndex

    def pairs(self, warnings: list[str]) -> Iterator[tuple[TruthDoc, Outcome | None, DocView, DocView]]:
        """Each truth document with its row (None: missing) and both sides as comparable values."""
        for doc in self.selected:
            outcome = self.index.find(doc, warnings)
            matched = outcome is not None and outcome.kind != "failure"
            pred = view(self.plan, outcome.row) if outcome is not None and matched else empty_view(self.plan)
            yield doc, outcome, view(self.plan, doc.data), pred


def prepare(truth: Path, results: Path, schema: str | None, warnings: list[str]) -> Scoring:
    """Load the truth and the run's newest rows, and choose what to score (see :func:`evaluate`)."""
    mode, docs = load_truth(truth, warnings)
    outcomes = read_outcomes(results)
    name = choose_schema(mode, docs, outcomes, schema)
    try:
        plan = build_plan(resolve(name))
    except ValueError as e:
        raise EvalError(str(e)) from e
    if mode == "sroie":
        plan = plan.only(SROIE_MAP.values())
    selected = _dedupe([d for d in docs if d.schema in (None, name)], warnings)
    skipped = sum(1 for d in docs if d.schema not in (None, name))
    if not selected:
        raise EvalError(f"no ground truth for schema {name!r} in {truth}")
    return Scoring(name, mode, plan, selected, skipped, ResultIndex.build(outcomes, name))


def evaluate(truth: Path, results: Path, schema: str | None = None) -> EvalReport:
    """Score the run output in ``results`` against the ground truth in ``truth`` (see :mod:`pipeline.evaluate`)."""
    truth, results = Path(truth), Path(results)
    warnings: list[str] = []
    s = prepare(truth, results, schema, warnings)
    name, mode, index = s.name, s.mode, s.index
    scorer = Scorer(s.plan)
    documents: list[DocResult] = []
    for doc, outcome, t, pred in s.pairs(warnings):
        status, error_type = _status(outcome)
        wrong = scorer.add(t, pred)
        doc_id = outcome.row["doc_id"] if outcome else doc.doc_id
        documents.append(DocResult(doc.label, doc_id, status, status == "matched" and not wrong, error_type, wrong))
    skipped = s.skipped
    other = sum(1 for d in documents if d.status == "missing" and d.doc_id in index.other_schema)
    if other:
        warnings.append(f"{other} truth document(s) have rows only under another schema than {name!r}")
    return _report(name, mode, truth, results, scorer, documents, skipped, warnings)


def _report(
    name: str,
    mode: str,
    truth: Path,
    results: Path,
    scorer: Scorer,
    documents: list[DocResult],
    skipped: int,
    warnings: list[str],
) -> EvalReport:
    fields = scorer.field_stats()
    tp, fp, fn = (sum(getattr(f, k) for f in fields) for k in ("tp", "fp", "fn"))
    status = Counter(d.status for d in documents)
    exact = sum(d.exact for d in documents)
    return EvalReport(
        schema=name,
        mode=mode,
        truth_path=str(truth),
        results_path=str(results),
        truth_documents=len(documents),
        matched=status["matched"],
        missing=status["missing"],
        failed=status["failed"],
        exact_matches=exact,
        exact_match_rate=exact / len(documents),
        overall=FieldStats.from_counts("overall", tp, fp, fn, kind="overall"),
        fields=fields,
        items=scorer.item_stats(),
        failures_by_type=dict(sorted(Counter(d.error_type for d in documents if d.error_type).items())),
        skipped_truth=skipped,
        documents=documents,
        warnings=warnings,
        evaluated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
