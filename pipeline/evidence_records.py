"""The records of the evidence stage: how a value was matched, and one ``FieldEvidence`` per leaf value."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from dataclasses import field as dc_field

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in fractions of the upright page


class Match(str, enum.Enum):
    WORD = "word"  # one word
    LINE = "line"  # several words of one printed line
    LINES = "lines"  # words across lines
    FUZZY = "fuzzy"  # similar (OCR noise), not equal
    SUM = "sum"  # an amount not printed as such: the sum of the amounts printed beside its label (tax by rate)
    NONE = "none"  # looked for, not found
    NULL = "null"  # nothing to look for (null value), or no words to look in


@dataclass(slots=True)
class FieldEvidence:
    """One leaf value and where it is printed.  ``page`` is 1-based; the box is in fractions of the upright
    page; ``grounded`` is None where there was nothing to look for."""

    field: str
    value: str | None
    grounded: bool | None
    match: Match
    score: float = 0.0  # similarity of the printed words to the value (1 for equal)
    page: int | None = None
    box: Box | None = None
    source: str | None = None
    confidence: float = 1.0
    model_confidence: float | None = None
    rule_failed: list[str] = dc_field(default_factory=list)
    reasons: list[str] = dc_field(default_factory=list)
