"""`linli up`: the whole system on this machine, a demo district, and a short scripted scenario."""

import asyncio
import os
import shutil
import signal
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo
from typing import Any

from contracts import API
from linli import identity_cli
from linli.client import Client, caught_up, redacted
from linli.embedded import listening
from linli.permissions import CREDENTIALS
from linli.show import console, local_time, print_event
from linli.system import System
from services.common.runtime import cancel_and_wait

DISTRICT = "beibei"
GRIDS = ["quanwai-01", "quanwai-02", "quanwai-03"]
VOLUNTEERS = [
    ("袁文", "repair.mending,repair.keys", 0, 2),
    ("陈兴群", "repair.mending", 0, 1),
    ("张建国", "repair", 0, 2),
    ("刘师傅", "repair.plumbing,repair.appliance", 1, 1),
    ("李红梅", "haircut", 0, 2),
    ("王丽", "haircut,elderly.visit", 1, 1),
    ("赵大夫", "health", 1, 2),
    ("孙老师", "tutoring", 2, 2),
    ("周明", "tutoring.homework,tutoring.reading", 2, 1),
    ("吴芳", "elderly", 0, 2),
    ("郑阿姨", "elderly.visit,elderly.phone", 1, 3),
    ("冯磊", "meals", 2, 2),
    ("陈静", "meals.delivery,elderly.chores", 2, 1),
    ("褚强", "employment", 1, 1),
    ("卫心", "counselling", 0, 1),
    ("蒋涛", "repair.appliance", 2, 1),
    ("沈红", "elderly.escort,health.medicine", 0, 1),
    ("韩冰", "tutoring.reading", 1, 1),
    ("杨帆", "employment.training", 2, 1),
    ("朱敏", "repair.plumbing", 2, 1),
]


class Watch:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()

    async def see(self, event: dict[str, Any]) -> None:
        print_event(event)
        async with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def matching(self, kind: str, **data: Any) -> list[dict[str, Any]]:
        return [
            e for e in self.events
            if e["type"] == f"linli.{kind}" and all(e["data"].get(k) == v for k, v in data.items())
        ]

    async def until(self, kind: str, count: int = 1, timeout: float = 30.0, **data: Any) -> list[dict[str, Any]]:
        async def wait() -> list[dict[str, Any]]:
            async with self.changed:
                while len(found := self.matching(kind, **data)) < count:
                    await self.changed.wait()
                return found

        return await asyncio.wait_for(wait(), timeout)


PAUSE = float(os.environ.get("LINLI_DEMO_PAUSE", "1.0"))  # seconds between steps, so a person can follow


def step(text: str) -> None:
    console.print()
    console.rule(f"[bold]{text}", align="left")


async def scenario(client: Client, watch: Watch, people: identity_cli.People) -> None:
    # The dispatcher answers the hotline and, for the demo, relays the volunteers' answers by phone;
    # the first request comes in at the kiosk of its grid.
    client.token = people.dispatcher
    menu = await client.call(API.INTAKE_CATALOG, {})
    step(f"1. The service menu: {len(menu['categories'])} categories")
    for category in menu["categories"]:
        console.print(f"   {category['name']:<6} {', '.join(item['name'] for item in category['items'])}")

    step(f"2. {len(VOLUNTEERS)} volunteers sign up in three grids of Quanwaiyuan community, Beibei")
    ids: dict[str, str] = {}
    for n, (name, skills, grid, capacity) in enumerate(VOLUNTEERS):
        reply = await client.call(API.INTAKE_REGISTER_VOLUNTEER, {
            "name": name, "phone": f"1390023{n:04d}", "district": DISTRICT, "grids": [GRIDS[grid]],
            "skills": skills.split(","), "capacity": capacity,
        })
        ids[name] = reply["volunteer_id"]
    await watch.until("volunteer.registered", count=len(VOLUNTEERS))
    await caught_up(client.nc, "matcher", "volunteer.registered")  # the matchers' roster is built from them

    await asyncio.sleep(PAUSE)
    step("3. 王秀英 (78, lives alone) asks at the kiosk: the kitchen tap is leaking")
    request = await client.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"demo-{uuid.uuid4()}", "district": DISTRICT, "grid": "quanwai-03",
        "service": "repair.plumbing", "description": "厨房水龙头漏水", "urgency": "soon", "channel": "kiosk",
        "resident": {"name": "王秀英", "phone": "13800138000", "address": "泉外园3栋2单元401"},
    }, token=people.kiosk)
    request_id = request["request_id"]
    first = (await watch.until("volunteer.assigned", request_id=request_id))[0]["data"]
    names = {v: k for k, v in ids.items()}
    console.print(f"   offered to {names[first['volunteer_id']]}, the plumber in her own grid. Why:")
    explain_offer(first["explanation"])

    await asyncio.sleep(PAUSE)
    step(f"4. {names[first['volunteer_id']]} is at work and declines; the offer moves on")
    await client.call(API.MATCHER_RESPOND, {
        "assignment_id": first["assignment_id"], "volunteer_id": first["volunteer_id"], "accept": False,
        "reason": "在上班",
    })
    await watch.until("volunteer.assigned", count=2, request_id=request_id)
    await asyncio.sleep(0.5)  # a wider stage may ask more than one at once
    round_two = [e["data"] for e in watch.matching("volunteer.assigned", request_id=request_id)][1:]
    second = round_two[0]
    helper = second["volunteer_id"]
    console.print(f"   stage {second['stage']}: offered to {', '.join(names[o['volunteer_id']] for o in round_two)}")

    await asyncio.sleep(PAUSE)
    step(f"5. {names[helper]} accepts; the resident can see who is coming")
    await client.call(API.MATCHER_RESPOND, {
        "assignment_id": second["assignment_id"], "volunteer_id": helper, "accept": True,
    })
    await watch.until("assignment.accepted", request_id=request_id)
    status = await wait_status(client, request_id, "accepted")
    console.print(f"   status: {status['status']} — " + "; ".join(h["note"] for h in status["history"]))

    await asyncio.sleep(PAUSE)
    step("6. The repair takes 1.5 hours; the hours become points in the civilization bank")
    await client.call(API.MATCHER_COMPLETE, {
        "assignment_id": second["assignment_id"], "volunteer_id": helper, "hours": "1.5", "note": "换了阀芯",
    })
    await watch.until("points.earned", request_id=request_id)

    await asyncio.sleep(PAUSE)
    step("7. 王秀英 rates the service")
    await wait_status(client, request_id, "completed")
    await client.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5, "comment": "师傅很细心"})
    await watch.until("request.rated", request_id=request_id)
    await asyncio.sleep(0.5)
    balance = await client.call(API.LEDGER_BALANCE, {"volunteer_id": helper})
    console.print(
        f"   {names[helper]}: {balance['hours']} h, {balance['points']} points, "
        f"{balance['services']} service(s), average {balance.get('average_stars') or '-'} stars"
    )

    await asyncio.sleep(PAUSE)
    step("8. An urgent escort to the clinic is offered to everyone suitable at once; the first to accept takes it")
    escort = await client.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"demo-{uuid.uuid4()}", "district": DISTRICT, "grid": "quanwai-01",
        "service": "elderly.escort", "description": "头晕，需要陪同去社区医院", "urgency": "urgent",
        "channel": "hotline", "resident": {"name": "赵大爷", "phone": "13800138002"},
    })
    await watch.until("volunteer.assigned", request_id=escort["request_id"])
    await asyncio.sleep(0.5)  # the fan-out's offers go out together
    offers = [e["data"] for e in watch.matching("volunteer.assigned", request_id=escort["request_id"])]
    console.print(f"   offered at once to {', '.join(names[o['volunteer_id']] for o in offers)}")
    winner = offers[-1]
    await client.call(API.MATCHER_RESPOND, {
        "assignment_id": winner["assignment_id"], "volunteer_id": winner["volunteer_id"], "accept": True,
    })
    if len(offers) > 1:
        await watch.until("assignment.withdrawn", request_id=escort["request_id"], count=len(offers) - 1)
    console.print(f"   {names[winner['volunteer_id']]} answered first; the other offers were withdrawn")

    await asyncio.sleep(PAUSE)
    step("9. A request nobody on the roster can take goes to an operator, not into silence")
    urgent = await client.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"demo-{uuid.uuid4()}", "district": DISTRICT, "grid": "quanwai-01",
        "service": "legal.advice", "description": "房屋租赁纠纷", "urgency": "urgent", "channel": "hotline",
        "resident": {"name": "李淑君", "phone": "13800138001"},
    })
    await watch.until("request.unmatched", request_id=urgent["request_id"])

    await asyncio.sleep(PAUSE)
    await missed_visit(client, watch)
    await asyncio.sleep(1.0)

    step("The system keeps running. In another terminal, try:")
    console.print(
        "   linli login --user dispatcher     (its password is in <data>/credentials/people.txt)\n"
        f"   linli submit --district {DISTRICT} --grid quanwai-01 --service haircut.home --name 张奶奶 --phone 13800000002\n"
        f"   linli assignments {ids['李红梅']}\n"
        f"   linli status {request_id}\n"
        f"   linli balance {helper}\n"
        "   linli tail\n"
        "Ctrl-C stops everything."
    )


async def missed_visit(client: Client, watch: Watch) -> None:
    # The visit falls due at the next full minute of the district's clock; the demo's graces are seconds long.
    due = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(minutes=1)).strftime("%H:%M")
    step(f"10. 张桂兰, 86 and living alone, has a care group; today's visit is due by {due} and nobody comes")
    operator = {"person_id": "dispatcher", "role": "operator", "district": DISTRICT}  # as the token says
    plan = await client.call(API.CARE_CREATE_PLAN, {
        "idempotency_key": f"demo-care-{uuid.uuid4()}", "reader": operator, "district": DISTRICT,
        "community": "quanwaiyuan", "grid": "quanwai-01", "resident_name": "张桂兰", "resident_phone": "13800138011",
        "address": "泉外园小区5栋101", "resident_kind": "elderly_alone", "health_notes": "高血压，去年轻度中风",
        "medicines": ["硝苯地平"], "family_phones": ["13900000001"],
        "group": [
            {"person_id": "neighbour-li", "name": "对门李阿姨", "role": "neighbour"},
            {"person_id": "worker-zhao", "name": "社区赵姐", "role": "community_worker"},
            {"person_id": "grid-wang", "name": "网格员王哥", "role": "grid_worker"},
        ],
        "duties": [{"duty_id": "visit", "kind": "visit", "rhythm": "daily", "due": due, "holder": "neighbour-li"}],
        "reason": "独居高龄，三人关爱小组",
    })
    console.print(f"   plan {plan['plan_id'][:11]}: neighbour 李阿姨 visits daily; 赵姐 and grid worker 王哥 back her up")
    console.print("   (events carry only the pseudonym; her notes, medicines and family phones stay in care)")
    await watch.until("care.duty.missed", plan_id=plan["plan_id"], timeout=120)
    await watch.until("care.escalated", plan_id=plan["plan_id"], step=3, timeout=60)
    reply = await client.call(API.CARE_CHECK_IN, {
        "idempotency_key": f"demo-checkin-{uuid.uuid4()}", "plan_id": plan["plan_id"], "duty_id": "visit",
        "by": "grid-wang", "mode": "visit", "outcome": "fine"})
    await watch.until("care.escalation.stopped", plan_id=plan["plan_id"])
    console.print(f"   王哥 went round and found her well (late: {not reply['on_time']}); the chain stopped "
                  "before the operators were called")


def explain_offer(explanation: dict[str, Any]) -> None:
    parts = explanation.get("components", {})
    console.print(
        f"   rank {explanation.get('rank')} of {explanation.get('considered')} in stage {explanation.get('stage')}, "
        f"score {explanation.get('score')} = "
        + " + ".join(f"{name} {part['points']}" for name, part in parts.items())
    )


async def wait_status(client: Client, request_id: str, status: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await client.call(API.INTAKE_STATUS, {"request_id": request_id})
        if view["status"] == status or asyncio.get_running_loop().time() > deadline:
            return view
        await asyncio.sleep(0.1)


async def play_demo(client: Client, watch: "Watch", system: System) -> None:
    step("0. People sign in: an administrator makes a dispatcher, a bank clerk and the kiosk of quanwai-03")
    people = await identity_cli.create_people(client, system.data_dir, DISTRICT, "quanwai-03")
    console.print(f"   their passwords and the kiosk's secret: {identity_cli.people_file(system.data_dir)}")
    await scenario(client, watch, people)


def show_pages(system: System) -> None:
    """Each page's address, with the demo's sign-ins (from credentials/people.txt, made by the demo)."""
    if not system.web_url:
        return
    people = {}
    if identity_cli.people_file(system.data_dir).exists():
        for line in identity_cli.people_file(system.data_dir).read_text().splitlines():
            if not line.startswith("#") and line.count("\t") == 3:
                name, role, place, secret = line.split("\t")
                people[role] = (name, secret)
    url = system.web_url
    kiosk, dispatcher = people.get("kiosk", ("", "")), people.get("dispatcher", ("", ""))
    clerk = people.get("bank_clerk", ("", ""))
    console.rule("[bold]pages (open in a browser)")
    rows = [
        ("kiosk", f"{url}/kiosk", f"sign the kiosk in once: device {kiosk[0]}, secret {kiosk[1]}" if kiosk[0] else ""),
        ("hotline", f"{url}/hotline", f"user {dispatcher[0]}, password {dispatcher[1]}" if dispatcher[0] else ""),
        ("console", f"{url}/ops", f"user {dispatcher[0]} / {dispatcher[1]}; bank clerk {clerk[0]} / {clerk[1]}"
         if dispatcher[0] else "sign in as admin with credentials/admin-password"),
        ("volunteer", f"{url}/v", "a demo volunteer's phone, e.g. 13900230000; the code is in logs/notifier-0.log"),
        ("resident", f"{url}/r", "the code on the kiosk's receipt and the phone's last four digits"),
        ("Open311", f"{url}/open311/v2/services.json",
         f"GeoReport v2; the demo client's api_key: {people['open311'][0]}" if "open311" in people else "GeoReport v2"),
    ]
    for name, address, how in rows:
        console.print(f"   {name:<10} {address}" + (f"   ({how})" if how else ""), soft_wrap=True)
    console.print(f"   every sign-in above is in {identity_cli.people_file(system.data_dir)}", soft_wrap=True)


async def run(system: System, demo: bool, once: bool) -> None:
    client = await Client.connect(system.nats_url, reconnect=True, token="")
    watch = Watch()
    await client.on_events(watch.see)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        system.stop_restarting()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping)
    try:
        if demo:  # Ctrl-C in the middle of the scenario ends it: the services it calls are stopping too
            play, stopped = asyncio.create_task(play_demo(client, watch, system)), asyncio.create_task(stop.wait())
            await asyncio.wait({play, stopped}, return_when=asyncio.FIRST_COMPLETED)
            await cancel_and_wait([play, stopped])
            if not play.cancelled():
                play.result()
        show_pages(system)
        if not once:
            await stop.wait()
    finally:
        await client.close()


LOCK = "linli-up.pid"
# Where `linli up` serves the pages, unless LINLI_WEB_PORT says otherwise or the port is taken.
DEFAULT_WEB_PORT = 8080


def running_pid(data_dir: Path) -> int | None:
    """The pid of a `linli up` still running in this data folder; a pid file left by one that died is
    ignored."""
    try:
        pid = int((data_dir / LOCK).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() else None


def take(lock: Path) -> bool:
    """Writes our pid into the lock file unless another running `linli up` holds it; of two started
    at the same moment, exactly one creates the file."""
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if running_pid(lock.parent) or not lock.read_text().strip():  # empty: its pid is being written
                return False
            lock.unlink(missing_ok=True)  # left by one that died
            continue
        with os.fdopen(descriptor, "w") as file:
            file.write(f"{os.getpid()}\n")
        return True
    return False


def holds_data(data_dir: Path) -> bool:
    return data_dir.exists() and any(entry.name != LOCK for entry in data_dir.iterdir())


def up(data_dir: Path, demo: bool = True, matchers: int = 2, fresh: bool = False, once: bool = False) -> int:
    if pid := running_pid(data_dir):
        print(f"linli up is already running in {data_dir}/ (pid {pid}); stop it first, or give another folder "
              "with --data", file=sys.stderr)
        return 1
    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    external = {k: os.environ[k] for k in ("NATS_URL", "MONGO_URL") if os.environ.get(k)}
    # Seeding is for an empty folder only: played into last week's data, it would add a fake service
    # to the month's totals every morning.
    seeded_before = holds_data(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = data_dir / LOCK
    if not take(lock):
        print(f"linli up is already running in {data_dir}/ (pid {running_pid(data_dir)}); stop it first, or give "
              "another folder with --data", file=sys.stderr)
        return 1
    try:
        return run_system(data_dir, external, demo and not seeded_before, seeded_before and demo, matchers, once)
    finally:
        if lock.exists() and lock.read_text().strip() == str(os.getpid()):
            lock.unlink()


def run_system(
    data_dir: Path, external: dict[str, str], demo: bool, skipped: bool, matchers: int, once: bool
) -> int:
    console.rule("[bold]邻里 Linli — neighbourhood volunteer services")
    console.print(
        f"starting {'external servers ' + str(external) if external else 'nats-server and nx-27017 on loopback'}, "
        f"then identity, intake, {matchers} matcher(s), notifier, ledger, care, the public feed and the web's pages; data and logs in {data_dir}/"
    )
    if skipped:
        console.print(f"{data_dir}/ already holds data, so the demo is not played into it "
                      "(--fresh wipes the folder and plays it)", soft_wrap=True)
    system = System.start(
        data_dir,
        nats_url=external.get("NATS_URL"),
        mongo_url=external.get("MONGO_URL"),
        replicas={"matcher": matchers},
        env={"MATCHER_OFFER_TTL": os.environ.get("MATCHER_OFFER_TTL", "120"), **identity_cli.service_env(data_dir),
             # The demo's missed visit climbs its chain in seconds, not hours.
             **({"CARE_GRACES": "0,5,5,5", "CARE_WATCH_INTERVAL": "1", "CARE_BUCKET_SECONDS": "10"} if demo else {})},
        supervise=True,
        announce=lambda line: console.print(f"[bold yellow]{line}[/]", soft_wrap=True),
        web_port=int(os.environ.get("LINLI_WEB_PORT") or (0 if listening(DEFAULT_WEB_PORT) else DEFAULT_WEB_PORT)),
    )
    console.print(f"credentials in {data_dir / 'credentials'}/ (the administrator's password: admin-password; "
                  "sign in with `linli login --user admin`)")
    console.print(f"[green]running[/] since {local_time(datetime.now().astimezone())}: NATS {redacted(system.nats_url)}, "
                  f"MongoDB {system.mongo_url}; processes "
                  f"{', '.join(f'{k} (pid {p.pid})' for k, p in system.processes.items())}")
    if system.passwords:
        console.print(f"every process signs in to NATS as itself; the passwords are in {data_dir / CREDENTIALS} "
                      "(commands use the administrator's)", soft_wrap=True)
    try:
        asyncio.run(run(system, demo, once))
    except KeyboardInterrupt:
        pass
    finally:
        console.print("\nstopping…")
        system.stop()
        console.print("stopped cleanly.")
    return 0
