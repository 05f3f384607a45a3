"""Document schemas.  ``REGISTRY`` maps the names the CLI accepts to Pydantic models."""

from __future__ import annotations

import importlib
import os
import sys

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
    mod_name, _, attr = name.partition(":")
    if os.getcwd() not in sys.path:  # like `python -m`: schemas of the project you run from are importable
        sys.path.append(os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise SchemaNotFound(f"schema {name!r}: cannot import module {mod_name!r}: {e}") from e
    obj = getattr(mod, attr, None)
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise SchemaNotFound(f"schema {name!r}: {attr!r} is not a pydantic BaseModel class in {mod_name}")
    return obj


__all__ = ["REGISTRY", "DocumentModel", "Invoice", "Receipt", "SchemaNotFound", "business_rule", "resolve"]
