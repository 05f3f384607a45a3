"""Invoice: the fields accounts-payable teams key in by hand."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from schemas.base import CurrencyCode, DocumentModel, ISODate, Money, Quantity, business_rule, close_enough


class Party(DocumentModel):
    name: str = Field(max_length=200, description="Legal or trading name of the company or person, as printed.")
    address: str | None = Field(
        default=None, max_length=400, description="Postal address on one line, parts separated by commas; null if absent."
    )
    tax_id: str | None = Field(
        default=None, max_length=40, description="VAT number, EIN or other tax identifier exactly as printed; null if absent."
    )


class InvoiceLineItem(DocumentModel):
    description: str = Field(max_length=300, description="What was sold, as written on the line.")
    quantity: Quantity = Field(description="Number of units (may be fractional, e.g. hours).")
    unit_price: Money = Field(description="Price of one unit, before tax, in the invoice currency.")
    amount: Money = Field(description="Line total before tax (normally quantity times unit price).")


class Invoice(DocumentModel):
    """A supplier invoice."""

    invoice_number: str = Field(max_length=64, description="The invoice number or identifier, exactly as printed.")
    issue_date: ISODate = Field(description="Date the invoice was issued, as YYYY-MM-DD.")
    due_date: ISODate | None = Field(default=None, description="Payment due date as YYYY-MM-DD; null if not stated.")
    currency: CurrencyCode = Field(description="ISO 4217 currency code of the amounts, e.g. EUR, USD, GBP, CNY.")
    vendor: Party = Field(description="The company that issued the invoice (the seller).")
    customer: Party = Field(description="The company or person billed (the buyer).")
    line_items: list[InvoiceLineItem] = Field(
        max_length=200, description="Every billed line, in document order, across all pages."
    )
    subtotal: Money = Field(description="Sum of line amounts before tax and after line discounts.")
    tax: Money = Field(description="Total tax (VAT, sales tax); 0 if none.")
    total: Money = Field(description="Amount due including tax.")

    @business_rule("line_items_sum_to_subtotal")
    def _lines_sum(self) -> str | None:
        if not self.line_items:
            return None
        s = sum((li.amount for li in self.line_items), Decimal(0))
        # One cent per line of rounding, at least the base tolerance.
        tol = max(self.rounding_tolerance, Decimal("0.01") * len(self.line_items))
        if not close_enough(s, self.subtotal, tol):
            return f"line items sum to {s}, subtotal is {self.subtotal}"
        return None

    @business_rule("subtotal_plus_tax_equals_total")
    def _total(self) -> str | None:
        if not close_enough(self.subtotal + self.tax, self.total, self.rounding_tolerance):
            return f"subtotal {self.subtotal} + tax {self.tax} = {self.subtotal + self.tax}, total is {self.total}"
        return None

    @business_rule("due_date_not_before_issue_date")
    def _dates(self) -> str | None:
        if self.due_date is not None and self.due_date < self.issue_date:
            return f"due date {self.due_date} is before issue date {self.issue_date}"
        return None
