"""A coalescing trigger: however many times it is pulled while a send is in flight, one
more send follows, never one per pull.

The coordinator uses it to wake the leader's evaluator in another process after submits.
A NOTIFY inside each submit's transaction serialises every committing submit on Postgres'
notify lock (measured here: a burst of 50 submits took twice as long); one NOTIFY after the
commits, for all the submits that came in meanwhile, wakes the evaluator just the same.
A lost wake-up only costs latency: the evaluator also polls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from mxvm.errors import MxvmError

log = logging.getLogger(__name__)


class Coalesced:
    def __init__(self, send: Callable[[], Awaitable[None]], what: str) -> None:
        self._send = send
        self._what = what
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def trigger(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True  # the running send may have started before this change
            return
        self._task = asyncio.create_task(self._run(), name=f"nudge-{self._what}")

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self._send()
            except MxvmError as exc:
                log.warning("nudge.failed %s: %s", self._what, exc.detail)
            if not self._again:
                return

    async def wait(self) -> None:
        """Until no send is in flight."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
