"""How soon a request caught in flight by a SIGKILLed matcher is offered, and that none is offered twice.

    python bench/matcher_crash.py [--kills 8] [--rate 10] [--settings old new]

For each setting, on servers of its own: starts the system with two matcher replicas, registers volunteers
with room for every request, then, per kill, submits requests at --rate/s for --before seconds, SIGKILLs
matcher-1 a random fraction of a submission interval after a submission (so the kill falls anywhere in a
request's handling), keeps submitting for --after seconds, waits until every request has its first offer
(volunteer.assigned), and starts matcher-1 again. Prints, per kill and in all: for each request submitted
before the kill and not yet offered at it, the time from the kill to its first offer; the slowest first
offer (from its submission) of a request submitted after the kill, which the dead replica's last pull may
have taken; and how many requests were offered to more than one volunteer (none should be: nobody answers
and offers last 10 minutes, so a second offer could only come from placing the request twice).

`old` is the settings before the crash hand-over was tightened (a 5 s lease, and a request.created event a
dead replica took comes back after LINLI_ACK_WAIT, 30 s); `new` is today's defaults. An offer stored but not
sent is re-sent after 3 s in both (5 s before; not a setting).
"""

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loop.kiosk import Kiosk  # noqa: E402
from linli.system import System  # noqa: E402

SETTINGS = {"old": {"MATCHER_LEASE": "5", "MATCHER_ACK_WAIT": "30"}, "new": {}}
KILLED = "matcher-1"


async def one_kill(system: System, kiosk: Kiosk, rate: float, before: float, after: float,
                   submitted: dict[str, float]) -> dict[str, list[float]]:
    """One kill in the middle of a steady stream of submissions; the times it produced."""
    stop_at: list[float] = []
    killed_at: list[float] = []
    mine: dict[str, float] = {}

    async def submit_steadily() -> None:
        start = time.monotonic()
        i = 0
        while not stop_at or time.monotonic() < stop_at[0]:
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            sent = time.monotonic()
            request_id = await kiosk.submit()
            mine[request_id] = submitted[request_id] = sent
            i += 1

    stream = asyncio.create_task(submit_steadily())
    await asyncio.sleep(before)
    await asyncio.sleep(random.uniform(0, 1 / rate))
    system.kill(KILLED)
    killed_at.append(time.monotonic())
    stop_at.append(killed_at[0] + after)
    await stream
    kill = killed_at[0]
    for request_id in mine:
        await kiosk.arrival("volunteer.assigned", request_id, timeout=120)
    in_flight = [kiosk.arrived[("volunteer.assigned", r)] - kill for r, sent in mine.items()
                 if sent < kill and kiosk.arrived[("volunteer.assigned", r)] > kill]
    later = [kiosk.arrived[("volunteer.assigned", r)] - sent for r, sent in mine.items() if sent >= kill]
    system.spawn("matcher", 1)
    await asyncio.to_thread(system.wait_ready)
    return {"in_flight": sorted(in_flight), "after": later}


def offered_twice(kiosk: Kiosk) -> int:
    volunteers: dict[str, set[str]] = {}
    for event in kiosk.events:
        if event["type"] == "linli.volunteer.assigned":
            volunteers.setdefault(event["data"]["request_id"], set()).add(event["data"]["volunteer_id"])
    return sum(len(v) > 1 for v in volunteers.values())


async def run(name: str, args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"linli-crash-{name}-"))
    env = {"MATCHER_OFFER_TTL": "600", "LINLI_AUTH": "off", "LINLI_LOG_LEVEL": "WARNING", **SETTINGS[name]}
    system = System.start(work, replicas={"matcher": 2}, env=env)
    try:
        nc = await nats.connect(system.nats_url)
        kiosk = Kiosk(nc, "beibei", "quanwai-01")
        await kiosk.watch()
        per_kill = args.rate * (args.before + args.after + 1)
        await kiosk.register(args.volunteers, capacity=max(1, int(per_kill * args.kills / args.volunteers) + 2))
        shown = " ".join(f"{k}={v}" for k, v in SETTINGS[name].items()) or "the defaults"
        print(f"{name} ({shown}): two matchers, {args.rate:g} requests/s, {args.kills} SIGKILLs of {KILLED}",
              flush=True)
        submitted: dict[str, float] = {}
        caught: list[float] = []
        later: list[float] = []
        for n in range(1, args.kills + 1):
            times = await one_kill(system, kiosk, args.rate, args.before, args.after, submitted)
            caught += times["in_flight"]
            later += times["after"]
            shown = " ".join(f"{t:.2f}" for t in times["in_flight"]) or "none"
            print(f"  kill {n}: kill -> first offer of the requests in flight (s): {shown}; slowest submitted "
                  f"after it: {max(times['after'], default=0):.2f} s", flush=True)
        print(f"  in flight at a kill: {len(caught)} requests; kill -> first offer: max {max(caught, default=0):.2f} s"
              f"; slowest first offer of a request submitted in the {args.after:g} s after a kill: "
              f"{max(later, default=0):.2f} s")
        print(f"  requests: {len(submitted)}; offered to two volunteers: {offered_twice(kiosk)}", flush=True)
        await nc.close()
    finally:
        system.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--rate", type=float, default=10.0, help="requests submitted per second")
    parser.add_argument("--before", type=float, default=3.0, help="seconds of submissions before each kill")
    parser.add_argument("--after", type=float, default=3.0, help="seconds of submissions after each kill")
    parser.add_argument("--volunteers", type=int, default=40)
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["old", "new"])
    args = parser.parse_args()
    for name in args.settings:
        asyncio.run(run(name, args))


if __name__ == "__main__":
    main()
