"""Ledger's decisions: plain functions over plain data, no I/O."""

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from contracts import ApiError, Envelope, new_event
from contracts.calls import (
    AdjustBalance,
    Balance,
    LedgerEntry,
    PutRewardItem,
    Redeem,
    Redemption,
    ReviewItem,
    RewardItem,
    Statement,
    StatementLine,
    TrustedKey,
)
from contracts.envelope import derived_id
from contracts.events import HoursLogged, PointsEarned, PointsRedeemed, RequestRated, VolunteerRegistered
from services.ledger.rules import Pricing, Rules, five_star_bonus

SOURCE = "linli/ledger"
CENT = Decimal("0.01")


# Amounts are stored as integer hundredths: the embedded server has no Decimal128, and sums of ints are exact.
def to_cents(amount: Decimal) -> int:
    return int(amount.quantize(CENT, rounding=ROUND_HALF_UP).scaleb(2))


def from_cents(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def fingerprint(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# Entry ids come from what caused the entry, so a repeated event or call finds the entry it already made.
def entry_id(event_id: str) -> str:
    return derived_id("ledger.entry", event_id)


def bonus_id(cause: str, name: str) -> str:
    return derived_id("ledger.bonus", cause, name)


def confirm_id(request_id: str, volunteer_id: str) -> str:
    return derived_id("ledger.confirm", request_id, volunteer_id)


# A re-dispatched request is served, and rated, once by each volunteer it went to: ratings and proof of
# service are kept per request and volunteer. Documents from before were keyed on the request alone.
def service_key(request_id: str, volunteer_id: str) -> str:
    return f"{request_id}/{volunteer_id}"


def spend_id(redemption_id: str) -> str:
    return derived_id("ledger.spend", redemption_id)


def refund_id(redemption_id: str) -> str:
    return derived_id("ledger.refund", redemption_id)


def import_id(district: str, statement_id: str) -> str:
    return derived_id("ledger.import", district, statement_id)


def entry(
    kind: str,
    *,
    entry_id: str,
    volunteer_id: str,
    account: Mapping[str, Any],
    cause: str,
    at: float,
    posted: float,
    district: str = "",
    hours_cents: int = 0,
    points_cents: int = 0,
    request_id: str = "",
    rule_version: str = "",
    reason: str = "",
    about: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The body every entry has; the chain adds seq, prev_hash, running balances and hash when it is appended."""
    about = about or {}
    return {
        "_id": entry_id,
        "kind": kind,
        "volunteer_id": volunteer_id,
        "district": district or account.get("district", ""),
        "hours_cents": hours_cents,
        "points_cents": points_cents,
        "category": about.get("category", ""),
        "service": about.get("service", ""),
        "grid": about.get("grid", ""),
        "team": account.get("team", ""),
        "resident_ref": about.get("resident_ref", ""),
        "request_id": request_id,
        "at": at,
        "posted": posted,
        "rule_version": rule_version,
        "cause": cause,
        "reason": reason,
        **extra,
    }


def done_at(event: Envelope[HoursLogged]) -> datetime:
    return event.data.completed_at or event.time


def credit_entries(
    event: Envelope[HoursLogged], pricing: Pricing, rules: Rules, account: Mapping[str, Any], posted: float
) -> list[dict[str, Any]]:
    data = event.data
    common: dict[str, Any] = dict(
        volunteer_id=data.volunteer_id, account=account, cause=event.id, at=done_at(event).timestamp(),
        posted=posted, district=event.district, request_id=data.request_id, rule_version=rules.version,
        about=data.model_dump(include={"category", "service", "grid", "resident_ref"}),
    )
    credit = entry(
        "credit", entry_id=entry_id(event.id), hours_cents=to_cents(data.hours),
        points_cents=to_cents(pricing.points), rate=str(pricing.rate), assignment_id=data.assignment_id, **common,
    )
    bonuses = [
        entry("bonus", entry_id=bonus_id(event.id, name), points_cents=to_cents(points), bonus=name,
              reason=f"{name} bonus", **common)
        for name, points in pricing.bonuses
    ]
    return [credit, *bonuses]


def earned_event(credit: Mapping[str, Any], bonuses: Sequence[Mapping[str, Any]]) -> Envelope[Any]:
    # Built only from stored entries, so a redelivery re-sends the very same event.
    last = max([credit, *bonuses], key=lambda e: e["seq"])
    data = PointsEarned(
        volunteer_id=credit["volunteer_id"],
        request_id=credit["request_id"],
        hours=from_cents(credit["hours_cents"]),
        points=from_cents(credit["points_cents"]),
        balance_points=from_cents(last["balance_points_cents"]),
        rate=Decimal(credit["rate"]),
        bonus_points=from_cents(sum(b["points_cents"] for b in bonuses)),
        rule_version=credit["rule_version"],
    )
    return new_event(
        data,
        source=SOURCE,
        district=credit["district"],
        subject=credit["volunteer_id"],
        correlationid=credit["request_id"],
        causationid=credit["cause"],
        event_id=derived_id("points.earned", credit["_id"]),
        time=datetime.fromtimestamp(credit["posted"], UTC),
    )


def disputes(stars: int, done: bool) -> bool:
    # The same rule by which intake reopens the request: the ledger must not confirm what intake reopened.
    return stars <= 2 or not done


def rating(event: Envelope[RequestRated]) -> dict[str, Any]:
    data = event.data
    return {
        "_id": service_key(data.request_id, data.volunteer_id),
        "request_id": data.request_id,
        "volunteer_id": data.volunteer_id,
        "stars": data.stars,
        "done": data.done,
        "comment": data.comment,
        "event_id": event.id,
        "at": event.time.timestamp(),
    }


def rating_entries(
    event: Envelope[RequestRated], rules: Rules, account: Mapping[str, Any], credit: Mapping[str, Any] | None,
    posted: float,
) -> list[dict[str, Any]]:
    """A good rating confirms the hours (and 5 stars may earn a bonus); a bad one confirms nothing."""
    data = event.data
    if disputes(data.stars, data.done):
        return []
    common: dict[str, Any] = dict(
        volunteer_id=data.volunteer_id, account=account, cause=event.id, at=event.time.timestamp(), posted=posted,
        district=event.district, request_id=data.request_id, about=credit,
    )
    confirmed = entry("confirm", entry_id=confirm_id(data.request_id, data.volunteer_id),
                      reason=f"rated {data.stars} stars", **common)
    bonus = five_star_bonus(rules) if data.stars == 5 else Decimal("0")
    if bonus <= 0:
        return [confirmed]
    return [confirmed, entry("bonus", entry_id=bonus_id(service_key(data.request_id, data.volunteer_id), "five_star"),
                             points_cents=to_cents(bonus), bonus="five_star", reason="five_star bonus",
                             rule_version=rules.version, **common)]


def operator_confirm(
    request_id: str, volunteer_id: str, operator: str, reason: str, account: Mapping[str, Any],
    credit: Mapping[str, Any] | None, now: float,
) -> dict[str, Any]:
    return entry(
        "confirm", entry_id=confirm_id(request_id, volunteer_id), volunteer_id=volunteer_id, account=account,
        cause=f"operator:{operator}", at=now, posted=now, request_id=request_id, about=credit,
        reason=f"confirmed by {operator}" + (f": {reason}" if reason else ""), operator=operator,
    )


def adjustment(call: AdjustBalance, account: Mapping[str, Any], now: float) -> dict[str, Any]:
    return entry(
        "adjust", entry_id=derived_id("ledger.adjust", call.idempotency_key), volunteer_id=call.volunteer_id,
        account=account, cause=call.idempotency_key, at=now, posted=now, hours_cents=to_cents(call.hours),
        points_cents=to_cents(call.points), request_id=call.request_id, reason=call.reason, operator=call.operator,
        fingerprint=fingerprint(call.model_dump(mode="json")),
    )


def same_adjustment(stored: Mapping[str, Any], call: AdjustBalance) -> None:
    if stored.get("fingerprint") != fingerprint(call.model_dump(mode="json")):
        raise ApiError("idempotency_key_reused", "this idempotency_key was already used for a different adjustment",
                       {"entry_id": stored["_id"]})


def require_cover(linked: Mapping[str, Any]) -> None:
    """Spends and adjustments never take a balance below zero."""
    if linked["balance_points_cents"] < 0:
        raise ApiError("insufficient_points", "the volunteer's points do not cover this", {
            "balance_points": str(from_cents(linked["balance_points_cents"] - linked["points_cents"])),
            "needed": str(from_cents(-linked["points_cents"])),
        })
    if linked["balance_hours_cents"] < 0:
        raise ApiError("insufficient_hours", "this would take the volunteer's hours below zero", {
            "balance_hours": str(from_cents(linked["balance_hours_cents"] - linked["hours_cents"])),
        })


def entry_view(stored: Mapping[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        entry_id=stored["_id"], kind=stored["kind"], volunteer_id=stored["volunteer_id"], seq=stored["seq"],
        hours=from_cents(stored["hours_cents"]), points=from_cents(stored["points_cents"]),
        balance_hours=from_cents(stored["balance_hours_cents"]),
        balance_points=from_cents(stored["balance_points_cents"]), request_id=stored["request_id"],
        reason=stored["reason"], rule_version=stored["rule_version"], cause=stored["cause"], hash=stored["hash"],
    )


def account(event: Envelope[VolunteerRegistered]) -> dict[str, Any]:
    return {"district": event.data.district, "team": event.data.team, "registered": event.time.timestamp()}


def average_stars(stars: int, ratings: int) -> Decimal | None:
    # No ratings is no average, not an average of zero stars.
    if ratings == 0:
        return None
    return (Decimal(stars) / Decimal(ratings)).quantize(CENT, rounding=ROUND_HALF_UP)


def balance_view(volunteer_id: str, projected: Mapping[str, Any] | None, ratings: int, stars: int) -> Balance:
    projected = projected or {}
    return Balance(
        volunteer_id=volunteer_id,
        hours=from_cents(projected.get("hours_cents", 0)),
        points=from_cents(projected.get("points_cents", 0)),
        services=projected.get("services", 0),
        ratings=ratings,
        average_stars=average_stars(stars, ratings),
    )


# Proof of service: what each kind of entry says about its request; applying it twice changes nothing.
def proof_facts(stored: Mapping[str, Any]) -> dict[str, Any]:
    match stored["kind"]:
        case "credit":
            # With what a confirmation copies from the credit, so a rating need not read the entry.
            return {"credited": True, "volunteer_id": stored["volunteer_id"], "hours_cents": stored["hours_cents"],
                    "credited_at": stored["posted"], "credit_id": stored["_id"],
                    **{field: stored.get(field, "") for field in ("category", "service", "grid", "resident_ref")}}
        case "confirm":
            return {"confirmed": True, "volunteer_id": stored["volunteer_id"]}
        case "adjust":
            return {"settled": True, "settled_by": stored["_id"]}
    return {}


def review_item(proof: Mapping[str, Any]) -> ReviewItem:
    return ReviewItem(
        request_id=proof.get("request_id") or proof["_id"], volunteer_id=proof["volunteer_id"],
        state="disputed" if proof["disputed"] else "overdue", hours=from_cents(proof["hours_cents"]),
        credited_at=datetime.fromtimestamp(proof["credited_at"], UTC) if proof["credited"] else None,
        stars=proof.get("stars"), done=proof.get("done"), comment=proof.get("comment", ""),
    )


def reward_item(item: Mapping[str, Any], stock: int | None) -> RewardItem:
    return RewardItem(
        item_id=item["_id"], name=item["name"], kind=item["kind"], points=from_cents(item["points_cents"]),
        stock=stock, active=item["active"], description=item.get("description", ""),
    )


def redemption_id(idempotency_key: str) -> str:
    return "rd-" + derived_id("redemption", idempotency_key)


def new_redemption(call: Redeem, item: Mapping[str, Any], now: float) -> dict[str, Any]:
    return {
        "_id": redemption_id(call.idempotency_key),
        "fingerprint": fingerprint(call.model_dump(mode="json")),
        "idempotency_key": call.idempotency_key,
        "volunteer_id": call.volunteer_id,
        "item_id": call.item_id,
        "item_name": item["name"],
        "quantity": call.quantity,
        "cost_cents": item["points_cents"] * call.quantity,
        "limited": item["limited"],
        "state": "pending",
        "reason": "",
        "entry_id": "",
        "balance_points_cents": 0,
        "undone": False,
        # A refused redemption is undone once more by the sweep after this time: a racing attempt that
        # crashed after writing a step, but before undoing it, leaves nothing taken for good.
        "recheck": False,
        "recheck_until": 0.0,
        "announced": False,
        "created": now,
    }


# What one catalogue item may hold: a community's shelf, not a warehouse. The contract says the same.
MAX_STOCK = 1_000_000


def check_reward(call: PutRewardItem) -> None:
    if call.stock is not None and not 0 <= call.stock <= MAX_STOCK:
        raise ApiError("invalid_request", f"stock must be 0 to {MAX_STOCK}",
                       [{"field": "stock", "problem": "out of range"}])


def check_redeemable(call: Redeem, item: Mapping[str, Any], account: Mapping[str, Any], on_hand: int | None) -> None:
    """The refusals a redemption can be given before anything is written."""
    cost = item["points_cents"] * call.quantity
    if account["points_cents"] < cost:
        raise ApiError("insufficient_points", REFUSALS["insufficient_points"], {
            "item_id": call.item_id, "quantity": call.quantity,
            "balance_points": str(from_cents(account["points_cents"])), "needed": str(from_cents(cost)),
        })
    if on_hand is not None and on_hand < call.quantity:
        raise ApiError("out_of_stock", REFUSALS["out_of_stock"],
                       {"item_id": call.item_id, "quantity": call.quantity, "on_hand": on_hand})


def same_redemption(stored: Mapping[str, Any], call: Redeem) -> None:
    if stored["fingerprint"] != fingerprint(call.model_dump(mode="json")):
        raise ApiError("idempotency_key_reused", "this idempotency_key was already used for a different redemption",
                       {"redemption_id": stored["_id"]})


REFUSALS = {
    "insufficient_points": "the volunteer's points do not cover this redemption",
    "out_of_stock": "not enough of this item is left",
}


def refused(red: Mapping[str, Any]) -> ApiError:
    return ApiError(red["reason"], REFUSALS.get(red["reason"], red["reason"]),
                    {"redemption_id": red["_id"], "item_id": red["item_id"], "quantity": red["quantity"]})


def spend(red: Mapping[str, Any], account: Mapping[str, Any], now: float) -> dict[str, Any]:
    return entry(
        "spend", entry_id=spend_id(red["_id"]), volunteer_id=red["volunteer_id"], account=account,
        cause=red["idempotency_key"], at=now, posted=now, points_cents=-red["cost_cents"],
        reason=f"redeemed {red['quantity']} x {red['item_name']}", redemption_id=red["_id"],
        item_id=red["item_id"], quantity=red["quantity"],
    )


def refund(red: Mapping[str, Any], account: Mapping[str, Any], now: float) -> dict[str, Any]:
    # A spend reversed: the stock ran out between the check and the take, or two attempts at one
    # redemption raced and it was refused after all.
    return entry(
        "spend", entry_id=refund_id(red["_id"]), volunteer_id=red["volunteer_id"], account=account,
        cause=red["idempotency_key"], at=now, posted=now, points_cents=red["cost_cents"],
        reason=f"refund: redemption {red['_id']} refused ({red['reason']})", redemption_id=red["_id"],
        item_id=red["item_id"], quantity=-red["quantity"],
    )


def redemption_view(red: Mapping[str, Any]) -> Redemption:
    return Redemption(
        redemption_id=red["_id"], volunteer_id=red["volunteer_id"], item_id=red["item_id"],
        quantity=red["quantity"], points=from_cents(red["cost_cents"]),
        balance_points=from_cents(red["balance_points_cents"]), entry_id=red["entry_id"],
    )


def redeemed_event(red: Mapping[str, Any], district: str) -> Envelope[Any]:
    data = PointsRedeemed(
        redemption_id=red["_id"], volunteer_id=red["volunteer_id"], item_id=red["item_id"],
        item_name=red["item_name"], quantity=red["quantity"], points=from_cents(red["cost_cents"]),
        balance_points=from_cents(red["balance_points_cents"]),
    )
    return new_event(
        data, source=SOURCE, district=district or "local", subject=red["volunteer_id"],
        correlationid=red["volunteer_id"], causationid=red["idempotency_key"],
        event_id=derived_id("points.redeemed", red["_id"]), time=datetime.fromtimestamp(red["created"], UTC),
    )


def stock_move(
    item_id: str, move_id: str, delta: int, head: Mapping[str, Any] | None, cause: str, now: float
) -> dict[str, Any]:
    """The next movement of an item's stock; a take that the stock cannot cover is recorded as refused."""
    before = head["stock_after"] if head else 0
    refused_take = delta < 0 and before + delta < 0
    return {
        "_id": move_id, "item_id": item_id, "seq": head["seq"] + 1 if head else 1,
        "delta": 0 if refused_take else delta, "stock_after": before if refused_take else before + delta,
        "refused": refused_take, "cause": cause, "at": now,
    }


def statement(
    volunteer_id: str, district: str, projected: Mapping[str, Any], by_kind: Mapping[str, Mapping[str, int]],
    by_category: Mapping[str, Mapping[str, int]], confirmed_cents: int, now: datetime,
) -> dict[str, Any]:
    lines = [
        StatementLine(kind="credit", category=category, entries=t["entries"], hours=from_cents(t["hours_cents"]),
                      points=from_cents(t["points_cents"]))
        for category, t in sorted(by_category.items())
    ] + [
        StatementLine(kind=kind, entries=t["entries"], hours=from_cents(t["hours_cents"]),
                      points=from_cents(t["points_cents"]))
        for kind, t in sorted(by_kind.items()) if kind != "credit"
    ]
    return Statement(
        statement_id="st-" + derived_id("ledger.statement", district, volunteer_id, str(projected["seq"])),
        district=district, volunteer_id=volunteer_id, issued_at=now, head_seq=projected["seq"],
        head_hash=projected["head"], hours=from_cents(projected["hours_cents"]),
        confirmed_hours=from_cents(confirmed_cents), points=from_cents(projected["points_cents"]),
        services=projected["services"], summary=lines,
    ).model_dump(mode="json")


def imported(
    stmt: Statement, volunteer_id: str, delta_cents: int, account: Mapping[str, Any], now: float
) -> dict[str, Any]:
    # Hours carry over; points stay in the issuing district's bank, where they can still be spent.
    return entry(
        "import", entry_id=import_id(stmt.district, stmt.statement_id), volunteer_id=volunteer_id,
        account=account, cause=stmt.statement_id, at=stmt.issued_at.timestamp(), posted=now,
        hours_cents=delta_cents, reason=f"hours carried over from {stmt.district} (statement {stmt.statement_id})",
        statement_id=stmt.statement_id, from_district=stmt.district, from_volunteer_id=stmt.volunteer_id,
        statement_hours_cents=to_cents(stmt.hours),
    )


def trusted_view(stored: Mapping[str, Any]) -> TrustedKey:
    return TrustedKey(district=stored["_id"], key_id=stored["key_id"], source="operator", operator=stored["operator"],
                      reason=stored["reason"], trusted_at=datetime.fromtimestamp(stored["at"], UTC))
