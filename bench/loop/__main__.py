"""Database commands and nx-27017 CPU per whole loop, next to the loop's floor, on a fresh database and after
a long history.

    python -m bench.loop [--loops 10] [--history 0 20000 100000] [--volunteers 5] [--floor-loops 50]

For each history size, in a temp directory of its own: starts nats-server and nx-27017, stores that many
served requests straight into the services' databases (bench/loop/seed.py, timed), then runs the floor on
those same servers before any service starts (bench/loop/floor.py: the 19 writes, 12 publishes and 11
deliveries a loop cannot do without, in databases and a stream of their own; nx-27017's and nats-server's
CPU and the wall time per loop one at a time, and loops/s 16 at a time). Then starts the services as
processes with LINLI_COMMAND_COUNTS set (each counts the commands its MongoDB client sends), registers
volunteers, and plays --loops requests one after another through the whole loop: submit -> offer ->
notified, accept, complete -> hours -> points, rate. After each phase it waits until every consumer on the
path has caught up, then reads the counts. The outbox relays and the sweeps run once a minute meanwhile
(QUIET below), so the counts are the loop's own work; --default-intervals counts them too. nx-27017's CPU
is read from /proc for the same span. Then the services are started again on the same servers with their
defaults and more volunteers (at least 40, with slots enough for the load), for: submit ->
volunteer.assigned latency for --rate-requests sent open-loop at --rate/s, placements/s for --burst
requests submitted at once, and whole loops/s for --loop-burst loops run 16 at a time (bench/loop/rate.py).

Prints the figures of each history size, the cost per loop at each size relative to the first, and at the
end one markdown table (a column per history size) with the date, the machine's cores and load average at
the start and the end, and the command, to paste into the README as is. Takes two to four minutes per
history size, plus the seeding (about 1.5 minutes per 100,000 requests here).
"""

import argparse
import asyncio
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats

from bench.loop import counts, floor, rate
from bench.loop.floor import cpu_seconds
from bench.loop.kiosk import PHASES, Kiosk
from bench.loop.seed import seed
from linli.embedded import start_mongo, start_nats
from linli.system import System

DISTRICT, GRID = "beibei", "quanwai-01"
# The repair loops (outbox relays, sweeps, intake's look for unannounced requests, care's watchdog) run once a
# minute here, so what is counted is the loop's own work; the idle rate printed is theirs at this setting. With
# the defaults they add about a dozen commands a second between them, whatever the load (--default-intervals).
QUIET = {"MATCHER_SWEEP_INTERVAL": "60", "LEDGER_SWEEP_INTERVAL": "60", "LINLI_OUTBOX_RELAY_INTERVAL": "60",
         "INTAKE_ANNOUNCE_AFTER": "60", "CARE_WATCH_INTERVAL": "60"}


def start(data_dir: Path, nats_url: str, mongo_url: str, env: dict[str, str]) -> System:
    """The services; once more if they were not ready in time: over a long history their first start builds
    every index (37 s at 100,000 stored requests on a loaded machine), and the second finds them built."""
    try:
        return System.start(data_dir, nats_url=nats_url, mongo_url=mongo_url, env=env)
    except RuntimeError as exc:
        print(f"services started again: {exc}", file=sys.stderr)
        return System.start(data_dir, nats_url=nats_url, mongo_url=mongo_url, env=env)


def progress(history: int, step: str) -> None:
    """A line on stderr per step: a run takes minutes per history size, and prints its figures at the end."""
    print(f"[{datetime.now(UTC):%H:%M:%S}] {history:,} stored requests: {step}", file=sys.stderr, flush=True)


async def run(history: int, loops: int, volunteers: int, load: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="linli-loop-"))
    counted = work / "counts"
    counted.mkdir()
    # The servers in a folder of their own: `System.start` stops servers it finds running on its own folder,
    # as left behind by a run that died.
    nats_server, mongo = start_nats(work / "servers"), start_mongo(work / "servers")
    system = None
    try:
        started = time.monotonic()
        if history:
            progress(history, "storing the history")
            seed(mongo.url, "linli", history, DISTRICT, GRID)
        progress(history, f"the floor, {load.floor_loops} loops")
        seeded = time.monotonic() - started
        # The floor on the same servers, holding the same history, before any service starts.
        measured_floor = await floor.measure(nats_server.url, mongo.url, mongo.process.pid, nats_server.process.pid,
                                             load.floor_loops)
        # Tokens off: the loop's own commands are counted, as before the services checked them.
        progress(history, f"the services, {loops} whole loops one at a time")
        system = start(work / "system", nats_server.url, mongo.url,
                       {"LINLI_COMMAND_COUNTS": str(counted), "MATCHER_OFFER_TTL": "600", "LINLI_AUTH": "off", **QUIET})
        nc = await nats.connect(nats_server.url)
        kiosk = Kiosk(nc, DISTRICT, GRID)
        await kiosk.watch()
        await kiosk.register(volunteers)
        await asyncio.sleep(1.0)
        idle_from, idle_at = counts.snapshot(counted), time.monotonic()
        await asyncio.sleep(3.0)
        idle_spent = counts.difference(counts.snapshot(counted), idle_from)
        idle_s = time.monotonic() - idle_at
        idle = counts.total(idle_spent) / idle_s
        # Who works while nothing is asked: at start-up over a long history this is where the time goes.
        idle_top = [(f"{s} {k}", n / idle_s) for s, c in idle_spent.items() for k, n in c.items()]
        idle_top.sort(key=lambda kn: -kn[1])

        per_phase: dict[str, Counter[str]] = {phase: Counter() for phase in PHASES}
        by_service: dict[str, Counter[str]] = {}
        cpu_before, loop_started = cpu_seconds(mongo.process.pid), time.monotonic()
        for _ in range(loops):
            state: dict[str, Any] = {}
            for phase in PHASES:
                await asyncio.sleep(0.6)  # every process has written its counts since the last phase
                before = counts.snapshot(counted)
                if phase == PHASES[0]:
                    request_id = await kiosk.submit()
                await kiosk.phase(phase, request_id, state)
                await asyncio.sleep(0.6)
                spent = counts.difference(counts.snapshot(counted), before)
                per_phase[phase][""] += counts.total(spent)
                for service, c in spent.items():
                    by_service.setdefault(service, Counter()).update(c)
        elapsed = time.monotonic() - loop_started
        cpu = cpu_seconds(mongo.process.pid) - cpu_before
        measured: dict[str, Any] = {}
        if load.rate_requests:
            progress(history, f"the services again: {load.rate_requests} requests at {load.rate:g}/s, "
                              f"a burst of {load.burst}, {load.loop_burst} whole loops 16 at a time")
            # The services again on the same servers, with the repair loops at their defaults: under load a
            # request a placement could not take at once is placed again by the matcher's sweep.
            system.stop()
            system = start(work / "system", nats_server.url, mongo.url,
                           {"MATCHER_OFFER_TTL": "600", "LINLI_AUTH": "off"})
            # Enough slots and weekly offers for every request below to be offered without waiting for one: the
            # requests sent at a rate and in the burst keep their offers' slots; the loops give theirs back.
            held = load.rate_requests + load.burst + load.loop_burst
            await kiosk.register(max(40, -(-held // 5)), capacity=5, first=volunteers)
            await asyncio.sleep(1.0)
            at, cpu_at = time.monotonic(), cpu_seconds(mongo.process.pid)
            await asyncio.sleep(3.0)
            measured["idle_cpu_ms_per_s"] = 1000 * (cpu_seconds(mongo.process.pid) - cpu_at) / (time.monotonic() - at)
            measured["at_rate"] = await rate.at_rate(kiosk, load.rate_requests, load.rate)
            measured["placements_per_s"] = await rate.placements(kiosk, load.burst)
            measured["loops_per_s"] = await rate.loops(kiosk, load.loop_burst)
            measured["loop_phase_s"] = {p: t / load.loop_burst for p, t in rate.SPENT.items()}
        await nc.close()
        return {"history": history, "loops": loops, "seeded_s": seeded, "floor": measured_floor, "idle_per_s": idle,
                "idle_top": idle_top[:4],
                "elapsed_s": elapsed,
                "per_phase": {p: c[""] / loops for p, c in per_phase.items()},
                "by_service": {s: sum(c.values()) / loops for s, c in sorted(by_service.items())},
                "by_kind": {k: n / loops for k, n in counts.by_kind(by_service).most_common()},
                "detail": {s: {k: n / loops for k, n in c.most_common()} for s, c in sorted(by_service.items())},
                "mongo_cpu_ms_per_loop": 1000 * cpu / loops, **measured,
                # one loop at a time, each phase waited out: not a throughput (that is loops_per_s, at saturation)
                "sequential_loops_per_s": loops / elapsed}
    finally:
        if system:
            system.stop()
        nats_server.stop()
        mongo.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(results: list[dict[str, Any]]) -> None:
    print(f"# whole loop, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    for r in results:
        total = sum(r["by_service"].values())
        f = r["floor"]
        print(f"\n## {r['history']} stored requests: {r['loops']} loops, {total:.1f} MongoDB commands per loop, "
              f"nx-27017 CPU {r['mongo_cpu_ms_per_loop']:.0f} ms per loop (repair loops while idle "
              f"{r['idle_per_s']:.1f} commands/s; history stored in {r['seeded_s']:.0f} s)")
        if r["idle_per_s"] >= 1:
            print("while idle, per second: " + ", ".join(f"{k} {n:.1f}" for k, n in r["idle_top"]))
        if "idle_cpu_ms_per_s" in r:
            print(f"nx-27017 CPU while idle, 1-4 s after the services restarted with their defaults (the first sweeps "
                  f"included): {r['idle_cpu_ms_per_s']:.0f} ms/s")
        print(f"floor ({f['loops']} loops one at a time on the same servers, before the services started): "
              f"{f['commands']:.0f} MongoDB commands, {f['publishes']:.0f} JetStream publishes, "
              f"{f['deliveries']:.0f} deliveries per loop; nx-27017 CPU {f['mongo_cpu_ms']:.1f} ms, nats-server CPU "
              f"{f['nats_cpu_ms']:.1f} ms, wall {f['wall_ms']:.0f} ms per loop; {f['loops_per_s']:.1f} loops/s "
              f"{f['concurrent']} at a time. Services: {total / f['commands']:.1f}x the floor's commands, "
              f"{r['mongo_cpu_ms_per_loop'] / max(f['mongo_cpu_ms'], 0.1):.1f}x its nx-27017 CPU")
        if "at_rate" in r:
            a = r["at_rate"]
            print(f"submit -> offer at {a['rate']:g}/s ({a['n']} requests): p50 {a['p50_ms']:.0f} ms, "
                  f"p95 {a['p95_ms']:.0f} ms, p99 {a['p99_ms']:.0f} ms, max {a['max_ms']:.0f} ms; "
                  f"placements at saturation {r['placements_per_s']:.1f}/s; whole loops {r['loops_per_s']:.1f}/s "
                  "(seconds per phase: " + ", ".join(f"{p} {t:.2f}" for p, t in r["loop_phase_s"].items()) + ")")
        print("by phase:   " + ", ".join(f"{p}: {n:.1f}" for p, n in r["per_phase"].items()))
        print("by service: " + ", ".join(f"{s}: {n:.1f}" for s, n in r["by_service"].items()))
        print("by kind:    " + ", ".join(f"{k}: {n:.1f}" for k, n in r["by_kind"].items()))
        for service, detail in r["detail"].items():
            print(f"  {service}: " + ", ".join(f"{k} {n:.1f}" for k, n in detail.items()))
    fresh = results[0]
    for r in results[1:]:
        cost = r["mongo_cpu_ms_per_loop"] / max(fresh["mongo_cpu_ms_per_loop"], 0.1)
        commands = sum(r["by_service"].values()) / max(sum(fresh["by_service"].values()), 0.1)
        print(f"\nper-request cost at {r['history']:,} stored requests relative to {fresh['history']:,}: nx-27017 CPU "
              f"per loop {cost:.2f}x, commands per loop {commands:.2f}x (target: within 1.3x)")


def table(results: list[dict[str, Any]], load_start: tuple[float, ...], load_end: tuple[float, ...],
          command: str) -> str:
    """The figures as one markdown table, a column per history size, to paste into the README as is."""
    services = sorted({s for r in results for s, n in r["by_service"].items() if n})
    fresh = results[0]

    def row(name: str, cell: Any) -> str:
        return f"| {name} | " + " | ".join(cell(r) for r in results) + " |"

    def ratio(r: dict[str, Any], key: str) -> str:
        return "" if r is fresh else f"; {r[key] / max(fresh[key], 0.1):.2f}× fresh"

    def loaded(r: dict[str, Any], key: str, form: str = "{:.1f}") -> str:
        return form.format(r[key]) if key in r else "—"

    def times_floor(r: dict[str, Any], value: float, key: str) -> str:
        return f"{value / max(r['floor'][key], 0.1):.1f}× floor"

    def latency(r: dict[str, Any]) -> str:
        if "at_rate" not in r:
            return "—"
        a = r["at_rate"]
        return f"{a['p50_ms']:.0f} / {a['p95_ms']:.0f} / {a['p99_ms']:.0f} ms"

    loop_services = [s for s in ("intake", "matcher", "ledger", "notifier") if s in services]
    rate_of = next((r["at_rate"] for r in results if "at_rate" in r), {"rate": 0, "n": 0})
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores; load average "
        f"{' '.join(f'{x:.2f}' for x in load_start)} at the start, {' '.join(f'{x:.2f}' for x in load_end)} at the "
        f"end) with `{command}`:",
        "",
        "| per whole loop | " + " | ".join(f"{r['history']:,} stored requests" for r in results) + " |",
        "| --- |" + " --- |" * len(results),
        row("MongoDB commands, all services",
            lambda r: f"{sum(r['by_service'].values()):.1f} "
                      f"({times_floor(r, sum(r['by_service'].values()), 'commands')})"),
        row("… in the four loop services",
            lambda r: f"{sum(r['by_service'].get(s, 0) for s in loop_services):.1f} "
                      f"({times_floor(r, sum(r['by_service'].get(s, 0) for s in loop_services), 'commands')})"),
        *(row(f"… {s}", lambda r, s=s: f"{r['by_service'].get(s, 0):.1f}") for s in services),
        row("nx-27017 CPU per loop",
            lambda r: f"{r['mongo_cpu_ms_per_loop']:.0f} ms "
                      f"({times_floor(r, r['mongo_cpu_ms_per_loop'], 'mongo_cpu_ms')}"
                      f"{ratio(r, 'mongo_cpu_ms_per_loop')})"),
        row("floor: MongoDB commands, JetStream publishes, deliveries",
            lambda r: f"{r['floor']['commands']:.0f}, {r['floor']['publishes']:.0f}, {r['floor']['deliveries']:.0f}"),
        row("floor: nx-27017 CPU, nats-server CPU, wall time per loop (one at a time)",
            lambda r: f"{r['floor']['mongo_cpu_ms']:.1f} ms, {r['floor']['nats_cpu_ms']:.1f} ms, "
                      f"{r['floor']['wall_ms']:.0f} ms"),
        row(f"floor: loops/s, {fresh['floor']['concurrent']} at a time", lambda r: f"{r['floor']['loops_per_s']:.1f}"),
        row(f"submit → offer at {rate_of['rate']:g}/s ({rate_of['n']} requests), p50 / p95 / p99", latency),
        row("placements/s at saturation", lambda r: loaded(r, "placements_per_s")),
        row("whole loops/s at saturation (16 at a time)",
            lambda r: "—" if "loops_per_s" not in r else
            f"{r['loops_per_s']:.1f} ({r['loops_per_s'] / r['floor']['loops_per_s']:.2f}× floor)"),
        row("nx-27017 CPU while idle, 1–4 s after the services restart with their defaults",
            lambda r: loaded(r, "idle_cpu_ms_per_s", "{:.0f} ms/s")),
        row("commands/s while idle, repair loops once a minute", lambda r: f"{r['idle_per_s']:.1f}"),
        row("sequential loops/s (one at a time, every phase waited out)",
            lambda r: f"{r['sequential_loops_per_s']:.2f}"),
        row("history stored in", lambda r: "—" if not r["history"] else f"{r['seeded_s']:.0f} s"),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=10)
    parser.add_argument("--history", type=int, nargs="+", default=[0, 20000])
    parser.add_argument("--volunteers", type=int, default=5)
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s for the latency run")
    parser.add_argument("--rate-requests", type=int, default=60, help="requests in the latency run; 0 skips load")
    parser.add_argument("--burst", type=int, default=60, help="requests submitted at once for placements/s")
    parser.add_argument("--loop-burst", type=int, default=20, help="whole loops run 16 at a time for loops/s")
    parser.add_argument("--floor-loops", type=int, default=50, help="floor loops run one at a time")
    parser.add_argument("--default-intervals", action="store_true", help="count the repair loops at their defaults")
    args = parser.parse_args()
    if args.default_intervals:
        QUIET.clear()
    load_start = os.getloadavg()
    results = [asyncio.run(run(n, args.loops, args.volunteers, args)) for n in args.history]
    report(results)
    print()
    print(table(results, load_start, os.getloadavg(), "python -m bench.loop " + shlex.join(sys.argv[1:])))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
