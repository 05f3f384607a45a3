"""Generation -> Extraction | Failure.

Order of checks: engine error, finish reason (``length`` = truncated), JSON
parsing, schema validation, business rules.  The first failing check decides the
error type; the raw output is always kept.
"""

from __future__ import annotations

import json
from decimal import Decimal

from pydantic import BaseModel, ValidationError

from pipeline.records import ErrorType, Extraction, Failure, Generation, Stage
from schemas.base import RULE_ERROR


def _loc(err: dict) -> str:
    return ".".join(str(p) for p in err.get("loc", ())) or "(document)"


def describe_validation_error(e: ValidationError) -> tuple[ErrorType, list[str]]:
    errors = e.errors(include_url=False)
    rule_errors = [err for err in errors if err["type"] == RULE_ERROR]
    if rule_errors and len(rule_errors) == len(errors):
        msgs = []
        for err in rule_errors:
            msgs.extend(str(err.get("ctx", {}).get("detail", err["msg"])).split("; "))
        return ErrorType.RULE_VIOLATION, msgs
    shape = [err for err in errors if err["type"] != RULE_ERROR]
    return ErrorType.SCHEMA_MISMATCH, [f"{_loc(dict(err))}: {err['msg']}" for err in shape]


def validate_generation(gen: Generation, model: type[BaseModel]) -> Extraction | Failure:
    raw = gen.text
    if gen.error is not None:
        etype = gen.error_type or ErrorType.ENGINE_ERROR
        return Failure(gen.doc_id, Stage.INFER, etype, gen.error, raw_output=raw or None)
    if gen.finish_reason == "length":
        return Failure(
            gen.doc_id,
            Stage.INFER,
            ErrorType.TRUNCATED,
            f"the model stopped at the token limit after {gen.output_tokens} tokens without finishing the JSON "
            "(raise sampling.max_tokens, or the model is looping)",
            raw_output=raw,
        )
    if gen.finish_reason not in ("stop", "eos", "end_turn", "stop_sequence", None):
        return Failure(
            gen.doc_id, Stage.INFER, ErrorType.ENGINE_ERROR, f"unexpected finish reason {gen.finish_reason!r}", raw
        )
    try:
        data = json.loads(raw, parse_float=Decimal)
    except (json.JSONDecodeError, ValueError) as e:
        return Failure(gen.doc_id, Stage.VALIDATE, ErrorType.INVALID_JSON, f"answer is not valid JSON: {e}", raw)
    if not isinstance(data, dict):
        return Failure(
            gen.doc_id,
            Stage.VALIDATE,
            ErrorType.SCHEMA_MISMATCH,
            f"answer is JSON {type(data).__name__}, expected an object",
            raw,
        )
    try:
        value = model.model_validate(data)
    except ValidationError as e:
        etype, msgs = describe_validation_error(e)
        head = "business rule failed" if etype is ErrorType.RULE_VIOLATION else "answer does not match the schema"
        return Failure(gen.doc_id, Stage.VALIDATE, etype, f"{head}: " + "; ".join(msgs), raw, errors=msgs)
    return Extraction(gen.doc_id, value, raw)
