"""The coalescing trigger that wakes evaluators in other coordinators."""

from __future__ import annotations

import asyncio

import pytest

from mxvm.coordinator.nudge import Coalesced
from mxvm.errors import BackendUnavailable


async def test_pulls_during_a_send_cause_exactly_one_more_send() -> None:
    sends: list[int] = []
    gate = asyncio.Event()

    async def send() -> None:
        sends.append(len(sends))
        await gate.wait()

    nudge = Coalesced(send, "test")
    nudge.trigger()
    await asyncio.sleep(0)
    assert sends == [0]
    for _ in range(5):  # all while the first send is in flight
        nudge.trigger()
    gate.set()
    await nudge.wait()
    assert sends == [0, 1]
    nudge.trigger()  # idle again: a pull sends at once
    await nudge.wait()
    assert sends == [0, 1, 2]


async def test_a_failed_send_is_logged_and_the_next_pull_sends_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def send() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BackendUnavailable("postgres down", backend="postgres")

    nudge = Coalesced(send, "evaluator")
    nudge.trigger()
    await nudge.wait()
    assert "nudge.failed evaluator: postgres down" in caplog.text
    nudge.trigger()
    await nudge.wait()
    assert calls == 2
