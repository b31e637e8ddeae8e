"""`linli ledger ...`: verify the books, and the operators' ledger calls (review, adjust, rewards, statements)."""

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from contracts import API, event_subject
from linli.client import DEFAULT_DATA, CallFailed, print_refusal, Client, mongo_url, nats_url
from services.common.config import BusSettings


def add_commands(subparsers: Any) -> None:
    ledger = subparsers.add_parser("ledger", help="the hours ledger: verify, review, adjust, rewards, statements")
    sub = ledger.add_subparsers(dest="ledger_command", required=True)

    verify = sub.add_parser(
        "verify", help="recompute every balance and hash chain from the database; exit 1 on any mismatch"
    )
    verify.add_argument("--mongo-url", help="default: MONGO_URL, or the one `linli up` wrote down")
    verify.add_argument("--db", help="the ledger's database (default: <LINLI_DB_PREFIX>_ledger)")
    verify.add_argument("--checkpoints", type=Path,
                        help="ledger.checkpoint events kept outside the database (JSON lines) to check the chains against")
    verify.add_argument("--from-bus", action="store_true",
                        help="also check against every ledger.checkpoint event the bus still holds")
    verify.add_argument("--public-key", type=Path, help="the ledger's public key (PEM) the checkpoints must be signed with")

    review = sub.add_parser("review", help="hours waiting for an operator: disputed, or not confirmed in time")
    review.add_argument("--limit", type=int, default=100)

    adjust = sub.add_parser("adjust", help="an operator's adjustment, with its reason, as an entry of its own")
    adjust.add_argument("volunteer")
    adjust.add_argument("--hours", default="0")
    adjust.add_argument("--points", default="0")
    adjust.add_argument("--reason", required=True)
    adjust.add_argument("--operator", required=True)
    adjust.add_argument("--request", default="", help="the reviewed request this settles")
    adjust.add_argument("--key", help="idempotency key (default: a new one)")

    confirm = sub.add_parser("confirm", help="confirm the hours of a request after review")
    confirm.add_argument("request")
    confirm.add_argument("--operator", required=True)
    confirm.add_argument("--reason", default="")
    confirm.add_argument("--volunteer", default="", help="whose hours, when two volunteers served the request")

    rewards = sub.add_parser("rewards", help="the redemption catalogue")
    rewards.add_argument("--all", action="store_true", help="include inactive items")

    put = sub.add_parser("reward", help="add or change an item of the redemption catalogue")
    put.add_argument("item")
    put.add_argument("--name", required=True)
    put.add_argument("--kind", choices=["goods", "course", "service"], required=True)
    put.add_argument("--points", required=True, help="price of one unit")
    put.add_argument("--stock", type=int, help="units or seats on hand now (default: unlimited)")
    put.add_argument("--inactive", action="store_true")
    put.add_argument("--description", default="")

    redeem = sub.add_parser("redeem", help="spend a volunteer's points on a catalogue item")
    redeem.add_argument("volunteer")
    redeem.add_argument("item")
    redeem.add_argument("--quantity", type=int, default=1)
    redeem.add_argument("--key", help="idempotency key (default: a new one)")

    statement = sub.add_parser("statement", help="a signed statement of a volunteer's hours, to carry elsewhere")
    statement.add_argument("volunteer")
    statement.add_argument("--out", type=Path, help="write it to this file (default: print it)")

    imported = sub.add_parser("import", help="carry over the hours of another district's signed statement")
    imported.add_argument("file", type=Path, help="the signed statement, as `linli ledger statement` writes it")
    imported.add_argument("--volunteer", required=True, help="the volunteer's id in this district")

    sub.add_parser("public-key", help="this district's public key, for other districts' trust lists")

    trust = sub.add_parser("trust", help="accept another district's statements, signed with its public key")
    trust.add_argument("district")
    trust.add_argument("key", type=Path, help="that district's public key (PEM), as its `linli ledger public-key` prints")
    trust.add_argument("--operator", required=True)
    trust.add_argument("--reason", required=True)

    distrust = sub.add_parser("distrust", help="stop accepting a district's statements")
    distrust.add_argument("district")
    distrust.add_argument("--operator", required=True)
    distrust.add_argument("--reason", required=True)

    sub.add_parser("trusted", help="the districts whose statements this ledger accepts")


def call_for(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    match args.ledger_command:
        case "review":
            return API.LEDGER_REVIEW, {"limit": args.limit}
        case "adjust":
            return API.LEDGER_ADJUST, {
                "volunteer_id": args.volunteer, "hours": args.hours, "points": args.points, "reason": args.reason,
                "operator": args.operator, "request_id": args.request,
                "idempotency_key": args.key or f"cli-{uuid.uuid4()}",
            }
        case "confirm":
            return API.LEDGER_CONFIRM, {"request_id": args.request, "operator": args.operator, "reason": args.reason,
                                        "volunteer_id": args.volunteer}
        case "rewards":
            return API.LEDGER_CATALOG_LIST, {"include_inactive": args.all}
        case "reward":
            return API.LEDGER_CATALOG_PUT, {
                "item_id": args.item, "name": args.name, "kind": args.kind, "points": args.points,
                "stock": args.stock, "active": not args.inactive, "description": args.description,
            }
        case "redeem":
            return API.LEDGER_REDEEM, {"volunteer_id": args.volunteer, "item_id": args.item,
                                       "quantity": args.quantity, "idempotency_key": args.key or f"cli-{uuid.uuid4()}"}
        case "statement":
            return API.LEDGER_STATEMENT, {"volunteer_id": args.volunteer}
        case "import":
            signed = json.loads(args.file.read_text(encoding="utf-8"))
            return API.LEDGER_IMPORT_STATEMENT, {"statement": signed["statement"], "signature": signed["signature"],
                                                 "volunteer_id": args.volunteer}
        case "trust":
            return API.LEDGER_TRUST_PUT, {"district": args.district, "public_key": args.key.read_text(encoding="ascii"),
                                          "operator": args.operator, "reason": args.reason}
        case "distrust":
            return API.LEDGER_TRUST_REMOVE, {"district": args.district, "operator": args.operator,
                                             "reason": args.reason}
        case "trusted":
            return API.LEDGER_TRUST_LIST, {}
        case _:
            return API.LEDGER_PUBLIC_KEY, {}


async def published_checkpoints(url: str, wait: float = 2.0) -> list[dict[str, Any]]:
    """Every ledger.checkpoint the stream still holds, read from its start by a consumer that leaves nothing."""
    client = await Client.connect(url)
    try:
        sub = await client.nc.jetstream().subscribe(event_subject("ledger.checkpoint", "*"), ordered_consumer=True)
        found = []
        while True:
            try:
                msg = await sub.next_msg(timeout=wait)
            except TimeoutError:
                return found  # nothing at all was published yet
            found.append(json.loads(msg.data)["data"])
            if msg.metadata.num_pending == 0:
                return found
    finally:
        await client.close()


async def call(url: str, subject: str, payload: dict[str, Any]) -> dict[str, Any]:
    client = await Client.connect(url)
    try:
        return await client.call(subject, payload)
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    data_dir = getattr(args, "data", DEFAULT_DATA)
    if args.ledger_command == "verify":
        from services.ledger.verify import read_anchors, report

        anchors = read_anchors(str(args.checkpoints) if args.checkpoints else None)
        if args.from_bus:
            anchors += asyncio.run(published_checkpoints(nats_url(data_dir)))
        public = args.public_key.read_text(encoding="ascii") if args.public_key else None
        return report(args.mongo_url or mongo_url(data_dir), args.db or BusSettings().database("ledger"), anchors,
                      public)
    try:
        subject, payload = call_for(args)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"cannot read the file given: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"the file is not a signed statement: it has no {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(call(nats_url(data_dir), subject, payload))
    except CallFailed as exc:
        print_refusal(exc)
        return 1
    text = json.dumps(result, ensure_ascii=False, indent=2)
    if args.ledger_command == "statement" and args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
        print(f"statement {result['statement']['statement_id']} written to {args.out}")
    elif args.ledger_command == "public-key":
        print(result["public_key"], end="")
    else:
        print(text)
    return 0
