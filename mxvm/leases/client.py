"""Leases: leader election with epochs, node heartbeats, allocation leases, all in Redis.

A lease is a key holding a token with a TTL (`SET key token NX PX ttl`); only the token's
holder may renew or release it (Lua compare-and-act). Redis is advisory: Postgres fences
stale leaders by epoch, so losing Redis (or its data) costs liveness, never correctness.

Every Redis failure leaves this module as BackendUnavailable(backend="redis"), and every
call is bounded by socket timeouts so nothing hangs when Redis dies or freezes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mxvm.errors import BackendUnavailable
from mxvm.leases import keys, scripts

log = logging.getLogger(__name__)

T = TypeVar("T")

# live_nodes reads this many keys per MGET; one pipelined round trip carries all chunks.
_MGET_CHUNK = 1000


@dataclass(frozen=True)
class Leadership:
    """A won election: `token` proves ownership of the lease, `epoch` fences its plans."""

    token: str
    epoch: int
    holder: str


def _ms(ttl_s: float) -> int:
    return max(1, round(ttl_s * 1000))


def _holder_of(token: str) -> str:
    return token.rsplit("#", 1)[0]


@asynccontextmanager
async def _translated(operation: str, deadline_s: float) -> AsyncIterator[None]:
    """Turn any Redis failure, or a call outliving its deadline, into BackendUnavailable."""
    try:
        # The socket timeouts should fire first; this is the backstop for everything else.
        async with asyncio.timeout(deadline_s):
            yield
    except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
        raise BackendUnavailable(
            f"redis {operation} failed: {type(exc).__name__}: {exc}", backend="redis"
        ) from exc


class Leases:
    """The only Redis client in mxvm. Build with `await Leases.connect(url)`."""

    def __init__(self, client: redis.asyncio.Redis, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._acquire_leadership = client.register_script(scripts.ACQUIRE_LEADERSHIP)
        self._compare_and_pexpire = client.register_script(scripts.COMPARE_AND_PEXPIRE)
        self._compare_and_delete = client.register_script(scripts.COMPARE_AND_DELETE)
        self._acquire_or_extend = client.register_script(scripts.ACQUIRE_OR_EXTEND)

    @classmethod
    async def connect(
        cls, url: str, *, timeout_s: float = 5.0, max_connections: int = 50
    ) -> Leases:
        """Connect and PING; raises BackendUnavailable if Redis cannot be reached.

        Concurrent calls beyond `max_connections` wait (up to timeout_s) for a connection.
        """
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # One immediate retry replaces a pooled connection that died with a restarted
            # Redis; more retries with backoff would only delay BackendUnavailable.
            retry=Retry(NoBackoff(), 1),
        )
        client = redis.asyncio.Redis.from_pool(pool)
        leases = cls(client, timeout_s)
        try:
            await leases.ping()
        except BackendUnavailable:
            await client.aclose()
            raise
        return leases

    async def close(self) -> None:
        await self._client.aclose()

    async def _run(self, operation: str, call: Awaitable[T]) -> T:
        # Two attempts (see Retry above), each bounded by the socket timeouts.
        async with _translated(operation, deadline_s=3 * self._timeout_s + 1):
            return await call
        raise AssertionError("unreachable")  # mypy: the context manager may swallow

    async def ping(self) -> None:
        await self._run("PING", self._client.ping())

    async def uptime_s(self) -> float:
        """How long the Redis server has been up: leases younger than this never existed."""
        info: Any = await self._run("INFO server", self._client.info("server"))
        return float(info["uptime_in_seconds"])

    # --- leader election ------------------------------------------------------------------

    async def try_acquire_leadership(
        self, holder: str, ttl_s: float, *, min_epoch: int = 0
    ) -> Leadership | None:
        """Win the leader lease if it is free; None if someone holds it.

        The epoch comes from INCR, so each won election gets a larger one. `min_epoch` is the
        highest epoch Postgres has recorded: Redis keeps no data across restarts, and a
        counter that restarted at 1 would give the new leader an epoch Postgres rejects as
        stale forever. So an epoch <= min_epoch is raised to min_epoch + 1.
        """
        token = f"{holder}#{secrets.token_hex(16)}"
        epoch: Any = await self._run(
            "acquire leadership",
            self._acquire_leadership(
                keys=[keys.LEADER, keys.LEADER_EPOCH], args=[token, _ms(ttl_s), min_epoch]
            ),
        )
        if epoch is None:
            return None
        log.info("leases.leadership_acquired holder=%s epoch=%s", holder, epoch)
        return Leadership(token=token, epoch=int(epoch), holder=holder)

    async def renew_leadership(self, lease: Leadership, ttl_s: float) -> bool:
        """Extend the lease; False if it was lost (expired, or another leader holds it)."""
        renewed: Any = await self._run(
            "renew leadership",
            self._compare_and_pexpire(keys=[keys.LEADER], args=[lease.token, _ms(ttl_s)]),
        )
        if not renewed:
            log.warning("leases.leadership_lost holder=%s epoch=%d", lease.holder, lease.epoch)
        return bool(renewed)

    async def release_leadership(self, lease: Leadership) -> bool:
        """Give the lease up; False if it was not ours any more."""
        released: Any = await self._run(
            "release leadership",
            self._compare_and_delete(keys=[keys.LEADER], args=[lease.token]),
        )
        return bool(released)

    async def current_leader(self) -> str | None:
        """The holder of an unexpired leader lease, if any."""
        token: Any = await self._run("get leader", self._client.get(keys.LEADER))
        return None if token is None else _holder_of(str(token))

    # --- node heartbeats ------------------------------------------------------------------

    async def heartbeat(self, node_id: str, ttl_s: float) -> None:
        """Mark the node alive for ttl_s."""
        await self._run(
            "heartbeat",
            self._client.set(keys.node_heartbeat(node_id), f"{time.time():.3f}", px=_ms(ttl_s)),
        )

    async def live_nodes(self, node_ids: Iterable[str]) -> set[str]:
        """The subset of node_ids with an unexpired heartbeat (one pipelined round trip)."""
        ids = list(node_ids)
        if not ids:
            return set()
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(ids), _MGET_CHUNK):
            pipe.mget([keys.node_heartbeat(n) for n in ids[start : start + _MGET_CHUNK]])
        chunks: list[list[Any]] = await self._run("live nodes", pipe.execute())
        values = [value for chunk in chunks for value in chunk]
        return {node_id for node_id, value in zip(ids, values, strict=True) if value is not None}

    # --- allocation leases ----------------------------------------------------------------

    async def acquire_alloc_lease(self, alloc_id: str, holder: str, ttl_s: float) -> bool:
        """Take the allocation's lease; True also when `holder` already has it (extended)."""
        acquired: Any = await self._run(
            "acquire alloc lease",
            self._acquire_or_extend(keys=[keys.alloc_lease(alloc_id)], args=[holder, _ms(ttl_s)]),
        )
        return bool(acquired)

    async def renew_alloc_lease(self, alloc_id: str, holder: str, ttl_s: float) -> bool:
        """Extend the lease; False if `holder` no longer has it."""
        renewed: Any = await self._run(
            "renew alloc lease",
            self._compare_and_pexpire(keys=[keys.alloc_lease(alloc_id)], args=[holder, _ms(ttl_s)]),
        )
        return bool(renewed)

    async def release_alloc_lease(self, alloc_id: str, holder: str) -> bool:
        """Drop the lease; False if `holder` did not have it."""
        released: Any = await self._run(
            "release alloc lease",
            self._compare_and_delete(keys=[keys.alloc_lease(alloc_id)], args=[holder]),
        )
        return bool(released)
