"""`linli up`'s way, with tokens required: the services as processes, the people the demo creates, and
the CLI signing in and sending its token with every later command."""

import asyncio
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts import API
from linli import cli, identity_cli
from linli.client import CallFailed, Client
from linli.system import System

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    data = tmp_path_factory.mktemp("secured")
    running = System.start(data, env={**identity_cli.service_env(data), "LINLI_AUTH": "required"})
    yield running
    running.stop()


def linli(data: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--data", str(data), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_cli_signs_in_and_every_later_command_carries_the_token(
    secured: System, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = secured.data_dir
    monkeypatch.setenv("LINLI_HOME", str(data))
    monkeypatch.delenv("LINLI_TOKEN", raising=False)
    code, _, err = linli(data, capsys, "requests", "--district", "beibei")
    assert code == 1 and "unauthenticated" in err

    password = data / "credentials" / "admin-password"
    code, out, _ = linli(data, capsys, "login", "--user", "admin", "--password-file", str(password))
    assert code == 0 and "administrator" in out
    assert private(data / "credentials" / "token") and private(password)
    assert linli(data, capsys, "requests", "--district", "beibei")[0] == 0

    assert linli(data, capsys, "logout")[0] == 0
    assert linli(data, capsys, "requests", "--district", "beibei")[0] == 1


def test_the_demo_people_sign_in_and_act_only_as_their_roles_allow(secured: System) -> None:
    async def run() -> None:
        client = await Client.connect(secured.nats_url, token="")
        try:
            people = await identity_cli.create_people(client, secured.data_dir, "beibei", "quanwai-03")
            request = {"idempotency_key": f"k-{uuid.uuid4()}", "district": "beibei", "grid": "quanwai-03",
                       "service": "repair.plumbing", "resident": {"name": "王秀英", "phone": "13800138000"}}
            assert "request_id" in await client.call(API.INTAKE_SUBMIT, request, token=people.kiosk)
            with pytest.raises(CallFailed) as refused:
                await client.call(API.INTAKE_SUBMIT, request | {"grid": "quanwai-01"}, token=people.kiosk)
            assert refused.value.error["code"] == "forbidden"
            with pytest.raises(CallFailed) as refused:
                await client.call(API.LEDGER_ADJUST, {
                    "volunteer_id": "v-1", "points": "1", "reason": "r", "operator": "x",
                    "idempotency_key": f"adj-{uuid.uuid4()}"}, token=people.dispatcher)
            assert refused.value.error["code"] == "forbidden"
        finally:
            await client.close()

    asyncio.run(run())
    people = identity_cli.people_file(secured.data_dir)
    assert private(people)
    rows = [line.split("\t") for line in people.read_text().splitlines() if not line.startswith("#")]
    assert {row[0] for row in rows if row[1] != "open311"} == {"admin", "dispatcher", "clerk", "kiosk-quanwai-03"}
    # and the Open311 demo client's key, with the account the web relays its calls as, readable by the owner only
    assert [row[1] for row in rows].count("open311") == 1
    keys, accounts = identity_cli.open311_files(secured.data_dir)
    assert private(keys) and private(accounts) and "open311-beibei\t" in accounts.read_text()
