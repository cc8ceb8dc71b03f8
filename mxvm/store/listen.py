"""Postgres LISTEN on a dedicated connection, reconnecting when the server goes away.

Notifications are wake-ups only (every consumer also polls), so one lost while the server
was down costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger(__name__)


async def listen(
    dsn: str,
    handlers: dict[str, Callable[[str], None]],
    stop: asyncio.Event,
    *,
    on_reconnect: Callable[[], None] | None = None,
    retry_s: float = 1.0,
) -> None:
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, ev=lost: ev.set())
            for channel, handler in handlers.items():
                await conn.add_listener(
                    channel, lambda _c, _pid, _ch, payload, h=handler: h(payload)
                )
            if on_reconnect is not None:
                on_reconnect()  # something may have changed while we were not listening
            stop_wait = asyncio.create_task(stop.wait())
            lost_wait = asyncio.create_task(lost.wait())
            await asyncio.wait({stop_wait, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            lost_wait.cancel()
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.debug("store.listen_retry", exc_info=True)
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close(timeout=2)
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)
