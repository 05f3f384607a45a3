"""Field confidence and the review flag: grounding, the model's own confidence and the business rules.

``assess(value, pages, config, ...)`` grounds every leaf (``pipeline.evidence.ground``), gives each a
``confidence`` (0-1) and returns the document's ``needs_review`` and ``review_reasons``::

    confidence = model confidence (1 when not known)
                 x grounding  (1 found as printed; the similarity for a fuzzy match;
                               ``not_found_factor`` for a printed value not found; 1 with nothing to look for)
                 x ``rule_failed_factor`` when a business rule naming the field failed on an earlier attempt

A document needs review when a field is not found on the page (``flag_not_found``), is below
``min_confidence``, or had a rule fail before the re-ask (``flag_rule_failed``).  Reasons name the
field: ``total: not found on the page``, ``vendor.name: low confidence 0.41``,
``total: rule failed before the re-ask: subtotal_plus_tax_equals_total: ...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from pipeline.config import EvidenceConfig
from pipeline.evidence import FieldEvidence, Match, ground
from pipeline.records import Page


@dataclass(slots=True)
class Assessment:
    evidence: list[FieldEvidence]
    needs_review: bool
    reasons: list[str]


def rule_fields(messages: Sequence[str], model: type[BaseModel]) -> dict[str, list[str]]:
    """Top-level field name -> the rule failures (``rule_name: message``) whose rule names it."""
    out: dict[str, list[str]] = {}
    for msg in messages:
        rule = msg.split(":", 1)[0].replace("_", " ")
        for name in model.model_fields:
            if re.search(rf"(?<![a-z]){re.escape(name.replace('_', ' '))}(?![a-z])", rule):
                out.setdefault(name, []).append(msg)
    return out


def _top(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _grounding_factor(ev: FieldEvidence, cfg: EvidenceConfig) -> float:
    if ev.grounded is None:
        return 1.0
    if not ev.grounded:
        return cfg.not_found_factor
    if ev.match is Match.SUM:
        return cfg.sum_factor
    return ev.score if ev.match is Match.FUZZY else 1.0


def score(evidence: list[FieldEvidence], cfg: EvidenceConfig, model_confidence: Mapping[str, float] | None = None,
          failed_rules: Mapping[str, list[str]] | None = None) -> tuple[bool, list[str]]:
    """Set each field's ``confidence`` and ``reasons``; return (needs_review, the document's reasons)."""
    reasons: list[str] = []
    for ev in evidence:
        mc = None if model_confidence is None else model_confidence.get(ev.field)
        ev.model_confidence = None if mc is None else min(1.0, max(0.0, float(mc)))
        ev.rule_failed = list((failed_rules or {}).get(_top(ev.field), []))
        model = ev.model_confidence if cfg.use_model_confidence and ev.model_confidence is not None else 1.0
        conf = model * _grounding_factor(ev, cfg)
        if ev.rule_failed:
            conf *= cfg.rule_failed_factor
        ev.confidence = round(conf, 4)
        if ev.grounded is False and cfg.flag_not_found:
            ev.reasons.append(f"{ev.field}: not found on the page")
        elif ev.confidence < cfg.min_confidence:
            ev.reasons.append(f"{ev.field}: low confidence {ev.confidence:.2f}")
        if ev.rule_failed and cfg.flag_rule_failed:
            ev.reasons.append(f"{ev.field}: rule failed before the re-ask: {ev.rule_failed[0]}")
        reasons.extend(ev.reasons)
    return bool(reasons), reasons


def assess(value: BaseModel, pages: Sequence[Page], cfg: EvidenceConfig,
           model_confidence: Mapping[str, float] | None = None, rule_failures: Sequence[str] = ()) -> Assessment:
    """Ground ``value`` on ``pages`` and score it: the evidence rows' content and the review flag."""
    evidence = ground(value, pages, cfg.fuzzy_threshold)
    failed = rule_fields(rule_failures, type(value)) if rule_failures else {}
    needs, reasons = score(evidence, cfg, model_confidence, failed)
    return Assessment(evidence, needs, reasons)


def evidence_rows(doc_id: str, evidence: list[FieldEvidence], common: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of the ``evidence`` table (``EVIDENCE_SCHEMA``) for one document."""
    rows = []
    for ev in evidence:
        box = ev.box or (None, None, None, None)
        rows.append({
            "doc_id": doc_id, "field": ev.field, "value": ev.value, "page": ev.page,
            "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3], "source": ev.source,
            "grounded": ev.grounded, "match": ev.match.value, "match_score": ev.score,
            "confidence": ev.confidence, "model_confidence": ev.model_confidence,
            "rule_failed": ev.rule_failed, "reasons": ev.reasons,
            "schema_name": common.get("schema_name"), "run_key": common.get("run_key"), "run_id": common.get("run_id"),
        })
    return rows
