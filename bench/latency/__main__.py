"""Submit latency and throughput of Linli, against the floor of the bare operations one request needs.

    python bench/submit_latency.py --requests 300 --rate 50 [--matchers 1] [--volunteers 50]
    python -m bench.latency ...   (the same)

What it does, in one run and one temp directory:

1. Starts a real nats-server and nx-27017 (MongoDB wire, SQLite-backed) on free ports, then the four
   services as processes (linli.system.System, MATCHER_OFFER_TTL set high so offers never lapse).
2. SERVICES: registers volunteers, waits for their volunteer.registered events and for the matcher's
   capacity slots, then submits N requests open-loop at R/s (sends scheduled at fixed intervals, never
   waiting for a reply before the next). Latencies are measured from each request's *scheduled* send time
   (no coordinated omission) to: the submit reply, the request.created event and the first
   volunteer.assigned / request.unmatched event seen by a subscriber on linli.evt.>.
3. Stops the services. UNIT COSTS: each bare operation run serially on the idle servers.
4. FLOOR: the same operations the intake and matcher perform for one request, with bare nats-py and
   PyMongo's AsyncMongoClient, no FastStream, no pydantic, no services code on the path: one floor
   "intake" process answering core-NATS requests (like intake, one message at a time), K floor "matcher"
   processes each running MATCHER_WORKERS pull loops on one durable consumer (like the matcher's workers).
   Same N, same rate, same volunteers, same indexes, same servers.
5. Prints a table, the overhead ratios, CPU seconds per process, and exits non-zero if any request had
   no outcome within --timeout (LOST) or a submit failed.

Operations for one request, submit -> volunteer.assigned, as read from commit 21160fb (re-count them when
the intake's submit or the matcher's place/offer change, and keep the floor below in step):

  Client: 1 core NATS request-reply, linli.api.intake.submit (linli/client.py Client.call -> nc.request).

  intake submit (services/intake/app.py submit, one message at a time: FastStream core subscriber, cb=consume):
    requests.insert_one                       IntakeStore.add_request
    status_changes.insert_one                 IntakeStore.add_request -> record_change
    outbox.insert_one                         announce -> Outbox.send -> Outbox.store
    outbox.find_one                           Outbox.publish_stored
    JetStream publish request.created         Outbox.publish_stored: broker.publish(stream=LINLI, Nats-Msg-Id) awaits PubAck
    outbox.delete_one                         Outbox.publish_stored
    requests.update_one                       announce -> IntakeStore.mark_announced
    = 3 insert_one, 1 find_one, 1 delete_one, 1 update_one, 1 JS publish; then the reply.

  matcher request_created (services/matcher/app.py; durable pull consumer "matcher-request-created",
  PullSub(batch 8, timeout 2 s), MATCHER_WORKERS=4 handlers per replica, explicit ack):
    1 pull-consume hop (fetch + ack)          services/common/bus.py on_event
    requests.insert_one                       MatcherStore.add_request
    requests.find_one_and_update  (CAS)       place -> MatcherStore.claim
    volunteers.find(...).to_list              place -> MatcherStore.skilled_volunteers
    slots.aggregate ($match/$group)           place -> MatcherStore.free_slots
    slots.find_one_and_update     (CAS)       place -> MatcherStore.reserve (1 when the best candidate has room)
    assignments.insert_one                    offer -> MatcherStore.add_assignment
    requests.update_one           (CAS)       offer -> MatcherStore.move_request
    outbox.insert_one                         offer -> Outbox.send -> store
    outbox.find_one                           Outbox.publish_stored
    JetStream publish volunteer.assigned      Outbox.publish_stored
    outbox.delete_one                         Outbox.publish_stored
    assignments.update_one                    offer -> MatcherStore.mark_announced
    = 3 insert_one, 1 find_one, 2 find_one_and_update, 1 find, 1 aggregate, 2 update_one, 1 delete_one,
      1 JS publish, 1 pull hop.

  Total: 1 NATS request-reply, 2 JetStream publishes (with Nats-Msg-Id), 1 pull-consume hop, 17 Mongo ops:
  6 insert_one, 2 find_one, 2 find_one_and_update, 1 find, 1 aggregate, 3 update_one, 2 delete_one.
  Not on the path but in the same run: notifier (volunteer.assigned -> ~10 Mongo ops, an intake.contact call
  for an uncached volunteer, an outbox publish of notification.delivered), ledger (idle here) and every
  service's outbox relay / matcher sweep once a second.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.latency.floor import Children, floor_phase, floor_setup
from bench.latency.plan import log, requests_plan, volunteers_plan, write_places
from bench.latency.report import print_report
from bench.latency.services import services_phase
from bench.latency.units import unit_costs
from linli.embedded import Server, start_mongo, start_nats
from linli.system import SERVICES, System


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", "-n", type=int, default=300, help="requests measured (default 300)")
    parser.add_argument("--rate", "-r", type=float, default=50.0, help="requests per second, open loop (default 50)")
    parser.add_argument("--matchers", "-k", type=int, default=1, help="matcher replicas (default 1)")
    parser.add_argument("--volunteers", "-v", type=int, default=None,
                        help="volunteers (default 50, more if N+warm-up exceeds 2/3 of the slots)")
    parser.add_argument("--capacity", type=int, default=20, help="open assignments per volunteer, 1..20 (default 20)")
    parser.add_argument("--warmup", type=int, default=10, help="uncounted requests first, at 10/s (default 10)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds after the last send before a request without outcome is LOST (default 30)")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds after the roster is ready (default 1.5)")
    parser.add_argument("--unit-samples", type=int, default=200, help="samples per op for unit costs (default 200)")
    parser.add_argument("--skip-floor", action="store_true", help="services only")
    parser.add_argument("--skip-services", action="store_true", help="floor and unit costs only")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the services, e.g. MATCHER_WORKERS=8 (repeatable)")
    parser.add_argument("--floor-intake-concurrency", type=int, default=1, metavar="C",
                        help="submits the floor intake handles at once (default 1, as the intake service does)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-data", action="store_true", help="keep the temp dir (logs) even on success")
    args = parser.parse_args(argv)
    if not 1 <= args.capacity <= 20:
        parser.error("--capacity must be 1..20 (RegisterVolunteer)")
    if args.rate <= 0 or args.requests < 1 or args.matchers < 1:
        parser.error("--rate, --requests and --matchers must be positive")
    args.env_map = dict(item.split("=", 1) for item in args.env)
    if args.volunteers is None:
        args.volunteers = max(50, math.ceil(1.5 * (args.requests + args.warmup) / args.capacity))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    vols = volunteers_plan(args.volunteers, args.capacity)
    slots = sum(v.capacity for v in vols)
    if args.requests + args.warmup > slots:
        log(f"warning: {args.requests + args.warmup} requests for {slots} slots: offers never lapse, expect unmatched")
    tag = uuid.uuid4().hex[:6]
    warm = requests_plan(args.warmup, f"{tag}-warm", rng)
    plan = requests_plan(args.requests, tag, rng)
    floor_warm = requests_plan(args.warmup, f"{tag}-fwarm", rng)
    floor_plan = requests_plan(args.requests, f"{tag}-floor", rng)

    data_dir = Path(tempfile.mkdtemp(prefix="linli-bench-"))
    servers: list[Server] = []
    system: System | None = None
    children = Children()
    svc = floor = None
    units = None
    ok = False
    interrupted = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    try:
        log(f"[setup] data and logs in {data_dir}")
        servers.append(start_nats(data_dir))
        servers.append(start_mongo(data_dir))
        nats_url, mongo_url = servers[0].url, servers[1].url
        server_pids = {s.name: s.process.pid for s in servers}
        # The bench submits as a kiosk with no signed token, which intake refuses unless tokens are off.
        env = {"MATCHER_OFFER_TTL": "1000000", "LINLI_PLACES": str(write_places(data_dir)), "LINLI_AUTH": "off",
               **args.env_map}
        prefix = env.get("LINLI_DB_PREFIX", os.environ.get("LINLI_DB_PREFIX", "linli"))

        if not args.skip_services:
            # System.start, step by step, so that a process spawned before a failed start is still stopped.
            system = System(data_dir, nats_url, mongo_url, env=env)
            for name in SERVICES:
                for n in range(args.matchers if name == "matcher" else 1):
                    system.spawn(name, n)
            system.wait_ready()
            log(f"[setup] NATS {nats_url}, MongoDB {mongo_url}; "
                + ", ".join(f"{k} (pid {p.pid})" for k, p in system.processes.items()))
            pids = {**{k: p.pid for k, p in system.processes.items()}, **server_pids, "bench (this)": os.getpid()}
            svc = asyncio.run(services_phase(system, args, vols, warm, plan, pids, f"{prefix}_matcher"))
            system.stop()
            system = None

        if not args.skip_floor:
            asyncio.run(floor_setup(nats_url, mongo_url, vols))
            log(f"[units] {args.unit_samples} serial samples of each bare operation")
            units = asyncio.run(unit_costs(nats_url, mongo_url, args.unit_samples))
            floor = asyncio.run(floor_phase(nats_url, mongo_url, args, floor_warm, floor_plan, children,
                                            {**server_pids, "bench (this)": os.getpid()}))
        ok = True
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping everything")
    finally:
        children.stop()
        if system is not None:
            system.stop()
        for server in reversed(servers):
            server.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    if interrupted:
        log(f"logs kept in {data_dir}")
        return 130
    print_report(args, svc, floor, units, vols, args.warmup)
    bad = [r for r in (svc, floor) if r and (r.lost or r.errors)]
    if ok and not bad and not args.keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        print(f"logs kept in {data_dir}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
