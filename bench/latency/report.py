"""The printed report: the table, the overhead ratios, CPU per request and the machine."""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable

from bench.latency.cpu import MACHINE, STEAL
from bench.latency.plan import CATEGORIES, GRIDS, ROOT, Volunteer, pct
from bench.latency.tracking import Result
from bench.latency.units import PER_REQUEST, UNIT_OPS
from linli.embedded import tool


# ---------------------------------------------------------------- report


def fmt(x: float, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"


def machine_info() -> list[str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nats_version = subprocess.run([tool("nats-server"), "--version"], capture_output=True, text=True,
                                      timeout=10).stdout.strip()
    except Exception:
        nats_version = "?"

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""

    head = git("rev-parse", "--short", "HEAD")
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "services", "contracts", "linli").splitlines()]
    if not head:
        code = f"code: {ROOT} (not a git checkout)"
    else:
        code = f"code: {ROOT} at {head}" + (f", with uncommitted changes in {len(dirty)} file(s): "
                                            + ", ".join(dirty[:6]) + (" …" if len(dirty) > 6 else "") if dirty else ", clean")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"machine: nproc={affinity} ({model or platform.processor() or '?'}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()} ({platform.python_implementation()})",
        f"versions: {nats_version}, nx-27017 {version('nx-27017')}, pymongo {version('pymongo')}, "
        f"nats-py {version('nats-py')}, faststream {version('faststream')}, pydantic {version('pydantic')}",
        code,
    ]


def print_report(args: argparse.Namespace, svc: Result | None, floor: Result | None,
                 units: dict[str, list[float]] | None, vols: list[Volunteer], warm: int) -> None:
    out = print
    workers = args.env_map.get("MATCHER_WORKERS", os.environ.get("MATCHER_WORKERS", "4"))
    out()
    out("=" * 78)
    out("Linli submit latency — results")
    out("=" * 78)
    out("command: " + " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]))
    for line in machine_info():
        out(line)
    out(f"workload: {args.requests} requests open-loop at {args.rate:g}/s (+{warm} warm-up at 10/s, not counted); "
        f"matchers={args.matchers} x {workers} workers; {len(vols)} volunteers x capacity {args.capacity} "
        f"in {len(GRIDS)} grids, 2 of {len(CATEGORIES)} categories each; outcome timeout {args.timeout:g} s")
    if args.env_map:
        out(f"extra service env: {args.env_map}")
    if args.floor_intake_concurrency != 1:
        out(f"floor intake handles {args.floor_intake_concurrency} submits at once (the intake service: 1)")
    out("latencies in ms from each request's scheduled send time; percentiles nearest-rank")
    out()
    cols = [("services", svc), ("floor", floor)]
    head = f"{'':34}" + "".join(f"{name:>12}" for name, r in cols if r) + (f"{'svc/floor':>12}" if svc and floor else "")
    out(head)

    def row(label: str, get: Callable[[Result], float], digits: int = 1, show_ratio: bool = True) -> None:
        line = f"{label:34}"
        values = []
        for _, r in cols:
            if r:
                v = get(r)
                values.append(v)
                line += f"{fmt(v, digits):>12}"
        if svc and floor and show_ratio:
            line += f"{ratio(values[0], values[1]):>12}"
        out(line)

    for p in (50, 95, 99):
        row(f"submit reply p{p}", lambda r, p=p: pct(r.reply, p))
    for p in (50, 95):
        row(f"submit -> request.created p{p}", lambda r, p=p: pct(r.created, p))
    for p in (50, 95):
        row(f"created -> outcome p{p}", lambda r, p=p: pct(r.matcher_part, p))
    for p in (50, 95, 99):
        row(f"submit -> assigned p{p}", lambda r, p=p: pct(r.e2e, p))
    row("submit -> assigned max", lambda r: max(r.e2e) if r.e2e else math.nan)
    row("throughput (outcomes/s)", lambda r: r.throughput)
    row("achieved send rate (/s)", lambda r: r.achieved_rate, show_ratio=False)
    row("max send lag (ms)", lambda r: r.send_lag_max, show_ratio=False)
    row("backlog at last send (requests)", lambda r: float(r.backlog_at_last_send), 0, show_ratio=False)
    row("assigned", lambda r: float(r.assigned), 0, show_ratio=False)
    row("unmatched", lambda r: float(r.unmatched), 0, show_ratio=False)
    row("LOST (no outcome)", lambda r: float(len(r.lost)), 0, show_ratio=False)
    row("submit errors", lambda r: float(len(r.errors)), 0, show_ratio=False)
    row("wall, first send -> last outcome (s)", lambda r: r.wall, 2, show_ratio=False)
    if svc and floor:
        out()
        out(f"overhead: submit->assigned p50 {ratio(pct(svc.e2e, 50), pct(floor.e2e, 50))} the floor's, "
            f"submit reply p50 {ratio(pct(svc.reply, 50), pct(floor.reply, 50))}; "
            f"throughput {ratio(svc.throughput, floor.throughput)} the floor's")

    for r in (svc, floor):
        if r and r.cpu:
            out()
            cpu = dict(r.cpu)
            busy = cpu.pop(MACHINE, math.nan)
            steal = cpu.pop(STEAL, math.nan)
            out(f"CPU during the {r.label} run ({r.wall:.1f} s wall): process, CPU s, % of one core, CPU ms/request")
            for name, sec in sorted(cpu.items(), key=lambda kv: -kv[1]):
                out(f"  {name:18}{sec:8.2f}{100 * sec / r.wall if r.wall else math.nan:8.0f}%"
                    f"{1000 * sec / r.n:10.1f}")
            total = sum(v for v in cpu.values() if not math.isnan(v))
            out(f"  {'total':18}{total:8.2f}{100 * total / r.wall if r.wall else math.nan:8.0f}%{1000 * total / r.n:10.1f}"
                f"   (machine: {os.cpu_count()} cores = {100 * (os.cpu_count() or 1)}%)")
            others = busy - total
            out(f"  {'other processes':18}{others:8.2f}{100 * others / r.wall if r.wall else math.nan:8.0f}%"
                f"   (machine busy {fmt(busy, 2)} s incl. kernel; over ~10% means other work disturbed the figures)")
            out(f"  {'hypervisor steal':18}{steal:8.2f}{100 * steal / r.wall if r.wall else math.nan:8.0f}%"
                f"   (vCPU time the host gave to others; over ~10% means the figures were disturbed)")
            for sec, who in r.foreign[:3]:
                out(f"    {sec:6.2f} s  {who}")

    if units:
        out()
        out(f"unit costs, each op serially on idle servers ({args.unit_samples} samples): p50 / p99 ms, x per request")
        est = 0.0
        for name in UNIT_OPS:
            values = units[name]
            est += PER_REQUEST[name] * pct(values, 50)
            out(f"  {name:30}{fmt(pct(values, 50), 2):>8}{fmt(pct(values, 99), 2):>8}   x{PER_REQUEST[name]}")
        # Critical path to volunteer.assigned: half the request leg, then the ops before each publish.
        m = {name: pct(units[name], 50) for name in UNIT_OPS}
        path = (0.5 * m["nats request-reply"] + 6 * m["insert_one"] + 2 * m["find_one"] + 2 * m["find_one_and_update"]
                + m["find().to_list"] + m["aggregate"] + m["update_one"] + m["js.publish (PubAck)"]
                + m["js.publish + pull delivery"])
        reply = (m["nats request-reply"] + 3 * m["insert_one"] + m["find_one"] + m["js.publish (PubAck)"]
                 + m["delete_one"] + m["update_one"])
        out(f"  sum of all ops for one request: {est:.1f} ms; serial critical path to the reply {reply:.1f} ms, "
            f"to volunteer.assigned {path:.1f} ms")
    if svc and svc.errors:
        out()
        out("first submit errors: " + "; ".join(f"{k}: {v}" for k, v in list(svc.errors.items())[:3]))
    for r in (svc, floor):
        if r and r.lost:
            out(f"{r.label}: LOST {len(r.lost)} request(s) with no outcome within {args.timeout:g} s, e.g. "
                + ", ".join(r.lost[:5]))
    out("=" * 78)
