"""Building blocks shared by document schemas.

* ``Money`` / ``Quantity``: ``Decimal`` in Python and Parquet (decimal128 with the
  declared precision and scale), a plain JSON ``number`` in the schema sent to the
  engine (so constrained decoding writes digits, not quoted strings).
* ``ISODate``: ``datetime.date``, constrained in the JSON Schema to ``YYYY-MM-DD``.
* ``business_rule``: marks a method as a business rule.  Rules run after field
  validation; a failing rule raises a ``rule_violation`` error naming the rule, so
  the pipeline can tell "the model wrote the wrong shape" (``schema_mismatch``)
  from "the model wrote a well-formed answer that does not add up"
  (``rule_violation``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

#: Money: up to 18 digits, exactly representable with 2 decimal places.
Money = Annotated[
    Decimal,
    Field(max_digits=18, decimal_places=2),
    WithJsonSchema({"type": "number"}),
]
#: Quantities can be fractional (3.5 h, 0.125 kg).
Quantity = Annotated[
    Decimal,
    Field(max_digits=18, decimal_places=4),
    WithJsonSchema({"type": "number"}),
]
ISODate = Annotated[
    dt.date,
    WithJsonSchema({"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}),
]
ISOTime = Annotated[
    dt.time,
    WithJsonSchema({"type": "string", "pattern": r"^\d{2}:\d{2}(:\d{2})?$"}),
]
# Pattern only: xgrammar rejects a string schema that has both a pattern and length bounds.
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]

RULE_ERROR = "rule_violation"


def business_rule(name: str) -> Callable[[Callable[[Any], str | None]], Callable[[Any], str | None]]:
    """Decorate a method ``(self) -> str | None`` that returns a message when the rule fails."""

    def mark(fn: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        fn.__business_rule__ = name  # type: ignore[attr-defined]
        return fn

    return mark


class DocumentModel(BaseModel):
    """Base class for document schemas: strict shape, business rules collected by name."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    #: Tolerance used by rules comparing amounts (rounding on printed documents).
    rounding_tolerance: ClassVar[Decimal] = Decimal("0.02")

    @classmethod
    def business_rules(cls) -> list[tuple[str, Callable[[Any], str | None]]]:
        """The class's rules, found once per class (``dir()`` on every validation cost 10% of a run)."""
        cached = cls.__dict__.get("_rules_cache")
        if cached is not None:
            return cached
        rules: list[tuple[str, Callable[[Any], str | None]]] = []
        for attr in dir(cls):
            fn = getattr(cls, attr, None)
            name = getattr(fn, "__business_rule__", None)
            if name:
                rules.append((name, fn))  # type: ignore[arg-type]
        rules.sort(key=lambda r: r[0])
        type.__setattr__(cls, "_rules_cache", rules)
        return rules

    def rule_violations(self) -> list[tuple[str, str]]:
        """(rule, message) for every failing rule."""
        out = []
        for name, fn in self.business_rules():
            msg = fn(self)
            if msg:
                out.append((name, msg))
        return out

    @model_validator(mode="after")
    def _check_business_rules(self) -> DocumentModel:
        violations = self.rule_violations()
        if violations:
            name, msg = violations[0]
            detail = "; ".join(f"{n}: {m}" for n, m in violations)
            raise PydanticCustomError(
                RULE_ERROR,
                "business rule failed: {detail}",
                {"rules": [n for n, _ in violations], "detail": detail},
            )
        return self


def close_enough(a: Decimal, b: Decimal, tol: Decimal) -> bool:
    return abs(a - b) <= tol
