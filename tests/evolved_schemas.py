"""Schemas that evolve the invoice (``--schema tests.evolved_schemas:InvoiceWithPO``): one that only adds
nullable columns and a nested field, and ones that change a type or drop a column."""

from __future__ import annotations

from pydantic import Field

from schemas.invoice import Invoice, Party


class PartyWithEmail(Party):
    email: str | None = Field(default=None, max_length=200, description="E-mail address; null if absent.")


class InvoiceWithPO(Invoice):
    """Adds ``po_number`` (a column) and ``vendor.email`` (a struct field): what add_columns accepts."""

    vendor: PartyWithEmail = Field(description="The company that issued the invoice (the seller).")
    po_number: str | None = Field(default=None, max_length=64, description="Purchase order number; null if absent.")


class InvoiceTotalText(Invoice):
    """``total`` as text: a type change, always refused."""

    total: str = Field(max_length=40, description="Amount due including tax, as printed.")  # type: ignore[assignment]
