"""The garbage collector is housekeeping: its failures are logged, never raised into the
leader (which would step down and stop scheduling with it), except an unreachable backend,
which the leader's loop already handles."""

from __future__ import annotations

from typing import cast

import pytest

from mxvm.config import CoordinatorSettings
from mxvm.coordinator.collector import Collector
from mxvm.errors import BackendUnavailable
from mxvm.store import Store


class Broken:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def collect_jobs(self, older_than_s: float, limit: int) -> list[str]:
        raise self.error


def collector(error: Exception) -> Collector:
    settings = CoordinatorSettings(database_url="postgresql:///x", redis_url="redis://x")
    return Collector(cast(Store, Broken(error)), settings)


async def test_a_bug_in_a_round_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    assert await collector(RuntimeError("boom")).run_once() is False
    assert "gc.failed" in caplog.text and "boom" in caplog.text


async def test_an_unreachable_database_is_left_to_the_leaders_loop() -> None:
    with pytest.raises(BackendUnavailable):
        await collector(BackendUnavailable("down", backend="postgres")).run_once()
