"""The volunteer pages' form checks, without a browser or a bus: each bad value gets its words in the page's
language, and a good one comes back as the value the call will carry."""

from datetime import date
from decimal import Decimal

import pytest

from contracts.events import AwayPeriod, WeeklyWindow
from services.web.config import WebSettings
from services.web.pages import Refusal
from services.web.texts import Words, load
from services.web.volunteer import (
    check_away,
    check_done,
    check_hours,
    check_quantity,
    check_reason,
    check_window,
    fingerprint,
    plain_number,
)

pytestmark = pytest.mark.domain

TEXTS = load(WebSettings().texts)
ZH, EN = Words("zh", TEXTS["zh"]), Words("en", TEXTS["en"])


@pytest.mark.parametrize("typed, hours", [("1.5", Decimal("1.5")), (" 2 ", Decimal("2")), ("24", Decimal("24")),
                                          ("0.25", Decimal("0.25")), ("1，5", Decimal("1.5"))])
def test_hours_a_volunteer_can_give_are_taken_as_typed(typed: str, hours: Decimal) -> None:
    assert check_hours(typed, ZH) == hours


@pytest.mark.parametrize("typed, words", [
    ("", "common.required"), ("two", "volunteer.hours_not_a_number"), ("NaN", "volunteer.hours_not_a_number"),
    ("Infinity", "volunteer.hours_not_a_number"), ("0", "volunteer.hours_positive"), ("-1", "volunteer.hours_positive"),
    ("24.01", "volunteer.hours_at_most_24"), ("100", "volunteer.hours_at_most_24"),
    ("1.255", "volunteer.hours_two_places"),
])
def test_hours_out_of_bounds_or_not_a_number_are_refused_in_the_pages_language(typed: str, words: str) -> None:
    assert check_hours(typed, ZH) == ZH(words)
    assert check_hours(typed, EN) == EN(words)
    assert ZH(words) != EN(words) and ZH(words) != words  # a real text in each language, not the key


def test_done_needs_good_hours_and_a_note_of_bounded_length() -> None:
    assert check_done({"hours": "1.5", "note": " 换了水龙头 "}, ZH) == (Decimal("1.5"), "换了水龙头")
    refused = check_done({"hours": "25", "note": "x" * 1001}, EN)
    assert isinstance(refused, Refusal) and set(refused.fields) == {"hours", "note"}


def test_a_decline_needs_a_reason() -> None:
    assert check_reason("  这周不在家 ", ZH) == "这周不在家"
    refused = check_reason("   ", ZH)
    assert isinstance(refused, Refusal) and refused.fields == {"reason": ZH("volunteer.reason_required")}
    assert isinstance(check_reason("x" * 501, ZH), Refusal)


@pytest.mark.parametrize("typed, ok", [("1", True), ("100", True), ("0", False), ("101", False), ("1.5", False),
                                       ("", False), ("-2", False)])
def test_a_quantity_is_a_whole_number_from_1_to_100(typed: str, ok: bool) -> None:
    assert isinstance(check_quantity(typed, ZH), int) is ok


def test_a_weekly_window_needs_a_day_and_an_end_after_its_start() -> None:
    assert check_window(["0", "2", "2"], "09:00", "12:00", ZH) == WeeklyWindow(days=[0, 2], start="09:00", end="12:00")
    no_day = check_window([], "09:00", "12:00", ZH)
    assert isinstance(no_day, Refusal) and set(no_day.fields) == {"days"}
    backwards = check_window(["1"], "12:00", "09:00", ZH)
    assert isinstance(backwards, Refusal) and set(backwards.fields) == {"end"}
    assert isinstance(check_window(["9", "x"], "09:00", "12:00", ZH), Refusal)  # no day of the week


def test_days_away_run_forwards_and_not_wholly_in_the_past() -> None:
    today = date(2026, 12, 2)
    assert check_away("2026-12-10", "2026-12-20", today, ZH) == AwayPeriod(start=date(2026, 12, 10),
                                                                          end=date(2026, 12, 20))
    for start, end, field in (("2026-12-20", "2026-12-10", "away_end"), ("2026-11-01", "2026-11-05", "away_end"),
                              ("", "2026-12-10", "away_start"), ("12/10/2026", "2026-12-20", "away_start")):
        refused = check_away(start, end, today, ZH)
        assert isinstance(refused, Refusal) and field in refused.fields, (start, end)


def test_the_offers_list_changes_its_fingerprint_only_when_what_it_shows_changes() -> None:
    one = [{"assignment_id": "a-1", "status": "offered", "description": "x"}]
    assert fingerprint(one) == fingerprint([{**one[0], "description": "y"}])
    assert fingerprint(one) != fingerprint([{**one[0], "status": "accepted"}])
    assert fingerprint(one) != fingerprint([])


def test_figures_are_shown_without_trailing_zeros() -> None:
    assert [plain_number(v) for v in ("15.00", "1.50", "100000.00", "0.00", "4.33")] == ["15", "1.5", "100000", "0", "4.33"]


def test_every_volunteer_text_is_in_both_languages() -> None:
    zh = {k for k in TEXTS["zh"] if k.startswith("volunteer.")}
    assert zh and zh == {k for k in TEXTS["en"] if k.startswith("volunteer.")}
