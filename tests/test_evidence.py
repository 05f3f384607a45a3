"""Evidence per field (pipeline.evidence, pipeline.trust): matching units and the review flag."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from PIL import Image
from pydantic import BaseModel

from pipeline.config import EvidenceConfig
from pipeline.evidence import Match, ground
from pipeline.records import Page, Word, WordSource
from pipeline.synth.formats import LOCALES, NumFmt, fmt_date
from pipeline.trust import assess, rule_fields
from schemas import Invoice


class Doc(BaseModel):
    name: str | None = None
    total: Decimal | None = None
    date: dt.date | None = None
    subtotal: Decimal | None = None


def page(lines: list[str], source: WordSource = WordSource.TEXT_LAYER, index: int = 0) -> Page:
    """Words of ``lines`` (one printed line each), boxes laid out left to right, one line per 0.04 of height."""
    words = []
    for ln, text in enumerate(lines):
        x = 0.05
        for w in text.split():
            width = 0.012 * len(w)
            words.append(Word(w, x, 0.05 + 0.04 * ln, x + width, 0.08 + 0.04 * ln, ln, source))
            x += width + 0.01
    return Page("d", index, Image.new("RGB", (4, 4)), 100, 100, words)


def one(evs, field):
    return next(e for e in evs if e.field == field)


LOCALE_FORMATS = sorted({(loc.dec, t, loc.sym, loc.sym_pre) for loc in LOCALES.values() for t in loc.thou})


@pytest.mark.parametrize("dec,thou,sym,pre", LOCALE_FORMATS)
@pytest.mark.parametrize("amount", ["1234567.89", "4061.72", "0.50", "12.00"])
def test_amounts_in_every_locale_format_the_generator_prints(dec, thou, sym, pre, amount):
    fmt = NumFmt(dec=dec, thou=thou, sym=sym, pre=pre, space=thou == " ")
    for printed in (fmt.money(Decimal(amount)), fmt.num(Decimal(amount))):
        ev = one(ground(Doc(total=Decimal(amount)), [page([f"Total {printed}"])]), "total")
        assert ev.grounded is True, printed
        assert ev.box is not None and ev.box[0] > 0.05  # the amount, not the label


@pytest.mark.parametrize("style", ["iso", "dmy/", "mdy/", "dmy.", "dmy.short", "mdy/short", "dmy/short", "ymd/", "zh",
                                   "d mon y", "d month y", "mon d, y", "month d, y"])
@pytest.mark.parametrize("lang", ["en", "de", "fr"])
def test_dates_in_every_printed_format(style, lang):
    d = dt.date(2024, 3, 5)
    printed = fmt_date(d, style, lang)
    ev = one(ground(Doc(date=d), [page(["Invoice date:", printed])]), "date")
    assert ev.grounded is True, printed
    assert ev.page == 1 and ev.box is not None and ev.box[1] > 0.08  # on the second line


def test_a_date_that_is_not_printed_is_not_grounded():
    ev = one(ground(Doc(date=dt.date(2024, 3, 6)), [page(["Date 05/03/2024"])]), "date")
    assert ev.grounded is False and ev.match is Match.NONE


def test_a_name_over_several_lines_and_words():
    p = page(["Bill to:", "Northwind Traders", "Sdn. Bhd.", "12 Main St"])
    ev = one(ground(Doc(name="Northwind Traders Sdn. Bhd."), [p]), "name")
    assert ev.grounded is True and ev.match is Match.LINES
    assert ev.box is not None and ev.box[1] == pytest.approx(0.09) and ev.box[3] == pytest.approx(0.16)


def test_case_and_whitespace_do_not_matter():
    ev = one(ground(Doc(name="ACME   hardware"), [page(["Acme Hardware"])]), "name")
    assert ev.grounded is True and ev.match is Match.LINE


def test_ocr_noise_in_text_is_a_fuzzy_match_with_its_score():
    p = page(["ACME HARDWRE SDN BHD", "Total 9.00"], WordSource.OCR)
    ev = one(ground(Doc(name="Acme Hardware Sdn Bhd"), [p]), "name")
    assert ev.grounded is True and ev.match is Match.FUZZY and 0.8 <= ev.score < 1
    assert ev.source == "ocr"


def test_ocr_letters_for_digits_in_an_amount():
    p = page(["TOTAL RM 1O.5O"], WordSource.OCR)
    assert one(ground(Doc(total=Decimal("10.50")), [p]), "total").grounded is True
    text_layer = page(["TOTAL RM 1O.5O"])
    assert one(ground(Doc(total=Decimal("10.50")), [text_layer]), "total").grounded is False


def test_another_name_is_not_a_fuzzy_match():
    ev = one(ground(Doc(name="Gardenia Bakeries"), [page(["ACME HARDWARE SDN BHD"], WordSource.OCR)]), "name")
    assert ev.grounded is False


def test_a_repeated_value_is_taken_near_its_label():
    p = page(["Item A 10.00", "Subtotal 10.00", "Service 0.00", "Total 10.00", "Cash 10.00"])
    evs = ground(Doc(total=Decimal("10.00"), subtotal=Decimal("10.00")), [p])
    assert one(evs, "total").box[1] == pytest.approx(0.05 + 0.04 * 3)
    assert one(evs, "subtotal").box[1] == pytest.approx(0.05 + 0.04 * 1)


def test_two_numbers_side_by_side_are_not_one_amount():
    ev = one(ground(Doc(total=Decimal("29.00")), [page(["2 9.00"])]), "total")
    assert ev.grounded is False


def test_pages_are_numbered_from_one_and_found_on_the_right_page():
    pages = [page(["Invoice"], index=0), page(["Total 5.00"], index=1)]
    ev = one(ground(Doc(total=Decimal("5.00")), pages), "total")
    assert ev.page == 2


def test_nulls_and_missing_words_are_not_grounded_either_way():
    evs = ground(Doc(total=Decimal("5.00")), [page(["Total 5.00"])])
    assert [e.grounded for e in evs] == [None, True, None, None]  # name, total, date, subtotal
    no_words = Page("d", 0, Image.new("RGB", (4, 4)), 1, 1, None)
    assert {e.grounded for e in ground(Doc(total=Decimal("5.00")), [no_words])} == {None}


def test_list_items_in_order_and_every_leaf_has_a_row():
    inv = Invoice.model_validate({
        "invoice_number": "INV-7", "issue_date": "2024-03-05", "currency": "EUR",
        "vendor": {"name": "Acme GmbH"}, "customer": {"name": "Beta AG"},
        "line_items": [{"description": "Bolt", "quantity": "2", "unit_price": "5.00", "amount": "10.00"},
                       {"description": "Nut", "quantity": "2", "unit_price": "5.00", "amount": "10.00"}],
        "subtotal": "20.00", "tax": "3.80", "total": "23.80"})
    p = page(["Acme GmbH", "Rechnung Nr. INV-7", "Datum: 05.03.2024", "Beta AG", "Bolt 2 5,00 10,00",
              "Nut 2 5,00 10,00", "Zwischensumme 20,00 €", "MwSt. 19% 3,80 €", "Gesamt 23,80 €"])
    evs = ground(inv, [p])
    assert len(evs) == 21  # 4 + 2 parties x 3 + 2 items x 4 + 3
    assert one(evs, "line_items[0].amount").box[1] == pytest.approx(0.05 + 0.04 * 4)
    assert one(evs, "line_items[1].amount").box[1] == pytest.approx(0.05 + 0.04 * 5)
    assert one(evs, "currency").grounded is True  # printed as its sign
    assert [e.field for e in evs if e.grounded is False] == []
    assert {e.field for e in evs if e.grounded is None} == {"due_date", "vendor.address", "vendor.tax_id",
                                                            "customer.address", "customer.tax_id"}


def test_a_wrong_total_needs_review_and_says_why():
    p = page(["Shop", "Total 9.00"])
    a = assess(Doc(name="Shop", total=Decimal("19.00")), [p], EvidenceConfig())
    assert a.needs_review is True
    assert a.reasons == ["total: not found on the page"]
    ok = assess(Doc(name="Shop", total=Decimal("9.00")), [p], EvidenceConfig())
    assert ok.needs_review is False and ok.reasons == []
    assert one(ok.evidence, "total").confidence == 1.0
    assert one(a.evidence, "total").confidence == pytest.approx(EvidenceConfig().not_found_factor)


def test_model_confidence_and_rules_enter_the_field_confidence():
    p = page(["Shop", "Total 9.00"])
    a = assess(Doc(name="Shop", total=Decimal("9.00")), [p], EvidenceConfig(min_confidence=0.5, use_model_confidence=True),
               model_confidence={"name": 0.41, "total": 0.9},
               rule_failures=["subtotal_plus_tax_equals_total: subtotal 1 + tax 0 = 1, total is 9.00"])
    assert one(a.evidence, "name").confidence == pytest.approx(0.41)
    assert one(a.evidence, "total").confidence == pytest.approx(0.9 * 0.6)
    assert "name: low confidence 0.41" in a.reasons
    assert any(r.startswith("total: rule failed before the re-ask: subtotal_plus_tax") for r in a.reasons)
    assert one(a.evidence, "subtotal").rule_failed  # the rule names it, though it is null


def test_model_confidence_is_recorded_but_not_used_unless_asked():
    p = page(["Shop", "Total 9.00"])
    a = assess(Doc(name="Shop", total=Decimal("9.00")), [p], EvidenceConfig(), model_confidence={"name": 0.41, "total": 0.9})
    assert one(a.evidence, "name").model_confidence == pytest.approx(0.41)
    assert one(a.evidence, "name").confidence == 1.0 and a.needs_review is False and a.reasons == []


def test_rule_names_map_to_whole_field_names():
    got = rule_fields(["line_items_sum_to_subtotal: line items sum to 5", "due_date_not_before_issue_date: x"], Invoice)
    assert set(got) == {"line_items", "subtotal", "due_date", "issue_date"}  # not "total" inside "subtotal"


def test_ocr_dots_for_thousands_commas():
    p = page(["Subtotal £23.221.26"], WordSource.OCR)
    assert one(ground(Doc(subtotal=Decimal("23221.26")), [p]), "subtotal").grounded is True


def test_a_value_glued_to_its_label_and_an_address_read_into_other_columns():
    p = page(["Tax ID:DE123456789", "Acme GmbH Beta AG", "Hauptstr. 5 Industriestraße 17", "Musterstadt 10528 Berlin"],
             WordSource.OCR)
    assert one(ground(Doc(name="DE123456789"), [p]), "name").grounded is True
    ev = one(ground(Doc(name="Industriestraße 17, 10528 Berlin"), [p]), "name")
    assert ev.grounded is True and ev.match is Match.LINES


def test_a_zero_amount_that_is_not_printed_is_not_held_against_the_document():
    a = assess(Doc(name="Shop", total=Decimal("0.00")), [page(["Shop"])], EvidenceConfig())
    assert one(a.evidence, "total").grounded is None and a.needs_review is False


def test_ocr_dates_glued_to_the_time_or_with_a_zero_for_an_o():
    for printed in ("02/16/20229:56PM", "0ct 30, 2022", "2022-02-1610:26"):
        d = dt.date(2022, 10, 30) if "0ct" in printed else dt.date(2022, 2, 16)
        assert one(ground(Doc(date=d), [page([printed], WordSource.OCR)]), "date").grounded is True, printed
