"""Schema -> instruction text and JSON Schema; pages -> one chat request per document.

The text that is the same for every document (system prompt, field list) comes
first in the system message, so engines with prefix caching reuse it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from functools import lru_cache
from typing import Any

from PIL import Image
from pydantic import BaseModel

from pipeline.anchor import anchor_block
from pipeline.records import Page, Request, Sampling

PROMPT_VERSION = "1"

DEFAULT_SYSTEM = (
    "You extract structured data from business documents (invoices, receipts). "
    "Read every page image. Copy names, numbers and identifiers exactly as printed. "
    "Write amounts as plain numbers with a dot as decimal separator and no thousands separators "
    "(1.234,56 becomes 1234.56). Write dates as YYYY-MM-DD whatever format the document uses. "
    "Use null for a field that the document does not show; never invent values. "
    "Answer with a single JSON object and nothing else."
)


def json_schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema sent to the engine for constrained decoding (inlined, no $ref)."""
    return _inline_refs(model.model_json_schema())


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].rsplit("/", 1)[-1]
                merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
                return walk(merged)
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return {"str": "text", "Decimal": "number", "date": "date YYYY-MM-DD", "time": "time HH:MM", "int": "integer"}.get(
        getattr(annotation, "__name__", str(annotation)), getattr(annotation, "__name__", str(annotation))
    )


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for a in typing.get_args(annotation):
        inner = _nested_model(a)
        if inner is not None:
            return inner
    return None


def field_lines(model: type[BaseModel], prefix: str = "", depth: int = 0) -> list[str]:
    lines = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        desc = info.description or ""
        lines.append(f"{'  ' * depth}- {key} ({_type_name(info.annotation)}): {desc}".rstrip(": "))
        nested = _nested_model(info.annotation)
        if nested is not None and depth < 3:
            sub = "[]." if typing.get_origin(info.annotation) is list or "list" in _type_name(info.annotation) else "."
            lines.extend(field_lines(nested, f"{key}{sub}", depth + 1))
    return lines


@lru_cache(maxsize=32)
def _instruction(model: type[BaseModel], extra: str | None) -> str:
    title = model.__name__
    doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    parts = [
        f"Extract the {title} ({doc.rstrip('.')}) shown in these page images." if doc else f"Extract the {title}.",
        "Fields:",
        *field_lines(model),
        "Return one JSON object with exactly these fields.",
    ]
    if extra:
        parts.append(extra)
    return "\n".join(parts)


def build_request(
    doc_id: str,
    pages: list[Page],
    model: type[BaseModel],
    json_schema: dict[str, Any],
    sampling: Sampling,
    system: str | None = None,
    extra_instructions: str | None = None,
    anchor_max_tokens: int | None = None,
) -> Request:
    """One chat request: system prompt + schema fields, then every kept page in order.

    ``anchor_max_tokens`` (``prompt.anchor_text``): each page's words (``Page.words``) go before its
    image as text with coarse positions (:func:`pipeline.anchor.anchor_block`), up to that many tokens."""
    system_text = (system or DEFAULT_SYSTEM) + "\n\n" + _instruction(model, extra_instructions)
    anchors = [anchor_block(p.words, anchor_max_tokens) for p in pages] if anchor_max_tokens else None
    content = [*page_parts([p.image for p in pages], anchors), {"type": "text", "text": "Extract the fields as JSON."}]
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_text}, {"role": "user", "content": content}]
    return Request(doc_id=doc_id, messages=messages, json_schema=json_schema, sampling=sampling)


def page_parts(images: list[Image.Image], anchors: list[str | None] | None = None) -> list[dict[str, Any]]:
    """The page images of a request, in order, each labelled "Page i of n:" when there are several and
    preceded by its anchor text when it has one."""
    parts: list[dict[str, Any]] = []
    for i, image in enumerate(images):
        if len(images) > 1:
            parts.append({"type": "text", "text": _page_label(i, len(images))})
        if anchors and i < len(anchors) and anchors[i]:
            parts.append({"type": "text", "text": anchors[i]})
        parts.append({"type": "image", "image": image})
    return parts


def _page_label(i: int, n: int) -> str:
    return f"Page {i + 1} of {n}:"


def _page_anchors(parts: list[dict[str, Any]]) -> list[str | None]:
    """The anchor text before each image of ``parts`` (the text parts since the previous image that are
    not a page label), or None for an image with none."""
    out: list[str | None] = []
    texts: list[str] = []
    for p in parts:
        if p.get("type") == "image":
            out.append("\n".join(texts) or None)
            texts = []
        elif p.get("type") == "text" and not _LABEL.fullmatch(str(p.get("text", ""))):
            texts.append(str(p.get("text", "")))
    return out


_LABEL = re.compile(r"Page \d+ of \d+:")


def with_pages(request: Request, images: list[Image.Image]) -> Request:
    """The same request (same uid) with other page images: fewer (the first ones kept), or smaller.  The
    page parts of the first message holding images (up to its last image) are rebuilt, each kept page's
    anchor text with it; what follows them and every other message stay."""
    messages = list(request.messages)
    for i, m in enumerate(messages):
        content = m.get("content")
        if not isinstance(content, list):
            continue
        last = max((j for j, p in enumerate(content) if p.get("type") == "image"), default=None)
        if last is None:
            continue
        anchors = _page_anchors(content[: last + 1])
        messages[i] = {**m, "content": [*page_parts(images, anchors), *content[last + 1 :]]}
        return dataclasses.replace(request, messages=messages)
    raise ValueError(f"request for {request.doc_id[:12]} holds no page images")


def reask_request(previous: Request, raw_output: str, errors: list[str], sampling: Sampling) -> Request:
    """The same request plus the previous answer and what was wrong with it (instructor's idea)."""
    fix = (
        "Your previous answer was rejected:\n"
        + "\n".join(f"- {e}" for e in errors[-5:])
        + "\nLook at the pages again and answer with corrected JSON."
    )
    messages = [
        *previous.messages,
        {"role": "assistant", "content": raw_output[:4000]},
        {"role": "user", "content": [{"type": "text", "text": fix}]},
    ]
    return Request(
        doc_id=previous.doc_id,
        messages=messages,
        json_schema=previous.json_schema,
        sampling=sampling,
        attempt=previous.attempt + 1,
    )


def schema_json_text(model: type[BaseModel]) -> str:
    return json.dumps(json_schema_for(model), indent=2, ensure_ascii=False)
