"""Open-loop sending at a fixed rate, and what each request saw, measured from its scheduled send."""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from bench.latency.plan import OUTCOMES, Req, log


# ---------------------------------------------------------------- measurement


@dataclass
class Tracker:
    """Times, on one clock (perf_counter), of everything seen for each request.

    Sends and replies are keyed by idempotency key, events by request id; the submit reply joins them, so an
    event seen before its reply still counts.
    """

    label: str
    scheduled: dict[str, float] = field(default_factory=dict)  # key ->
    sent: dict[str, float] = field(default_factory=dict)  # key ->
    replied: dict[str, float] = field(default_factory=dict)  # key ->
    rid: dict[str, str] = field(default_factory=dict)  # key -> request id
    errors: dict[str, str] = field(default_factory=dict)  # key ->
    created: dict[str, float] = field(default_factory=dict)  # request id ->
    outcome: dict[str, tuple[float, str]] = field(default_factory=dict)  # request id ->
    registered: set[str] = field(default_factory=set)

    def outcome_of(self, key: str) -> tuple[float, str] | None:
        rid = self.rid.get(key)
        return self.outcome.get(rid) if rid else None

    async def on_msg(self, msg: Any) -> None:
        now = time.perf_counter()
        tokens = msg.subject.split(".")
        if len(tokens) < 5:
            return
        kind = f"{tokens[2]}.{tokens[3]}"
        if kind not in OUTCOMES and kind not in ("request.created", "volunteer.registered"):
            return
        data = json.loads(msg.data).get("data", {})
        if kind == "volunteer.registered":
            self.registered.add(data.get("volunteer_id", ""))
            return
        rid = data.get("request_id", "")
        if kind == "request.created":
            self.created.setdefault(rid, now)
        elif rid not in self.outcome:
            self.outcome[rid] = (now, kind)


@dataclass
class Result:
    label: str
    n: int
    rate: float
    reply: list[float]
    created: list[float]
    e2e: list[float]
    matcher_part: list[float]
    assigned: int
    unmatched: int
    lost: list[str]
    errors: dict[str, str]
    throughput: float
    achieved_rate: float
    send_lag_max: float
    backlog_at_last_send: int
    wall: float
    cpu: dict[str, float]
    foreign: list[tuple[float, str]] = field(default_factory=list)


CallFn = Callable[[Req], Awaitable[dict[str, Any]]]


async def drive(tracker: Tracker, plan: list[Req], rate: float, call: CallFn, timeout: float,
                progress: bool = True) -> tuple[float, float, float, int]:
    """Open loop: schedule each send at start + i/rate; wait for every outcome or the timeout.

    Returns (first scheduled time, last scheduled time, time the last outcome was seen, backlog at last send).
    """
    loop_tasks: set[asyncio.Task[None]] = set()
    keys = [r.key for r in plan]

    async def one(req: Req, at: float) -> None:
        tracker.sent[req.key] = time.perf_counter()
        try:
            reply = await call(req)
            tracker.replied[req.key] = time.perf_counter()
            if not reply.get("request_id"):
                tracker.errors[req.key] = f"unexpected reply {reply}"
            else:
                tracker.rid[req.key] = reply["request_id"]
        except Exception as exc:  # a timeout or a refused call
            tracker.errors[req.key] = repr(exc)

    def outcomes() -> list[str]:
        return [o[1] for k in keys if (o := tracker.outcome_of(k))]

    def done() -> int:
        return len(outcomes())

    async def report() -> None:
        begin = time.perf_counter()
        while True:
            await asyncio.sleep(1.0)
            seen = outcomes()
            log(f"[{tracker.label:8} {time.perf_counter() - begin:5.1f}s] sent {sum(1 for k in keys if k in tracker.sent)}/{len(keys)}"
                f"  replied {sum(1 for k in keys if k in tracker.replied)}"
                f"  created {sum(1 for k in keys if tracker.rid.get(k) in tracker.created)}"
                f"  assigned {seen.count('volunteer.assigned')}  unmatched {seen.count('request.unmatched')}"
                f"  errors {sum(1 for k in keys if k in tracker.errors)}")

    reporter = asyncio.create_task(report()) if progress else None
    try:
        start = time.perf_counter() + 0.05
        for i, req in enumerate(plan):
            at = start + i / rate
            tracker.scheduled[req.key] = at
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(req, at))
            loop_tasks.add(task)
            task.add_done_callback(loop_tasks.discard)
        last = start + (len(plan) - 1) / rate
        backlog = len(plan) - done()
        deadline = last + timeout
        while done() < len(plan) and time.perf_counter() < deadline:
            if not loop_tasks and done() + sum(1 for k in keys if k in tracker.errors) >= len(plan):
                break  # every request either has its outcome or failed to submit
            await asyncio.sleep(0.02)
        seen = [o[0] for k in keys if (o := tracker.outcome_of(k))]
        return start, last, max(seen) if seen else time.perf_counter(), backlog
    finally:
        if reporter:
            reporter.cancel()
        for task in list(loop_tasks):
            task.cancel()


def summarize(tracker: Tracker, plan: list[Req], rate: float, window: tuple[float, float, float, int],
              cpu: dict[str, float]) -> Result:
    start, last, end, backlog = window
    keys = [r.key for r in plan]
    sched, rid = tracker.scheduled, tracker.rid
    ms = 1000.0
    reply = [(tracker.replied[k] - sched[k]) * ms for k in keys if k in tracker.replied]
    created = [(tracker.created[rid[k]] - sched[k]) * ms for k in keys if rid.get(k) in tracker.created]
    e2e = [(o[0] - sched[k]) * ms for k in keys if (o := tracker.outcome_of(k))]
    matcher_part = [(o[0] - tracker.created[rid[k]]) * ms for k in keys
                    if (o := tracker.outcome_of(k)) and rid[k] in tracker.created]
    kinds = [o[1] for k in keys if (o := tracker.outcome_of(k))]
    lost = [rid.get(k, f"{k} (no reply)") for k in keys if not tracker.outcome_of(k)]
    lags = [(tracker.sent[k] - sched[k]) * ms for k in keys if k in tracker.sent]
    sends = [tracker.sent[k] for k in keys if k in tracker.sent]
    achieved = (len(sends) - 1) / (max(sends) - min(sends)) if len(sends) > 1 and max(sends) > min(sends) else math.nan
    outcomes = len(kinds)
    return Result(
        label=tracker.label, n=len(keys), rate=rate, reply=reply, created=created, e2e=e2e, matcher_part=matcher_part,
        assigned=kinds.count("volunteer.assigned"), unmatched=kinds.count("request.unmatched"), lost=lost,
        errors={k: e for k, e in tracker.errors.items() if k in set(keys)},
        throughput=outcomes / (end - start) if end > start else math.nan, achieved_rate=achieved,
        send_lag_max=max(lags) if lags else math.nan, backlog_at_last_send=backlog, wall=end - start, cpu=cpu,
    )
