"""A user-supplied schema (``--schema tests.user_schema:PurchaseOrder``), with a rule of its own."""

from decimal import Decimal

from pydantic import Field

from schemas.base import DocumentModel, ISODate, Money, business_rule


class PurchaseOrder(DocumentModel):
    """A purchase order."""

    po_number: str = Field(max_length=32, description="Purchase order number.")
    order_date: ISODate = Field(description="Order date, YYYY-MM-DD.")
    buyer: str = Field(max_length=100, description="Ordering company.")
    amount: Money = Field(description="Order amount.")

    @business_rule("amount_positive")
    def _positive(self) -> str | None:
        return None if self.amount > Decimal(0) else f"amount {self.amount} is not positive"


class Loose(DocumentModel):
    """Unbounded numbers: the Parquet columns (int64, decimal(38,9)) bound them instead."""

    n: int = Field(description="A count.")
    amount: Decimal = Field(description="An amount.")
