"""linli: run the system on one machine, and act on it as an operator, a resident or a volunteer would."""

import argparse
import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import nats.errors
from pymongo.errors import ConnectionFailure
from rich.markup import escape

from contracts import API
from linli import care_cli, identity_cli, intake_cli, ledger_cli, matcher_cli, report_cli
from linli.client import DEFAULT_DATA, CallFailed, Client, SignInRefused, mongo_url, nats_url, where
from linli.show import console, print_event
from linli.system import SERVICES
from services.common.runtime import health_subject


def split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linli", description=__doc__)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="where `linli up` keeps its data (.linli-data)")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start servers, the services and the demo; Ctrl-C stops everything")
    up.add_argument("--no-demo", action="store_true", help="start without seeding and playing the demo")
    up.add_argument("--matchers", type=int, default=2, help="matcher processes to run (default 2)")
    up.add_argument("--fresh", action="store_true", help="delete the data folder first")
    up.add_argument("--once", action="store_true", help="stop after the demo instead of running until Ctrl-C")

    s = sub.add_parser("submit", help="a resident's request")
    s.add_argument("--district", required=True)
    s.add_argument("--grid", required=True)
    s.add_argument("--service", required=True, help="catalogue item id, see `linli catalog`")
    s.add_argument("--name", required=True)
    s.add_argument("--phone", required=True)
    s.add_argument("--address", default="")
    s.add_argument("--description", default="")
    s.add_argument("--urgency", choices=["routine", "soon", "urgent"], default="routine")
    s.add_argument("--channel", choices=["kiosk", "hotline", "app", "operator"], default="operator")
    s.add_argument("--key", help="idempotency key (default: a new one)")

    r = sub.add_parser("register", help="register a volunteer")
    r.add_argument("--name", required=True)
    r.add_argument("--phone", required=True)
    r.add_argument("--district", required=True)
    r.add_argument("--grids", required=True, help="comma-separated grid ids")
    r.add_argument("--skills", required=True, help="comma-separated catalogue category or item ids")
    r.add_argument("--capacity", type=int, default=1)

    a = sub.add_parser("respond", help="accept or decline an offer for a volunteer")
    a.add_argument("assignment")
    a.add_argument("--volunteer", required=True)
    choice = a.add_mutually_exclusive_group(required=True)
    choice.add_argument("--accept", action="store_true")
    choice.add_argument("--decline", action="store_true")
    a.add_argument("--reason", default="")

    c = sub.add_parser("complete", help="report an assignment done, with its hours")
    c.add_argument("assignment")
    c.add_argument("--volunteer", required=True)
    c.add_argument("--hours", required=True)
    c.add_argument("--note", default="")

    rate = sub.add_parser("rate", help="a resident's rating of a completed request")
    rate.add_argument("request")
    rate.add_argument("--stars", type=int, required=True)
    rate.add_argument("--comment", default="")
    rate.add_argument("--not-done", action="store_true", help="the service was not done (reopens the request)")

    for name, helptext, arg in [
        ("status", "a request as the resident sees it", "request"),
        ("cancel", "cancel a request", "request"),
        ("balance", "a volunteer's hours and points", "volunteer"),
        ("assignments", "a volunteer's open offers and assignments", "volunteer"),
    ]:
        one = sub.add_parser(name, help=helptext)
        one.add_argument(arg)
    sub.add_parser("catalog", help="the service menu")
    tail = sub.add_parser("tail", help="print events as they happen")
    tail.add_argument("--subject", default="linli.evt.>")
    tail.add_argument("--json", action="store_true", help="print whole CloudEvents")
    sub.add_parser("asyncapi", help="print the AsyncAPI document of every service's channels")
    health = sub.add_parser("health", help="exit 0 only when a process of the service answers a call")
    health.add_argument("service", choices=SERVICES)
    health.add_argument("--instance", help="that process only: its HOSTNAME under compose, or as `matcher-1`")
    health.add_argument("--timeout", type=float, default=3.0)
    report_cli.add_commands(sub)
    matcher_cli.add_commands(sub)
    ledger_cli.add_commands(sub)
    intake_cli.add_commands(sub)
    data_after_any_command(p)
    identity_cli.add_commands(sub)
    care_cli.add_commands(sub)
    return p


def data_after_any_command(p: argparse.ArgumentParser) -> None:
    """`linli status R --data X` means what `linli --data X status R` does. SUPPRESS leaves the value
    given before the command, or its default, in place when none is given after it."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in set(action.choices.values()):
                if not any("--data" in a.option_strings for a in command._actions):
                    command.add_argument("--data", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                data_after_any_command(command)


async def act(args: argparse.Namespace) -> dict[str, Any] | list[Any] | None:
    client = await Client.connect(nats_url(args.data), reconnect=args.command == "tail")
    try:
        match args.command:
            case "health":
                subject = health_subject(args.service, args.instance)
                return await client.call(subject, {}, timeout=args.timeout)
            case "submit":
                return await client.call(API.INTAKE_SUBMIT, {
                    "idempotency_key": args.key or f"cli-{uuid.uuid4()}", "district": args.district,
                    "grid": args.grid, "service": args.service, "description": args.description,
                    "urgency": args.urgency, "channel": args.channel,
                    "resident": {"name": args.name, "phone": args.phone, "address": args.address},
                })
            case "register":
                return await client.call(API.INTAKE_REGISTER_VOLUNTEER, {
                    "name": args.name, "phone": args.phone, "district": args.district,
                    "grids": split(args.grids), "skills": split(args.skills), "capacity": args.capacity,
                })
            case "respond":
                return await client.call(API.MATCHER_RESPOND, {
                    "assignment_id": args.assignment, "volunteer_id": args.volunteer,
                    "accept": args.accept, "reason": args.reason,
                })
            case "complete":
                return await client.call(API.MATCHER_COMPLETE, {
                    "assignment_id": args.assignment, "volunteer_id": args.volunteer,
                    "hours": args.hours, "note": args.note,
                })
            case "rate":
                return await client.call(
                    API.INTAKE_RATE, {"request_id": args.request, "stars": args.stars, "comment": args.comment,
                                      "done": not args.not_done}
                )
            case "status":
                return await client.call(API.INTAKE_STATUS, {"request_id": args.request})
            case "cancel":
                return await client.call(API.INTAKE_CANCEL, {"request_id": args.request})
            case "balance":
                return await client.call(API.LEDGER_BALANCE, {"volunteer_id": args.volunteer})
            case "assignments":
                return await client.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": args.volunteer})
            case "catalog":
                return await client.call(API.INTAKE_CATALOG, {})
            case "tail":
                await tail(client, args)
                return None
    finally:
        await client.close()
    return None


async def tail(client: Client, args: argparse.Namespace) -> None:
    async def show(event: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(event, ensure_ascii=False), flush=True)
        else:
            print_event(event)

    await client.on_events(show, args.subject)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def asyncapi() -> str:
    """One AsyncAPI 3.0 document per service (the calls it answers, the events it reads), and one of every
    event published on linli.evt.*, whoever publishes it: services publish through their outbox, which
    FastStream cannot see."""
    from faststream.nats import NatsBroker
    from faststream.specification import AsyncAPI

    from contracts import Envelope
    from contracts.subjects import EVENT_TYPES, STREAM, event_subject
    from services.identity.app import build as identity
    from services.care.app import build as care
    from services.intake.app import build as intake
    from services.ledger.app import build as ledger
    from services.matcher.app import build as matcher
    from services.notifier.app import build as notifier

    documents = {}
    services = [("identity", identity), ("intake", intake), ("matcher", matcher), ("notifier", notifier),
                ("ledger", ledger), ("care", care)]
    for name, build in services:
        spec = AsyncAPI(build().broker, title=f"linli {name}", version="1")
        documents[name] = spec.to_specification().to_jsonable()
    events = NatsBroker()
    for kind, model in EVENT_TYPES.items():
        events.publisher(
            event_subject(kind, "{district}"), stream=STREAM, title=f"linli.evt.{kind}",
            description=(model.__doc__ or kind).strip(), schema=Envelope[model],  # type: ignore[valid-type]
        )
    documents["events"] = AsyncAPI(events, title="linli events", version="1").to_specification().to_jsonable()
    return json.dumps(documents, indent=2, ensure_ascii=False)


NO_SYSTEM = (OSError, TimeoutError, asyncio.TimeoutError, nats.errors.Error, ConnectionFailure)


def no_system(data_dir: Path, exc: BaseException) -> int:
    if isinstance(exc, SignInRefused):
        print(f"{exc}; `linli up` keeps the administrator's in {data_dir}/credentials/nats.env, which "
              "commands use when NATS_URL does not name a user", file=sys.stderr)
        return 2
    if isinstance(exc, ConnectionFailure):
        at, variable = f"MongoDB {mongo_url(data_dir)}", "MONGO_URL=mongodb://host:port"
    else:
        at, variable = where(data_dir), "NATS_URL=nats://host:port"
    reason = "nothing answers" if isinstance(exc, (nats.errors.NoServersError, ConnectionFailure)) else type(exc).__name__
    print(
        f"no running system found ({reason}) at {at}. Start one with `linli up`, "
        f"or point elsewhere with --data DIR, LINLI_HOME=DIR or {variable}",
        file=sys.stderr,
    )
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ["LINLI_HOME"] = str(args.data)  # where `linli login` saved the token
    if args.command == "up":
        from linli.demo import up

        return up(args.data, demo=not args.no_demo, matchers=args.matchers, fresh=args.fresh, once=args.once)
    if args.command == "asyncapi":
        print(asyncapi())
        return 0
    try:
        return command(args)
    except NO_SYSTEM as exc:
        return no_system(args.data, exc)
    except KeyboardInterrupt:
        return 130


def command(args: argparse.Namespace) -> int:
    if args.command == "report":
        return report_cli.run(args)
    if args.command == "ledger":
        return ledger_cli.run(args)
    if args.command == "care":
        return care_cli.run(args)
    if hasattr(args, "run"):
        return int(args.run(args))
    try:
        result = asyncio.run(act(args))
    except CallFailed as exc:  # one line, details included, so a script can read what was refused
        details = f" {json.dumps(exc.error['details'], ensure_ascii=False)}" if exc.error.get("details") else ""
        console.print("[bold red]refused[/] " + escape(f"{exc}{details}"), soft_wrap=True)
        return 1
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        if args.command != "health":
            raise
        print(f"{args.service} did not answer on {health_subject(args.service, args.instance)} ({type(exc).__name__})",
              file=sys.stderr)
        return 1
    if isinstance(result, dict) and args.command == "health":
        print(f"{result['service']} {result['instance']} (pid {result['pid']}) up since {result['started_at']}")
    elif result is not None:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
