"""The bus knows who is connected: a real nats-server, configured from linli/permissions.py, refuses every
publish, subscription and JetStream request a user may not make, and lets through what it may."""

import asyncio
import importlib
import json
import os
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import ConsumerConfig, StreamConfig
from pydantic import BaseModel

from contracts import API, EVENT_TYPES, Envelope, event_subject, new_event
from contracts.events import HoursLogged, VolunteerRegistered
from contracts.subjects import OWNERS, STREAM, STREAM_SUBJECTS, owner_of
from linli import permissions
from linli.client import caught_up, nats_url, redacted
from linli.embedded import Server, tool
from linli.permissions import (
    ADMIN, CREDENTIALS, READS, SERVICE_USERS, USERS, deploy_config, ensure_credentials, load_credentials,
    password_variable,
)
from linli.system import SERVICES, System
from services.common.bus import consumer_name, envelope_json, settled
from services.common.config import BusSettings, nats_user
from services.common.runtime import Service
from services.ledger.app import build as build_ledger
from tests.conftest import SecureBus, Signed, eventually
from tests.test_ledger_service import ledger_settings

ROOT = Path(__file__).resolve().parent.parent
TIMEOUTS = (nats.errors.TimeoutError, asyncio.TimeoutError)
# Every event type with an owner, including those of services that publish under a prefix (care.*).
OWNED_TYPES = sorted({*EVENT_TYPES, *(t.replace("*", "example") for t in OWNERS)})


async def stream_of(bus: SecureBus) -> Signed:
    admin = await bus.sign_in(ADMIN)
    await admin.nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=STREAM_SUBJECTS))
    return admin


async def stored(admin: Signed) -> int:
    return int((await admin.nc.jetstream().stream_info(STREAM)).state.messages)


async def answering(bus: SecureBus, service: str, heard: list[str]) -> Signed:
    """A responder signed in as `service`, answering every one of its calls and noting each."""
    signed = await bus.sign_in(service)

    async def answer(msg: Any) -> None:
        heard.append(msg.subject)
        await msg.respond(f'{{"answered_by": "{service}"}}'.encode())

    await signed.nc.subscribe(f"linli.api.{service}.>", queue=service, cb=answer)
    await settled(signed.nc)
    return signed


pytestmark = pytest.mark.service


async def test_a_kiosk_may_submit_but_the_server_refuses_its_hours_logged_adjust_and_contact(
    secure_bus: SecureBus,
) -> None:
    admin = await stream_of(secure_bus)
    heard: list[str] = []
    await answering(secure_bus, "ledger", heard)
    await answering(secure_bus, "intake", heard)
    kiosk = await secure_bus.sign_in("kiosk")

    submitted = await kiosk.nc.request(API.INTAKE_SUBMIT, b"{}", timeout=5)
    assert submitted.data == b'{"answered_by": "intake"}'
    for call in (API.LEDGER_ADJUST, API.INTAKE_CONTACT):
        with pytest.raises(TIMEOUTS):
            await kiosk.nc.request(call, b"{}", timeout=1)
        await kiosk.was_refused("publish", call)
    forged = event_subject("hours.logged", "beibei")
    await kiosk.nc.publish(forged, b'{"hours": "99"}')
    await kiosk.was_refused("publish", forged)

    assert heard == [API.INTAKE_SUBMIT]
    assert await stored(admin) == 0


async def test_only_the_owner_of_an_event_type_may_publish_it(secure_bus: SecureBus) -> None:
    admin = await stream_of(secure_bus)
    everyone = {name: await secure_bus.sign_in(name) for name in USERS if name != ADMIN}

    for event_type in OWNED_TYPES:
        subject = event_subject(event_type, "beibei")
        owner = owner_of(event_type)
        assert owner in SERVICE_USERS, f"{event_type} has no owner among the service users"
        await everyone[owner].nc.jetstream().publish(subject, b"{}")  # acknowledged: stored
        for name, signed in everyone.items():
            if name != owner:
                await signed.nc.publish(subject, b"{}")

    for event_type in OWNED_TYPES:
        subject = event_subject(event_type, "beibei")
        for name, signed in everyone.items():
            if name != owner_of(event_type):
                await signed.was_refused("publish", subject)
    assert await stored(admin) == len(OWNED_TYPES)


async def test_nobody_but_the_ledger_can_join_its_queue_group_and_answer_its_calls(secure_bus: SecureBus) -> None:
    heard: list[str] = []
    await answering(secure_bus, "ledger", heard)
    impostors = [await secure_bus.sign_in(name) for name in USERS if name not in ("ledger", ADMIN)]
    for impostor in impostors:
        async def made_up(msg: Any) -> None:
            await msg.respond(b'{"points": "99999"}')

        await impostor.nc.subscribe(API.LEDGER_BALANCE, queue="ledger", cb=made_up)
        await impostor.nc.subscribe("linli.api.ledger.>", cb=made_up)
    for impostor in impostors:
        await impostor.was_refused("subscription", API.LEDGER_BALANCE)
        await impostor.was_refused("subscription", "linli.api.ledger.>")

    web = await secure_bus.sign_in("web")
    answers = [(await web.nc.request(API.LEDGER_BALANCE, b"{}", timeout=5)).data for _ in range(20)]
    assert set(answers) == {b'{"answered_by": "ledger"}'} and len(heard) == 20


async def test_nobody_reads_the_calls_or_the_replies_of_others(secure_bus: SecureBus) -> None:
    await answering(secure_bus, "intake", [])
    snooped: list[str] = []

    async def snoop(msg: Any) -> None:
        snooped.append(msg.subject)

    snoopers = [await secure_bus.sign_in(name) for name in ("web", "district", "matcher", "notifier")]
    for snooper in snoopers:
        for subject in ("linli.api.>", "_INBOX.>", "_INBOX_kiosk.>", ">"):
            await snooper.nc.subscribe(subject, cb=snoop)
    for snooper in snoopers:
        for subject in ("linli.api.>", "_INBOX.>", "_INBOX_kiosk.>", ">"):
            await snooper.was_refused("subscription", subject)

    kiosk = await secure_bus.sign_in("kiosk")
    reply = await kiosk.nc.request(API.INTAKE_SUBMIT, b'{"resident": {"phone": "13800001111"}}', timeout=5)
    assert reply.subject.startswith("_INBOX_kiosk.")
    for snooper in snoopers:
        await snooper.nc.flush()
    assert snooped == []


async def test_only_the_administrator_may_delete_or_change_a_stream_or_a_consumer(secure_bus: SecureBus) -> None:
    admin = await stream_of(secure_bus)
    js = admin.nc.jetstream()
    durable = consumer_name("ledger", "hours.logged")
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=durable, filter_subject="linli.evt.hours.logged.*"))
    attacks = [
        f"$JS.API.CONSUMER.DELETE.{STREAM}.{durable}", f"$JS.API.STREAM.DELETE.{STREAM}",
        f"$JS.API.STREAM.UPDATE.{STREAM}", f"$JS.API.STREAM.PURGE.{STREAM}", f"$JS.API.STREAM.MSG.DELETE.{STREAM}",
    ]
    everyone = [await secure_bus.sign_in(name) for name in USERS if name != ADMIN]
    for signed in everyone:  # the ledger itself included: its consumer is not its to delete
        for subject in attacks:
            await signed.nc.publish(subject, b"{}")
    for signed in everyone:
        for subject in attacks:
            await signed.was_refused("publish", subject)

    assert (await js.consumer_info(STREAM, durable)).name == durable
    assert (await js.stream_info(STREAM)).config.subjects == STREAM_SUBJECTS


async def test_a_service_pulls_its_own_consumer_and_not_another_services(secure_bus: SecureBus) -> None:
    admin = await stream_of(secure_bus)
    durable = consumer_name("ledger", "hours.logged")
    await admin.nc.jetstream().add_consumer(
        STREAM, ConsumerConfig(durable_name=durable, filter_subject="linli.evt.hours.logged.*"))
    matcher = await secure_bus.sign_in("matcher")
    await matcher.nc.jetstream().publish(event_subject("hours.logged", "beibei"), b"{}")

    await matcher.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}", b'{"batch": 1}')
    await matcher.was_refused("publish", f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}")

    ledger = await secure_bus.sign_in("ledger")
    pulled = await ledger.nc.jetstream().pull_subscribe_bind(durable, STREAM)
    [message] = await pulled.fetch(1, timeout=5)
    await message.ack()
    assert message.subject == event_subject("hours.logged", "beibei")
    assert ledger.refused == []


async def test_a_district_system_reads_the_public_feed_and_nothing_else(secure_bus: SecureBus) -> None:
    district = await secure_bus.sign_in("district")
    public: list[bytes] = []

    async def keep(msg: Any) -> None:
        public.append(msg.data)

    await district.nc.subscribe("linli.pub.>", cb=keep)
    for subject in ("linli.evt.>", "linli.api.>", "_INBOX_feed.>"):
        await district.nc.subscribe(subject, cb=keep)
        await district.was_refused("subscription", subject)
    for call in (API.INTAKE_SUBMIT, API.INTAKE_STATUS, API.LEDGER_BALANCE):
        await district.nc.publish(call, b"{}")
        await district.was_refused("publish", call)

    feed = await secure_bus.sign_in("feed")
    await feed.nc.publish("linli.pub.request.created.beibei", b'{"request": "pub-1"}')
    intake = await secure_bus.sign_in("intake")
    await intake.nc.publish(event_subject("request.created", "beibei"), b'{"resident": "name and phone"}')
    await eventually(lambda: public == [b'{"request": "pub-1"}'])
    await intake.nc.flush()
    assert public == [b'{"request": "pub-1"}']
    assert feed.refused == [] and intake.refused == []


# --- the real ledger behind a secure server -----------------------------------------------------------

def envelope(data: BaseModel, source: str, about: str) -> Envelope[Any]:
    return new_event(data, source=source, district="beibei", subject=about, correlationid=about)


def logged(volunteer_id: str, source: str = "linli/matcher") -> Envelope[Any]:
    request_id = f"r-{uuid.uuid4()}"
    return envelope(HoursLogged(volunteer_id=volunteer_id, request_id=request_id, assignment_id=f"a-{uuid.uuid4()}",
                                hours=Decimal("2"), category="repair", urgency="routine",
                                completed_at=datetime(2026, 5, 6, 4, 0, tzinfo=UTC)), source, request_id)


@pytest.fixture
async def secure_ledger(secure_bus: SecureBus, mongo_server: Server) -> AsyncIterator[Service]:
    bus = BusSettings(nats_url=secure_bus.url("ledger"), mongo_url=mongo_server.url,
                      db_prefix=f"t{uuid.uuid4().hex[:10]}", retry_base_delay=0.1, max_deliver=3, ack_wait=5)
    service = build_ledger(ledger_settings(bus))
    await service.start()  # as itself: it creates the stream it reads, and its own consumers
    yield service
    await service.stop()


async def test_the_ledger_credits_the_matchers_hours_and_nobody_elses(
    secure_bus: SecureBus, secure_ledger: Service
) -> None:
    volunteer = f"v-{uuid.uuid4()}"
    intake, matcher = await secure_bus.sign_in("intake"), await secure_bus.sign_in("matcher")
    kiosk, notifier = await secure_bus.sign_in("kiosk"), await secure_bus.sign_in("notifier")
    admin = await secure_bus.sign_in(ADMIN)
    joined = envelope(VolunteerRegistered(volunteer_id=volunteer, district="beibei", grids=["g1"], skills=["repair"],
                                          capacity=1), "linli/intake", volunteer)
    await intake.nc.jetstream().publish(event_subject("volunteer.registered", "beibei"), envelope_json(joined))
    await eventually(lambda: secure_ledger.db["accounts"].find_one({"_id": volunteer}), timeout=15)

    subject = event_subject("hours.logged", "beibei")
    for forger in (kiosk, notifier):  # a credential that does not own hours.logged
        await forger.nc.publish(subject, envelope_json(logged(volunteer)))
        await forger.was_refused("publish", subject)
        # nor may it stop the crediting by deleting the ledger's consumer
        await forger.nc.publish(f"$JS.API.CONSUMER.DELETE.{STREAM}.ledger-hours-logged", b"")
        await forger.was_refused("publish", f"$JS.API.CONSUMER.DELETE.{STREAM}.ledger-hours-logged")
    # An envelope that says it came from someone else is not believed, even on the right subject.
    await admin.nc.jetstream().publish(subject, envelope_json(logged(volunteer, source="linli/notifier")))
    await matcher.nc.jetstream().publish(subject, envelope_json(logged(volunteer)))

    web = await secure_bus.sign_in("web")
    await caught_up(admin.nc, "ledger", "hours.logged")
    balance = (await web.nc.request(API.LEDGER_BALANCE, f'{{"volunteer_id": "{volunteer}"}}'.encode(), timeout=5))
    assert Decimal(json.loads(balance.data)["hours"]) == Decimal("2")
    # the one that named the notifier as its source, set aside as it arrived (registered 1, it 2, matcher 3)
    [letter] = await eventually(lambda: secure_ledger.db["dead_letters"].find({}).to_list())
    assert (letter["stream_seq"], letter["reason"]) == (2, "terminated")


# --- the table, the files made from it, and where the passwords live ---------------------------------

@pytest.mark.domain
def test_the_checked_in_nats_conf_is_the_one_the_permissions_table_makes() -> None:
    assert (ROOT / "deploy" / "nats.conf").read_text() == deploy_config(), (
        "deploy/nats.conf is out of date: run `python -m linli.permissions > deploy/nats.conf`")


@pytest.mark.domain
def test_nats_server_accepts_the_checked_in_configuration_with_passwords_from_the_environment() -> None:
    env = {**os.environ, **{password_variable(name): f"pw-{name}" for name in USERS}}
    checked = subprocess.run([tool("nats-server"), "-t", "-c", str(ROOT / "deploy" / "nats.conf")],
                             capture_output=True, text=True, env=env, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.domain
@pytest.mark.parametrize("service", SERVICES)
def test_every_consumer_and_call_a_service_opens_is_allowed_by_its_user(service: str) -> None:
    built = importlib.import_module(f"services.{service}.app").build()
    durables = {sub.extra_options["durable"] for sub in built.broker.subscribers
                if getattr(sub, "extra_options", {}).get("durable")}
    allowed = {consumer_name(service, event_type) for event_type in READS[service]}
    assert durables <= allowed, f"add to READS[{service!r}] in linli/permissions.py: {sorted(durables - allowed)}"
    # The rest are plain subscriptions: its own calls and the dead-letter advisories.
    plain = {sub.subject.broker_address for sub in built.broker.subscribers
             if not getattr(sub, "extra_options", {}).get("durable")}
    may = permissions.user(service).subscribe
    assert plain and all(any(within(subject, pattern) for pattern in may) for subject in plain), (plain, may)


def within(subject: str, pattern: str) -> bool:
    """Whether a NATS subscription to `subject` falls under the permission `pattern`."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or (token != "*" and token != tokens[i]) or (token == "*" and tokens[i] == ">"):
            return False
    return len(tokens) == len(wanted)


@pytest.mark.domain
def test_credentials_are_made_once_and_only_their_owner_reads_them(tmp_path: Path) -> None:
    first = ensure_credentials(tmp_path)
    again = ensure_credentials(tmp_path)
    assert first == again and set(first) == set(USERS) and len(set(first.values())) == len(USERS)
    assert stat.S_IMODE((tmp_path / CREDENTIALS).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / CREDENTIALS.parent).stat().st_mode) == 0o700

    (tmp_path / "urls.env").write_text("NATS_URL=nats://127.0.0.1:4999\n")
    env = os.environ.pop("NATS_URL", None)
    try:
        url = nats_url(tmp_path)
    finally:
        if env is not None:
            os.environ["NATS_URL"] = env
    assert url == f"nats://admin:{load_credentials(tmp_path)[ADMIN]}@127.0.0.1:4999"
    assert first[ADMIN] not in redacted(url) and redacted(url) == "nats://admin:***@127.0.0.1:4999"


@pytest.mark.domain
def test_a_user_added_to_the_table_gets_a_password_and_the_others_keep_theirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ensure_credentials(tmp_path)
    monkeypatch.setattr(permissions, "USERS", (*USERS, "archive"))
    second = ensure_credentials(tmp_path)
    assert {k: second[k] for k in first} == first and second["archive"] not in first.values()


# --- linli up's path: the whole system, secure by default ---------------------------------------------

@pytest.mark.system
async def test_a_system_started_as_linli_up_does_admits_only_its_users_each_service_as_itself(tmp_path: Path) -> None:
    system = System.start(tmp_path / "linli")
    try:
        assert "@" not in (tmp_path / "linli" / "urls.env").read_text()  # the address, never a password
        for key, process in system.processes.items():
            environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
            url = next(v.decode().removeprefix("NATS_URL=") for v in environ if v.startswith(b"NATS_URL="))
            assert nats_user(url) == key.rsplit("-", 1)[0]

        said: list[str] = []

        async def keep(exc: Exception) -> None:
            said.append(str(exc).lower())

        with pytest.raises(nats.errors.NoServersError):  # nobody gets in without a user
            await nats.connect(system.server_url, max_reconnect_attempts=1, connect_timeout=2, error_cb=keep)
        assert any("authorization violation" in line for line in said), said

        kiosk = await Signed("kiosk").connect(system.url_for("kiosk"))
        try:
            catalog = json.loads((await kiosk.nc.request(API.INTAKE_CATALOG, b"{}", timeout=10)).data)
            assert catalog["categories"], catalog  # answered by the real intake, signed in as itself
            await kiosk.nc.publish(API.LEDGER_ADJUST, b"{}")
            await kiosk.was_refused("publish", API.LEDGER_ADJUST)
        finally:
            await kiosk.nc.close()
    finally:
        system.stop()
