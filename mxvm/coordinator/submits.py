"""Group submit: concurrent job submissions share one INSERT statement and one commit.

The first submit goes to Postgres at once; submits arriving while it is in flight queue
up and go together in the next statement when it returns (like Postgres' own group
commit). A burst of 50 requests thus costs a handful of round trips instead of 50: the
coordinator's time went mostly into sending one query per request, and Postgres' into one
commit each. Each request still gets its own answer (its job, or its own Conflict or
InvalidSpec); a failure of the statement itself fails every request of that batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from mxvm.errors import MxvmError
from mxvm.models import Evaluation, Job, JobSpec
from mxvm.store import Store

MAX_BATCH = 256  # bounds one statement's size; the rest go in the next one


class SubmitBatcher:
    """`on_stored` runs as soon as a statement has stored jobs, before their requests are
    answered: the evaluator is woken ahead of writing the responses, not behind them."""

    def __init__(self, store: Store, on_stored: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.on_stored = on_stored
        self._queue: list[tuple[JobSpec, asyncio.Future[tuple[Job, Evaluation]]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._storing = False  # a statement is in flight
        self._settle_waiters: list[asyncio.Future[None]] = []  # settled() calls waiting on it

    async def settled(self, timeout_s: float) -> None:
        """Until the statement in flight now (if any) has stored its jobs, at most
        `timeout_s`. The evaluator waits for it: woken by a first small batch of a burst, it
        would otherwise plan that batch alone and leave the rest, stored a few milliseconds
        later, to a second round."""
        if not self._storing:
            return
        # A future of its own, set when the statement returns and awaited directly (not
        # through asyncio.wait, which adds a hop): the caller then resumes ahead of the
        # requests that statement answers.
        done = asyncio.get_running_loop().create_future()
        self._settle_waiters.append(done)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await done

    async def submit(self, spec: JobSpec) -> tuple[Job, Evaluation]:
        fut: asyncio.Future[tuple[Job, Evaluation]] = asyncio.get_running_loop().create_future()
        self._queue.append((spec, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="submit-batch")
        return await fut

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            # A request cancelled while queued (its client went away) stores nothing.
            batch = [(spec, fut) for spec, fut in batch if not fut.done()]
            if not batch:
                continue
            self._storing = True
            try:
                results = await self.store.create_jobs([spec for spec, _ in batch])
            except Exception as exc:  # each waiting request gets it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            finally:
                self._statement_returned()
            if any(not isinstance(r, MxvmError) for r in results):
                self.on_stored()
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():  # its request was cancelled; the job stays submitted
                    continue
                if isinstance(result, MxvmError):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    def _statement_returned(self) -> None:
        self._storing = False
        waiters, self._settle_waiters = self._settle_waiters, []
        for done in waiters:
            if not done.done():  # its wait timed out
                done.set_result(None)
