"""Run one coordinator process: store, leases, NOTIFY listener, leader loop and REST API,
as named tasks in one TaskGroup that all end when `stop` is set."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from mxvm.api.app import create_app
from mxvm.config import CoordinatorSettings, split_listen
from mxvm.coordinator.leader import LeaderLoop
from mxvm.coordinator.service import Coordinator
from mxvm.coordinator.watch import NodeWatch
from mxvm.errors import BackendUnavailable, InvalidSpec
from mxvm.leases import Leases
from mxvm.store import Store, listen

log = logging.getLogger(__name__)


PLANNER_CONNECTIONS = 4


@asynccontextmanager
async def open_coordinator(settings: CoordinatorSettings) -> AsyncIterator[Coordinator]:
    if not settings.database_url or not settings.redis_url:
        raise InvalidSpec("database_url and redis_url are required (or use `mxvm up`)")
    store = await Store.connect(
        settings.database_url,
        pool_max=settings.db_pool_max,
        timeout_s=settings.backend_timeout_s,
    )
    # The evaluator's own connections (four: it reads jobs, allocations and the snapshot at
    # once while the previous batch's outcomes are written): a burst of API requests queueing
    # for the shared pool must not hold up placing the jobs they submit.
    planner = await Store.connect(
        settings.database_url, pool_max=PLANNER_CONNECTIONS, timeout_s=settings.backend_timeout_s
    )
    leases = await Leases.connect(settings.redis_url, timeout_s=settings.backend_timeout_s)
    try:
        await _migrate_when_reachable(store)
        await store.db.warm(settings.db_pool_max // 2)
        await planner.db.warm(PLANNER_CONNECTIONS)
        coord = Coordinator(settings, store, leases, NodeWatch(), planner=planner)
        try:
            yield coord
        finally:
            await coord.agents.close()
    finally:
        await leases.close()
        await planner.close()
        await store.close()


async def _migrate_when_reachable(store: Store, attempts: int = 30) -> None:
    for i in range(attempts):
        try:
            applied = await store.migrate()
            if applied:
                log.info("store.migrated %s", applied)
            return
        except BackendUnavailable:
            if i == attempts - 1:
                raise
            await asyncio.sleep(1)


async def serve(
    coord: Coordinator, stop: asyncio.Event, *, ready: asyncio.Event | None = None
) -> None:
    """Serve the API and run the background loops until `stop` is set."""
    host, port = split_listen(coord.settings.listen)
    # Long-polls end when their client goes away, and shutdown does not wait them out.
    runner = web.AppRunner(
        create_app(coord), access_log=None, handler_cancellation=True, shutdown_timeout=2
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("api.listening %s:%d", host, port)
    if ready is not None:
        ready.set()
    assert coord.settings.database_url is not None
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                listen(
                    coord.settings.database_url,
                    {
                        "mxvm_node": coord.watch.node_changed,
                        "mxvm_eval": coord.watch.wake_evaluator,
                    },
                    stop,
                    on_reconnect=coord.watch.wake_all,
                ),
                name="pg-listen",
            )
            tg.create_task(LeaderLoop(coord).run(stop), name="leader")
    finally:
        await runner.cleanup()
