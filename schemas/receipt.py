"""Receipt: what expense tools need from a till slip."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field

from schemas.base import CurrencyCode, DocumentModel, ISODate, ISOTime, Money, Quantity, business_rule, close_enough


class ReceiptItem(DocumentModel):
    description: str = Field(max_length=200, description="Item name as printed.")
    quantity: Quantity | None = Field(default=None, description="Number of units; null if not printed.")
    amount: Money = Field(description="Price paid for the line (after any line discount).")


class Receipt(DocumentModel):
    """A point-of-sale receipt."""

    merchant: str = Field(max_length=200, description="Name of the shop, restaurant or company that issued the receipt.")
    address: str | None = Field(default=None, max_length=400, description="Merchant address on one line; null if absent.")
    date: ISODate = Field(description="Date of purchase as YYYY-MM-DD.")
    time: ISOTime | None = Field(default=None, description="Time of purchase as HH:MM (24-hour); null if absent.")
    currency: CurrencyCode | None = Field(default=None, description="ISO 4217 currency code if it can be told; else null.")
    items: list[ReceiptItem] = Field(default_factory=list, max_length=200, description="Purchased items in order.")
    subtotal: Money | None = Field(default=None, description="Amount before tax and tip; null if not printed.")
    tax: Money | None = Field(default=None, description="Tax amount; null if not printed.")
    tip: Money | None = Field(default=None, description="Tip or gratuity; null if none.")
    total: Money = Field(description="Total amount paid.")
    payment_method: Literal["cash", "card", "mobile", "voucher", "other"] | None = Field(
        default=None, description="How it was paid: cash, card, mobile, voucher or other; null if not shown."
    )

    @business_rule("items_sum_to_subtotal")
    def _items_sum(self) -> str | None:
        if not self.items or self.subtotal is None:
            return None
        s = sum((i.amount for i in self.items), Decimal(0))
        tol = max(self.rounding_tolerance, Decimal("0.01") * len(self.items))
        if close_enough(s, self.subtotal, tol):
            return None
        if close_enough(s, self.total - (self.tip or 0), tol):
            return None  # prices include VAT (European till slips): items add up to the total instead
        return f"items sum to {s}, which is neither the subtotal {self.subtotal} nor the total {self.total}"

    @business_rule("subtotal_plus_tax_and_tip_equals_total")
    def _total(self) -> str | None:
        if self.subtotal is None:
            return None
        expected = self.subtotal + (self.tax or 0) + (self.tip or 0)
        if not close_enough(expected, self.total, self.rounding_tolerance):
            return f"subtotal + tax + tip = {expected}, total is {self.total}"
        return None
