"""Stopping a service's background tasks, without I/O."""

import asyncio

import pytest

from services.common.runtime import cancel_and_wait

pytestmark = pytest.mark.domain


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


async def test_tasks_already_ended_or_failed_are_waited_for_without_error() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    running = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)

    await asyncio.wait_for(cancel_and_wait([failed, running]), 5)

    assert isinstance(failed.exception(), RuntimeError) and running.cancelled()
