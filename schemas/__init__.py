"""Document schemas.  ``REGISTRY`` maps the names the CLI accepts to Pydantic models."""

from __future__ import annotations

from pydantic import BaseModel

from pipeline.errors import PluginError, SchemaNotFound
from schemas.base import DocumentModel, business_rule
from schemas.invoice import Invoice
from schemas.receipt import Receipt

REGISTRY: dict[str, type[BaseModel]] = {"invoice": Invoice, "receipt": Receipt}




def resolve(name: str) -> type[BaseModel]:
    """A registry name (``invoice``) or ``package.module:Class``."""
    from pipeline.plugins import resolve_named

    try:
        obj = resolve_named(name, REGISTRY, "schema")
    except PluginError as e:
        raise SchemaNotFound(str(e)) from e
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise SchemaNotFound(f"schema {name!r} is not a pydantic BaseModel class")
    return obj


__all__ = ["REGISTRY", "DocumentModel", "Invoice", "Receipt", "SchemaNotFound", "business_rule", "resolve"]
