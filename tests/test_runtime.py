"""Stopping a service's background tasks, without I/O; what a service logs while it idles; and that a
subscription a process has just made is found by the next call from anywhere."""

import asyncio
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from linli.embedded import Server
from services.common.bus import settled
from services.common.runtime import cancel_and_wait


@pytest.mark.domain
async def test_a_task_that_swallows_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as a call that finished at the same moment returns instead of raising

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # let it start

    await asyncio.wait_for(cancel_and_wait([task], every=0.05), 5)

    assert task.cancelled() and swallowed == 1


@pytest.mark.domain
async def test_tasks_already_ended_or_failed_are_waited_for_without_error() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    running = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)

    await asyncio.wait_for(cancel_and_wait([failed, running]), 5)

    assert isinstance(failed.exception(), RuntimeError) and running.cancelled()


def idle_pull_consumers(nats_url: str, seconds: float) -> None:
    """Run in a fresh process (FastStream reports each distinct task failure once per process): idle
    pull consumers with short fetches, logging as a service does; prints the ERROR records that reached
    the log and the records the filter dropped."""
    import logging

    from faststream.nats import JStream, NatsBroker, PullSub

    from services.common.runtime import configure_logging, quiet_empty_fetches

    configure_logging("probe")
    reached, dropped = [], []
    logger = logging.getLogger("faststream.access.nats")
    assert quiet_empty_fetches in logger.filters, "configure_logging installs the filter"
    logger.removeFilter(quiet_empty_fetches)  # counted below as it decides
    logger.addFilter(lambda record: quiet_empty_fetches(record) or bool(dropped.append(record)))
    logger.addHandler(type("Seen", (logging.Handler,), {"emit": lambda self, record: reached.append(record)})())

    async def run() -> None:
        broker = NatsBroker(nats_url)
        for n in range(30):
            broker.subscriber(f"probe.{n}", stream=JStream(name="PROBE", subjects=["probe.>"]), durable=f"probe{n}",
                              pull_sub=PullSub(batch_size=8, timeout=0.2))(lambda body: None)
        await broker.start()
        await asyncio.sleep(seconds)
        await broker.stop()

    asyncio.run(run())
    print(sum(r.levelno >= logging.ERROR for r in reached), len(dropped))


@pytest.mark.service
def test_a_pull_that_finds_nothing_is_not_logged_as_an_error(nats_server: Server) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", f"import tests.test_runtime as t; t.idle_pull_consumers({nats_server.url!r}, 4)"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )
    errors, dropped = map(int, probe.stdout.split()[-2:])
    assert dropped >= 1, "the empty fetch that nats-py ends with a bare TimeoutError did not happen"
    assert errors == 0, probe.stdout + probe.stderr[-3000:]


async def test_a_subscription_settled_on_an_idle_connection_answers_the_very_next_call(nats_server: Server) -> None:
    """A service's start ends with `settled`; a call made at once from another connection must find it.
    With `flush()` in its place 16 to 27 of these 100 calls were answered "no responders" (three runs):
    the PING of nats-py's flush overtakes a SUB still queued on a connection whose flusher was idle."""
    responder = await nats.connect(nats_server.url)
    caller = await nats.connect(nats_server.url)
    unanswered = []
    try:
        for attempt in range(100):
            await asyncio.sleep(0.01)  # the responder's flusher has gone idle, as after a service's start-up steps
            subject = f"linli.api.probe{attempt}.health"

            async def answer(msg: nats.aio.msg.Msg) -> None:
                await msg.respond(b"{}")

            await responder.subscribe(subject, queue="probe", cb=answer)
            await settled(responder)
            try:
                await caller.request(subject, b"{}", timeout=5)
            except nats.errors.NoRespondersError:
                unanswered.append(subject)
    finally:
        await responder.close()
        await caller.close()

    assert unanswered == []
