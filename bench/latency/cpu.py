"""CPU seconds per process from /proc, and the CPU of processes that are not ours."""

from __future__ import annotations

import math
import os
from pathlib import Path


# ---------------------------------------------------------------- CPU accounting (Linux /proc)

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int, descendants: bool = True) -> float:
    """utime+stime of pid and (unless it is this script, the parent of everything) its live descendants."""
    if not descendants:
        t = os.times()
        return t.user + t.system
    try:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        total, todo = 0.0, [pid]
        while todo:
            p = todo.pop()
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / TICK
            except (OSError, IndexError, ValueError):
                pass
            todo.extend(children.get(p, []))
        return total
    except OSError:
        return math.nan


MACHINE = "(whole machine busy)"
STEAL = "(hypervisor steal)"


def machine_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of all cores since boot, from /proc/stat: what else ran, and what the host took."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (f[0] + f[1] + f[2] + f[5] + f[6]) / TICK, f[7] / TICK
    except (OSError, ValueError, IndexError):
        return math.nan, math.nan


def all_processes() -> dict[int, tuple[str, float]]:
    """pid -> (command, CPU seconds) for every process, to name what else ran during a measurement."""
    found: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                fields = stat.rsplit(")", 1)[1].split()
                found[int(entry)] = (cmd.strip()[:70] or stat.split("(", 1)[1].rsplit(")", 1)[0],
                                     (int(fields[11]) + int(fields[12])) / TICK)
            except (OSError, IndexError, ValueError):
                continue
    return found


def foreign_cpu(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                ours: set[int]) -> list[tuple[float, str]]:
    """CPU seconds of processes that are not this benchmark's, busiest first (those that ended are not seen)."""
    used = []
    for pid, (cmd, cpu) in after.items():
        if pid in ours:
            continue
        delta = cpu - before[pid][1] if pid in before else cpu
        if delta > 0.05:
            used.append((delta, f"{pid} {cmd}"))
    return sorted(used, reverse=True)


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {name: cpu_seconds(pid, descendants=pid != os.getpid()) for name, pid in pids.items()}
    snap[MACHINE], snap[STEAL] = machine_seconds()
    return snap


def our_pids(pids: dict[str, int]) -> set[int]:
    """The measured processes and their descendants."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    ours, todo = set(), list(pids.values())
    while todo:
        pid = todo.pop()
        if pid not in ours:
            ours.add(pid)
            todo.extend(tree.get(pid, []))
    return ours


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}
