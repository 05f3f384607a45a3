"""A schema a random model can satisfy under constrained decoding: every value is bounded
(patterns with fixed lengths, enums, booleans), so outputs terminate instead of looping."""

from typing import Literal

from pydantic import Field

from schemas.base import DocumentModel


class TinyDoc(DocumentModel):
    """A test document."""

    code: str = Field(pattern=r"^[a-z]{1,6}$", description="A short code.")
    kind: Literal["invoice", "receipt"] = Field(description="Document kind.")
    paid: bool = Field(description="Whether it is paid.")
