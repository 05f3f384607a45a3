"""Rows of the three output tables, built from the records of one document.

``results``: the schema's typed columns plus the document's columns (``RESULT_COLUMNS``) and its
``needs_review`` and ``review_reasons`` (``pipeline.trust``); ``failures``: ``FAILURES_SCHEMA``;
``evidence``: ``EVIDENCE_SCHEMA``, one row per leaf value of a result.  A result whose values do not
fit their columns (a number over its decimal's digits, say) becomes a ``schema_mismatch`` failure
instead (its evidence rows are dropped with it): never a lost batch.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.batching import Pending
from pipeline.columns import EVIDENCE_SCHEMA, model_row
from pipeline.confidence import generation_scores
from pipeline.config import JobConfig
from pipeline.records import Document, ErrorType, Extraction, Failure, Generation, RasterizedDoc, Stage
from pipeline.store import now_utc
from pipeline.trust import assess, evidence_rows

#: what a value that does not fit its Arrow column raises while converting
UNWRITABLE = (ValueError, TypeError, OverflowError, ArithmeticError, pa.ArrowException)


class RowBuilder:
    def __init__(self, config: JobConfig, arrow_schema: pa.Schema, run_key: str, run_id: str):
        self.config, self.arrow_schema = config, arrow_schema
        self.run_key, self.run_id = run_key, run_id

    def _common(self) -> dict[str, Any]:
        return {
            "schema_name": self.config.schema_name,
            "model": self.config.engine.model,
            "run_key": self.run_key,
            "run_id": self.run_id,
        }

    def result(self, p: Pending, ext: Extraction, gen: Generation) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The document's results row and its evidence rows (none when ``[evidence]`` is off)."""
        doc = p.document
        row = model_row(ext.value, self.arrow_schema)
        evidence: list[dict[str, Any]] = []
        needs_review, reasons = False, []
        if self.config.evidence.enabled:
            a = assess(ext.value, p.rdoc.pages, self.config.evidence, generation_scores(gen) or None, p.rule_failures)
            needs_review, reasons = a.needs_review, a.reasons
            evidence = evidence_rows(doc.doc_id, a.evidence, self._common())
        row.update(
            doc_id=doc.doc_id,
            source_path=doc.display_path,
            doc_kind=doc.kind.value,
            page_count=p.rdoc.total_pages,
            pages_used=len(p.rdoc.pages) if gen.pages_used is None else gen.pages_used,  # the engine may fit fewer
            raw_json=ext.raw_text if self.config.output.keep_raw_json else None,
            warnings=p.rdoc.warnings + gen.warnings + ext.warnings,
            attempts=p.attempts,
            prompt_tokens=p.prompt_tokens,
            output_tokens=p.output_tokens,
            needs_review=needs_review,
            review_reasons=reasons,
            **self._common(),
            extracted_at=now_utc(),
        )
        return row, evidence

    def failure(
        self,
        doc: Document,
        f: Failure,
        rdoc: RasterizedDoc | None = None,
        attempts: int = 0,
        errors: list[str] | None = None,
        tokens: tuple[int, int] = (0, 0),
    ) -> dict[str, Any]:
        return {
            "doc_id": doc.doc_id,
            "source_path": doc.display_path,
            "doc_kind": doc.kind.value,
            "page_count": rdoc.total_pages if rdoc else None,
            "stage": f.stage.value,
            "error_type": f.error_type.value,
            "retryable": f.error_type.retryable,
            "message": f.message,
            "errors": errors or f.errors,
            "raw_output": f.raw_output,
            "warnings": rdoc.warnings if rdoc else [],
            "attempts": attempts,
            "prompt_tokens": tokens[0],
            "output_tokens": tokens[1],
            **self._common(),
            "failed_at": now_utc(),
        }

    def final_failure(self, p: Pending, f: Failure) -> dict[str, Any]:
        """The failure row of a document that went through the engine (its attempts and tokens)."""
        return self.failure(p.document, f, p.rdoc, p.attempts, p.errors, (p.prompt_tokens, p.output_tokens))

    def results_table(
        self, rows: list[tuple[Pending, Generation, dict[str, Any]]]
    ) -> tuple[pa.Table, list[tuple[Pending, Failure]]]:
        """One Arrow conversion for the batch; only if it fails is each row tried, to find the culprits,
        which come back as failures."""
        try:
            return pa.Table.from_pylist([r for _, _, r in rows], schema=self.arrow_schema), []
        except UNWRITABLE:
            pass
        good, bad = [], []
        for p, gen, row in rows:
            try:
                pa.Table.from_pylist([row], schema=self.arrow_schema)
                good.append(row)
            except UNWRITABLE as e:
                bad.append((p, unwritable(p, gen, e)))
        return pa.Table.from_pylist(good, schema=self.arrow_schema), bad

    @staticmethod
    def evidence_table(evidence: dict[str, list[dict[str, Any]]], results: pa.Table) -> pa.Table:
        """The evidence rows of the documents in ``results`` (a culprit's rows go with its result)."""
        kept = set(results.column("doc_id").to_pylist()) if results.num_rows else set()
        return pa.Table.from_pylist([r for d, rs in evidence.items() if d in kept for r in rs], schema=EVIDENCE_SCHEMA)


def unwritable(p: Pending, gen: Generation, e: BaseException) -> Failure:
    return Failure(
        p.document.doc_id,
        Stage.VALIDATE,
        ErrorType.SCHEMA_MISMATCH,
        f"answer does not fit the output columns: {type(e).__name__}: {e}",
        raw_output=gen.text,
    )

