"""Care's decisions without I/O: deadlines in the district's time, timer buckets, who each step tells."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from contracts.care import DutySpec
from services.care import handlers

pytestmark = pytest.mark.domain
SHANGHAI = ZoneInfo("Asia/Shanghai")
PLAN = {
    "district": "beibei",
    "group": [
        {"person_id": "n1", "role": "neighbour"}, {"person_id": "w1", "role": "community_worker"},
        {"person_id": "g1", "role": "grid_worker"}, {"person_id": "d1", "role": "director"},
    ],
    "covers": [{"person_id": "n2", "for_person": "n1", "start": "2026-12-05", "end": "2026-12-10"}],
}


def duty(**fields: object) -> DutySpec:
    return DutySpec.model_validate({"duty_id": "d", "kind": "visit", "rhythm": "daily", "due": "18:00",
                                    "holder": "n1", **fields})


def test_a_daily_deadline_is_at_the_local_hour_of_the_district() -> None:
    after = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)  # 19:00 in Beibei: today's 18:00 has passed
    assert handlers.next_due(duty(), after, SHANGHAI) == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def test_a_weekly_call_falls_on_its_weekday_and_dated_pickups_on_their_dates() -> None:
    after = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)  # a Tuesday
    assert handlers.next_due(duty(rhythm="weekly", weekday=4, due="10:00"), after, SHANGHAI) == \
        datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
    dated = duty(rhythm="dates", dates=["2026-12-15", "2026-11-01"], due="12:00")
    assert handlers.next_due(dated, after, SHANGHAI) == datetime(2026, 12, 15, 4, 0, tzinfo=UTC)
    assert handlers.next_due(dated, datetime(2026, 12, 16, tzinfo=UTC), SHANGHAI) is None


def test_the_buckets_since_the_last_pass_include_both_ends() -> None:
    since = handlers.bucket(datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC), 60)
    keys = handlers.buckets(since, datetime(2026, 12, 1, 10, 2, 5, tzinfo=UTC), 60)
    assert keys == ["20261201100000", "20261201100100", "20261201100200"]


def test_each_step_tells_the_next_people_and_a_cover_stands_in_for_the_holder() -> None:
    on = date(2026, 12, 1)
    assert handlers.recipients(PLAN, "n1", "holder", on) == ["person:n1"]
    assert handlers.recipients(PLAN, "n1", "group", on) == ["person:w1"]
    assert handlers.recipients(PLAN, "n1", "grid_worker", on) == ["person:g1"]
    assert handlers.recipients(PLAN, "n1", "operators", on) == ["operators"]
    assert handlers.recipients(PLAN, "n1", "holder", date(2026, 12, 6)) == ["person:n2"]


def test_steps_follow_each_other_by_their_graces_and_the_operators_are_the_last() -> None:
    due = datetime(2026, 12, 1, 10, tzinfo=UTC)
    graces = (0.0, 1800.0, 3600.0, 7200.0)
    occurrence = {"step": 0, "chain_from": due}
    first = handlers.next_step(occurrence, graces)
    assert (first.step, first.level, first.next_at) == (1, "holder", due + timedelta(minutes=30))
    last = handlers.next_step({"step": 3, "chain_from": due}, graces)
    assert (last.step, last.level, last.next_at) == (4, "operators", None)


def test_a_check_in_answers_the_earliest_open_deadline_whose_window_has_begun() -> None:
    today = {"_id": "a", "state": "escalating", "due_at": datetime(2026, 12, 1, 10, tzinfo=UTC),
             "opens_at": datetime(2026, 11, 30, 10, tzinfo=UTC)}
    tomorrow = {"_id": "b", "state": "open", "due_at": datetime(2026, 12, 2, 10, tzinfo=UTC),
                "opens_at": datetime(2026, 12, 1, 10, tzinfo=UTC)}
    assert handlers.answered([tomorrow, today], datetime(2026, 12, 1, 12, tzinfo=UTC)) == today
    assert handlers.answered([tomorrow, {**today, "state": "stopped"}], datetime(2026, 12, 1, 12, tzinfo=UTC)) == tomorrow


def test_the_pseudonym_is_stable_and_reveals_nothing() -> None:
    ref = handlers.resident_ref("beibei", "张桂兰", "13800138011")
    assert ref == handlers.resident_ref("beibei", "张桂兰", "13800138011")
    assert "13800138011" not in ref and ref != handlers.resident_ref("beibei", "张桂兰", "13800138012")


REPORT = {"month": "2026-12", "due": 31, "on_time": 27, "late": 2, "missed": 2, "escalations": 4,
          "endings": {"checked_in": 3, "open": 1, "plan_ended": 0},
          "csv": "plan_id,resident_ref,due,on_time,late,missed,escalations,last_contact\ncp-1,res-1,31,27,2,2,4,\n"}


def test_the_month_chart_and_csv_are_written(tmp_path: Path) -> None:
    from services.care import reports

    reports.render_chart(REPORT, tmp_path / "care.png", "泉外社区", date(2027, 1, 2))
    reports.write_report_csv(REPORT, tmp_path / "care.csv")
    assert (tmp_path / "care.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "care.csv").read_text(encoding="utf-8-sig").splitlines()[1] == "cp-1,res-1,31,27,2,2,4,"
    words = reports.chart_texts(REPORT, "泉外社区", date(2027, 1, 2))
    assert words["title"] == "泉外社区  2026年12月关爱服务月报" and "已有人签到 3 次，仍在升级 1 次" in words["escalations"]


def test_a_call_nobody_answers_is_no_contact_and_starts_no_escalation() -> None:
    assert not handlers.is_contact("call", "not_home") and not handlers.starts_escalation("call", "not_home")
    assert handlers.starts_escalation("visit", "not_home") and handlers.is_contact("call", "refused")
