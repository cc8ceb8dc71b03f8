"""The asyncpg pool and the one place where Postgres failures become mxvm errors.

Every connection-level failure (server down, restarting, network, timeout) becomes
BackendUnavailable so the API answers 503 with Retry-After instead of 500 or a hang.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

from mxvm.errors import BackendUnavailable

log = logging.getLogger(__name__)

# What a query function receives: a pooled connection.
Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

# Errors that mean "the database is not reachable right now", not "the query is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's default reset query (advisory unlock, CLOSE ALL,
    UNLISTEN, RESET ALL): a whole extra round trip per checkout, measured at 2.7x the cost of
    a `SELECT 1`. mxvm leaves no session state on pooled connections: LISTEN has its own
    connection (listen.py), the migration lock is released in a `finally`, nothing runs
    SET. An open transaction is still rolled back by asyncpg before this is called."""


class Database:
    def __init__(self, dsn: str, *, pool_max: int = 10, timeout_s: float = 5.0) -> None:
        self.dsn = dsn
        self.timeout_s = timeout_s
        self._pool_max = pool_max
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        # min_size=0: the pool opens lazily, so a coordinator can start while Postgres is down
        # and serve 503s until it comes back.
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=0,
            max_size=self._pool_max,
            timeout=self.timeout_s,
            command_timeout=self.timeout_s * 6,
            init=_init_connection,
            # Idle connections stay open: a new one costs a TCP and SCRAM handshake plus the
            # codec set-up, which under a burst of requests queues everything behind it.
            max_inactive_connection_lifetime=0,
            reset=_keep_session,
        )

    async def warm(self, connections: int) -> None:
        """Open `connections` pooled connections now (once Postgres is reachable), so the
        first burst of requests does not pay for opening them."""
        if self._pool is None:
            return
        held = []
        try:
            for _ in range(connections):
                held.append(await self._pool.acquire(timeout=self.timeout_s))
        except _UNAVAILABLE as exc:  # opened on demand later, as usual
            log.warning("store.warm_failed %s: %s", type(exc).__name__, exc)
        for conn in held:
            await self._pool.release(conn)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        if self._pool is None:
            raise BackendUnavailable("database pool is not open", backend="postgres")
        try:
            async with self._pool.acquire(timeout=self.timeout_s) as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(
                f"postgres unavailable: {type(exc).__name__}: {exc}", backend="postgres"
            ) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.connection() as conn:
            return await conn.execute(sql, *args)
