#!/usr/bin/env python
"""Submit latency and throughput of Linli, against the floor of the bare operations one request needs.

    python bench/submit_latency.py --requests 300 --rate 50 [--matchers 1] [--volunteers 50]

The measurements live in bench/latency/, one module each (its __init__ says what a run does):
plan.py the workload, tracking.py the open-loop driver, services.py the services run, floor.py the
floor run, units.py the unit costs, cpu.py CPU per process, report.py the printed report.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.latency.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
