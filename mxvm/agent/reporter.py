"""Allocation status reports to the coordinator, sent in batches.

Every runner reports its transitions (starting, running, complete, restarting...). One request
per report would make a burst of VMs starting cost one HTTP request and one Postgres
transaction per report; instead reports are queued and one sender posts whatever is queued in
a single request, in order (an allocation's reports never overtake each other). A caller still
awaits its own report: delivered, or refused by the coordinator (logged, not raised: a refused
report is about an allocation the coordinator has moved on from). An unreachable coordinator
is retried with backoff, keeping the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from pydantic import ValidationError

from mxvm.client import ApiClient
from mxvm.errors import BackendUnavailable, MxvmError
from mxvm.models import AllocReportResults, AllocStatusReport, AllocStatusUpdate

log = logging.getLogger(__name__)
MAX_BATCH = 500  # the API takes up to 1000 reports per request
MAX_RETRY_DELAY_S = 10.0


class Reporter:
    def __init__(self, api: ApiClient, path: Callable[[], str]) -> None:
        """`path()`: the batch endpoint of this node (its id may change on re-registration)."""
        self.api = api
        self.path = path
        self._queue: list[tuple[AllocStatusReport, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def report(self, alloc_id: str, update: AllocStatusUpdate) -> None:
        """Queue a report; return once the coordinator has taken or refused it."""
        done = asyncio.get_running_loop().create_future()
        self._queue.append((AllocStatusReport(alloc_id=alloc_id, **update.model_dump()), done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued(), name="status-reports")
        await done

    async def close(self) -> None:
        """Stop sending (agent shutdown); what is still queued is not delivered."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

    async def _send_queued(self) -> None:
        delay = 0.2
        while self._queue:
            batch = self._queue[:MAX_BATCH]
            body = {"reports": [r.model_dump(mode="json") for r, _ in batch]}
            try:
                out = await self.api.post(self.path(), json=body)
            except BackendUnavailable as exc:
                log.warning("agent.report_retry %d report(s): %s", len(batch), exc.detail)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
                continue
            except MxvmError as exc:  # e.g. the node is unknown: nothing in it can apply
                log.error("agent.report_failed %d report(s): %s", len(batch), exc.detail)
                out = None
            del self._queue[: len(batch)]
            delay = 0.2
            try:
                results = AllocReportResults.model_validate(out).results if out else []
            except ValidationError as exc:  # never leave the reporting runners waiting
                log.error("agent.report_answer_invalid %s", exc)
                results = []
            for res in results:
                if res.status != 200:
                    log.warning("agent.report_refused %s %s", res.alloc_id, res.detail)
            for _, done in batch:
                if not done.done():  # its awaiting runner may have been cancelled
                    done.set_result(None)
