"""Document schemas.  ``REGISTRY`` maps the names the CLI accepts to Pydantic models."""

from __future__ import annotations

from pydantic import BaseModel

from schemas.base import DocumentModel, business_rule
from schemas.invoice import Invoice
from schemas.receipt import Receipt

REGISTRY: dict[str, type[BaseModel]] = {"invoice": Invoice, "receipt": Receipt}


class SchemaNotFound(ValueError):
    pass


def resolve(name: str) -> type[BaseModel]:
    """A registry name (``invoice``) or ``package.module:Class``."""
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" not in name:
        raise SchemaNotFound(f"unknown schema {name!r}: use one of {sorted(REGISTRY)} or 'module:Class'")
    from pipeline.plugins import PluginError, import_object

    try:
        obj = import_object(name, "schema")
    except PluginError as e:
        raise SchemaNotFound(str(e)) from e
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise SchemaNotFound(f"schema {name!r} is not a pydantic BaseModel class")
    return obj


__all__ = ["REGISTRY", "DocumentModel", "Invoice", "Receipt", "SchemaNotFound", "business_rule", "resolve"]
