"""The console's decisions, without I/O: which filters a queue keeps, whose events an operator's stream
carries and what of them, where a refusal is shown, which month a report is of, and that every word of the
console exists in both languages."""

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from linli.client import CallFailed
from services.common.auth import Actor
from services.web import ops, ops_reports
from services.web.pages import Refusal
from services.web.texts import Words, load

pytestmark = pytest.mark.domain

PLACE = {"id": "beibei", "communities": [{"id": "quanwai"}, {"id": "tiansheng"}],
         "grids": [{"id": "quanwai-01", "community": "quanwai"}, {"id": "tiansheng-01", "community": "tiansheng"}]}
DISPATCHER = Actor("wang", "dispatcher", "beibei")
ADMIN = Actor("admin", "administrator", "*")


def test_the_queue_keeps_only_filters_its_own_selects_offer() -> None:
    kept = ops.filters_from({"state": "overdue", "community": "quanwai", "grid": "quanwai-01"}, "beibei", PLACE)
    assert kept == ops.Filters("beibei", "overdue", "quanwai", "quanwai-01")
    assert kept.query()["grid"] == "quanwai-01" and kept.query()["limit"] == ops.PAGE
    strange = ops.filters_from({"state": "deleted", "community": "elsewhere", "grid": "nowhere"}, "beibei", PLACE)
    assert strange == ops.Filters("beibei", "open")
    assert "community" not in strange.query() and "grid" not in strange.query()


def test_a_grid_of_another_community_than_the_one_chosen_is_dropped() -> None:
    assert ops.filters_from({"community": "quanwai", "grid": "tiansheng-01"}, "beibei", PLACE).grid == ""
    assert ops.filters_from({"grid": "tiansheng-01"}, "beibei", PLACE).params() == "district=beibei&state=open&grid=tiansheng-01"


def test_a_district_operator_works_in_their_district_and_an_administrator_picks_one() -> None:
    assert ops.district_for(DISPATCHER, "other", ["beibei", "other"]) == "beibei"
    assert ops.district_for(ADMIN, "other", ["beibei", "other"]) == "other"
    assert ops.district_for(ADMIN, "made-up", ["beibei", "other"]) == "beibei"


def test_a_district_operators_stream_carries_only_their_districts_events() -> None:
    ours, theirs = {"district": "beibei", "type": "linli.request.created"}, {"district": "other"}
    assert ops.sees(DISPATCHER, ours) and not ops.sees(DISPATCHER, theirs)
    assert ops.sees(ADMIN, ours) and ops.sees(ADMIN, theirs)


def test_the_stream_says_which_request_changed_and_nothing_of_its_data() -> None:
    event = {"type": "linli.request.created", "correlationid": "r-1", "district": "beibei",
             "data": {"description": "厨房水管漏水", "resident_ref": "p2-x"}}
    message = ops.sse_message(event)
    assert message.startswith("event: changed\ndata: ") and message.endswith("\n\n")
    assert '"request.created"' in message and '"r-1"' in message
    assert "厨房" not in message and "p2-x" not in message


def test_a_refusal_is_shown_next_to_the_volunteer_or_else_next_to_the_reason() -> None:
    fields = ("assign_volunteer", "assign_reason")
    assert ops.place_refusal(Refusal({}, "no room"), fields, "at_capacity") == {"assign_volunteer": "no room"}
    assert ops.place_refusal(Refusal({}, "cannot"), fields, "not_changeable") == {"assign_reason": "cannot"}
    assert ops.place_refusal(Refusal({}, "cannot"), ("cancel_reason",), "at_capacity") == {"cancel_reason": "cannot"}
    assert ops.place_refusal(Refusal({"assign_reason": "bad"}), fields, "invalid_request") == {"assign_reason": "bad"}


def test_times_are_shown_on_the_districts_clock() -> None:
    assert ops.local("2026-11-30T17:30:00+00:00", "Asia/Shanghai") == "12-01 01:30"
    assert ops.local(None, "Asia/Shanghai") == ""


def test_the_report_is_of_the_month_asked_or_this_month_on_the_districts_clock() -> None:
    assert ops_reports.month_asked("2026-11", "Asia/Shanghai") == "2026-11"
    late_in_utc = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # already 1 December in Shanghai
    assert ops_reports.month_asked("2026-13", "Asia/Shanghai", late_in_utc) == "2026-12"
    assert ops_reports.month_asked("", "UTC", late_in_utc) == "2026-11"
    assert ops_reports.by_asked("team") == "team" and ops_reports.by_asked("resident") == "grid"


def test_dead_letters_of_every_service_come_newest_first_each_with_its_service() -> None:
    rows = ops_reports.letter_rows({"intake": [{"_id": "a", "at": 1.0}], "ledger": [{"_id": "b", "at": 2.0}]})
    assert [(r["_id"], r["service"]) for r in rows] == [("b", "ledger"), ("a", "intake")]


def test_a_downloads_file_name_cannot_break_its_header() -> None:
    headers = ops_reports.download_headers({"file_name": 'x"; evil=1.csv'})
    assert headers["Content-Disposition"] == 'attachment; filename="x___evil_1.csv"'


def test_every_word_of_the_console_exists_in_chinese_and_in_english() -> None:
    texts = load(Path(ops.__file__).parent / "texts")
    zh = {k for k in texts["zh"] if k.startswith("ops.")}
    en = {k for k in texts["en"] if k.startswith("ops.")}
    assert zh == en and len(zh) > 100
    # Chinese pages carry no English words (placeholders and file kinds such as CSV aside).
    assert not [k for k in zh if re.search(r"[a-z]", re.sub(r"\{[a-z_]+\}", "", texts["zh"][k]))]


def test_a_refusal_is_said_in_the_pages_language_never_in_a_services_english_on_a_chinese_page() -> None:
    texts = load(Path(ops.__file__).parent / "texts")
    zh, en = Words("zh", texts["zh"]), Words("en", texts["en"])
    full = CallFailed("linli.api.matcher.assign", {"code": "at_capacity", "message": "this volunteer has no free capacity"})
    assert ops.explained(full, zh).message == texts["zh"]["ops.refused_at_capacity"]
    odd = CallFailed("linli.api.matcher.assign", {"code": "something_new", "message": "an English sentence"})
    assert "something_new" in ops.explained(odd, zh).message and "English" not in ops.explained(odd, zh).message
    assert ops.explained(odd, en).message == "an English sentence"
    shared = CallFailed("linli.api.intake.pair", {"code": "forbidden", "message": "a dispatcher may not"})
    assert ops.explained(shared, zh).message == texts["zh"]["common.forbidden"]
