"""Each volunteer's entries form a hash chain, so an edit anywhere in the history shows. Pure functions."""

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = ""


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed or signed: JSON with sorted keys, no spaces, non-ASCII as is."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: Mapping[str, Any]) -> str:
    # Every stored field but the hash itself, prev_hash included: that is what links the chain.
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def link(body: Mapping[str, Any], head: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entry as it would follow `head`: its position, its running balances and its hash."""
    entry = {
        **body,
        "seq": head["seq"] + 1 if head else 1,
        "prev_hash": head["hash"] if head else GENESIS,
        "balance_hours_cents": (head["balance_hours_cents"] if head else 0) + body["hours_cents"],
        "balance_points_cents": (head["balance_points_cents"] if head else 0) + body["points_cents"],
    }
    entry["hash"] = entry_hash(entry)
    return entry


@dataclass(frozen=True)
class Problem:
    volunteer_id: str
    entry_id: str
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f"entry {self.entry_id} (volunteer {self.volunteer_id}, seq {self.seq})" if self.entry_id else (
            f"volunteer {self.volunteer_id}"
        )
        return f"{where}: {self.problem}"


@dataclass
class ChainTotals:
    seq: int = 0
    head: str = GENESIS
    hours_cents: int = 0
    points_cents: int = 0
    services: int = 0


def check_chain(volunteer_id: str, entries: Iterable[Mapping[str, Any]]) -> tuple[ChainTotals, list[Problem]]:
    """Walks one volunteer's entries in seq order; recomputes every hash, link and running balance."""
    totals, problems = ChainTotals(), []
    before: tuple[int, int] = (0, 0)  # the running balances the previous entry recorded
    for entry in entries:
        eid, seq = str(entry.get("_id")), entry.get("seq")
        if seq != totals.seq + 1:
            problems.append(Problem(volunteer_id, eid, seq, f"expected seq {totals.seq + 1}: an entry is missing"))
        if entry.get("prev_hash") != totals.head:
            problems.append(Problem(volunteer_id, eid, seq, "prev_hash does not match the previous entry's hash"))
        if entry.get("hash") != entry_hash(entry):
            problems.append(Problem(volunteer_id, eid, seq, "hash does not match the entry's contents: it was edited"))
        hours, points = int(entry.get("hours_cents") or 0), int(entry.get("points_cents") or 0)
        totals.hours_cents += hours
        totals.points_cents += points
        totals.services += entry.get("kind") == "credit"
        recorded = (int(entry.get("balance_hours_cents") or 0), int(entry.get("balance_points_cents") or 0))
        if recorded != (before[0] + hours, before[1] + points):
            problems.append(Problem(volunteer_id, eid, seq, "running balance does not follow from the entry before"))
        before = recorded
        totals.seq, totals.head = int(seq or 0), str(entry.get("hash"))
    return totals, problems


def check_projection(volunteer_id: str, chain: ChainTotals, account: Mapping[str, Any] | None) -> list[Problem]:
    """The account document against its chain; being behind is repaired by the sweep, anything else is not."""
    projected = account or {}
    seq = int(projected.get("seq", 0))
    if seq > chain.seq:
        return [Problem(volunteer_id, "", seq, f"account is at seq {seq} but the chain ends at {chain.seq}")]
    if seq < chain.seq:
        return []
    stored = (projected.get("head", GENESIS), projected.get("hours_cents", 0), projected.get("points_cents", 0),
              projected.get("services", 0))
    derived = (chain.head, chain.hours_cents, chain.points_cents, chain.services)
    if stored != derived:
        return [Problem(volunteer_id, "", seq, f"account balance {stored[1:]} != entries {derived[1:]}")]
    return []
