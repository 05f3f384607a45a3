"""A run's output as predictions: the newest ``results``/``failures`` row per document, read through
:mod:`pipeline.store`.

Parts sort by name (as in :func:`pipeline.store.reconcile`), so the last row of a ``doc_id`` in the
last part holding it is its newest; rows written under another schema are set aside.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa

from pipeline import fs, store
from pipeline.evaluate.errors import EvalError
from pipeline.evaluate.truth import TruthDoc

SKIP_COLUMNS = frozenset({"raw_json", "warnings", "errors", "raw_output", "message"})  # never needed for scoring


@dataclass
class Outcome:
    """The newest row of a document in a results directory."""

    kind: str  # "result" or "failure"
    row: dict[str, Any]
    order: tuple[str, str, int]  # (part name, table, row): larger is newer


def _read_part(location: Any, skip: Collection[str]) -> list[dict[str, Any]]:
    try:
        return store.read_part(location, skip=skip).to_pylist()
    except (pa.ArrowInvalid, OSError) as e:
        raise EvalError(f"cannot read {location}: {e}") from e


def read_outcomes(out_dir: Path, skip: Collection[str] = SKIP_COLUMNS) -> list[Outcome]:
    """Every row of ``results/`` and ``failures/`` without the columns in ``skip`` (by default those
    scoring never needs; ``()`` reads them all); failures sort before results of the same part."""
    if not out_dir.is_dir():
        raise EvalError(f"results directory {out_dir} does not exist")
    outcomes = []
    for table, kind in (("failures", "failure"), ("results", "result")):
        for part in store.table_parts(out_dir, table):
            for n, row in enumerate(_read_part(part, skip)):
                if row.get("doc_id"):
                    outcomes.append(Outcome(kind, row, (fs.basename(part), table, n)))
    return outcomes


def newest(outcomes: Iterable[Outcome]) -> dict[str, Outcome]:
    """The current row of each document: its newest outcome (largest ``order``), by doc_id."""
    by_id: dict[str, Outcome] = {}
    for o in outcomes:
        doc_id = o.row["doc_id"]
        if doc_id not in by_id or o.order > by_id[doc_id].order:
            by_id[doc_id] = o
    return by_id


def _stem_of(source_path: str | None) -> str | None:
    if not source_path:
        return None
    return PurePath(re.split(r"[\\/]", source_path)[-1]).stem


@dataclass
class ResultIndex:
    """Newest outcome per doc_id for one schema, and doc_ids by source_path stem."""

    by_id: dict[str, Outcome]
    by_stem: dict[str, set[str]]
    other_schema: set[str]  # doc_ids having rows only under another schema

    @classmethod
    def build(cls, outcomes: list[Outcome], schema: str) -> ResultIndex:
        ours = [o for o in outcomes if o.row.get("schema_name") in (None, schema)]
        other = {o.row["doc_id"] for o in outcomes if o.row.get("schema_name") not in (None, schema)}
        by_id = newest(ours)
        by_stem: dict[str, set[str]] = {}
        for doc_id, o in by_id.items():
            stem = _stem_of(o.row.get("source_path"))
            if stem:
                by_stem.setdefault(stem, set()).add(doc_id)
        return cls(by_id, by_stem, other - set(by_id))

    def find(self, doc: TruthDoc, warnings: list[str]) -> Outcome | None:
        """By doc_id when the document is there, else by source_path stem (unique stems only)."""
        if doc.doc_id is not None:
            return self.by_id.get(doc.doc_id)
        ids = self.by_stem.get(doc.stem, set())
        if len(ids) > 1:
            warnings.append(f"{doc.label}: {len(ids)} result rows have a source named {doc.stem}.*; counted as missing")
            return None
        return self.by_id[next(iter(ids))] if ids else None
