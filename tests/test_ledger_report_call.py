"""ledger.report: the month's table, CSV and wall chart over a call, for the district's committee, clerks and
dispatchers, with tokens required; another district's committee is forbidden and a month that is not one is
refused, each before anything is read."""

import base64
import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from contracts import API
from services.common.config import BusSettings
from services.common.runtime import Service
from tests.conftest import Bus
from tests.test_care_authorization import Signer
from tests.test_ledger_service import ledger_settings, started
from tests.test_reports_service import RATINGS, november

pytestmark = pytest.mark.service


@pytest.fixture
def signer_and_key(tmp_path: Path) -> tuple[Signer, str]:
    from services.common import auth

    key = auth.load_private(auth.new_private_pem())
    public = auth.public_pem(key)
    key_file = tmp_path / "token-key.pem"
    key_file.write_text(public)
    return Signer(key, auth.key_id(public)), str(key_file)


@pytest.fixture
async def ledger(settings: BusSettings, signer_and_key: tuple[Signer, str]) -> AsyncIterator[Service]:
    secured = replace(settings, auth="required", token_key=signer_and_key[1])
    service = await started(ledger_settings(secured))
    await service.db["entries"].insert_many(november())
    await service.db["ratings"].insert_many(RATINGS)
    yield service
    await service.stop()


async def call(bus: Bus, payload: dict[str, Any], token: str) -> dict[str, Any]:
    reply = await bus.nc.request(API.LEDGER_REPORT, json.dumps(payload).encode(), timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})
    result: dict[str, Any] = json.loads(reply.data)
    return result


async def test_the_districts_committee_reads_the_month_as_a_table_a_csv_and_a_chart(
    ledger: Service, bus: Bus, signer_and_key: tuple[Signer, str]
) -> None:
    committee = signer_and_key[0].token("wei", "committee", "quanwai")
    table = await call(bus, {"district": "quanwai", "month": "2026-11"}, committee)
    assert table["headline"] == "本月服务 5 次，服务居民 4 人，志愿时长 8.25 小时"
    assert table["rows"][-1][2] == "合计 Total" and table["rows"][-1][3] == "5"
    assert table["content_base64"] == "" and len(table["headings"]) == len(table["rows"][0])

    by_team = await call(bus, {"district": "quanwai", "month": "2026-11", "by": "team", "format": "csv"}, committee)
    assert by_team["content_type"].startswith("text/csv") and by_team["file_name"] == "quanwai-2026-11-team.csv"
    parsed = list(csv.reader(io.StringIO(base64.b64decode(by_team["content_base64"]).decode("utf-8-sig"))))
    assert parsed[0] == by_team["headings"] and parsed[1:] == by_team["rows"]

    clerk = signer_and_key[0].token("li", "bank_clerk", "quanwai")
    chart = await call(bus, {"district": "quanwai", "month": "2026-11", "format": "png"}, clerk)
    assert chart["content_type"] == "image/png"
    assert base64.b64decode(chart["content_base64"]).startswith(b"\x89PNG")


async def test_another_districts_committee_is_forbidden_and_a_bad_month_is_invalid(
    ledger: Service, bus: Bus, signer_and_key: tuple[Signer, str]
) -> None:
    signer = signer_and_key[0]
    elsewhere = await call(bus, {"district": "quanwai", "month": "2026-11"}, signer.token("wu", "committee", "beibei"))
    assert elsewhere["error"]["code"] == "forbidden"
    volunteer = await call(bus, {"district": "quanwai", "month": "2026-11"}, signer.token("v-yuan", "volunteer", "quanwai"))
    assert volunteer["error"]["code"] == "forbidden"
    for month in ("2026-13", "2026-1", "0000-01", "November"):
        bad = await call(bus, {"district": "quanwai", "month": month}, signer.token("wei", "committee", "quanwai"))
        assert bad["error"]["code"] == "invalid_request", month
    audit = await ledger.db["audit"].find({"subject": API.LEDGER_REPORT}).to_list()
    assert sorted(entry["outcome"] for entry in audit) == ["forbidden", "forbidden"]
