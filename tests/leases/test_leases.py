"""mxvm.leases against a real Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from mxvm.embedded import EmbeddedRedis
from mxvm.errors import BackendUnavailable
from mxvm.leases import Leadership, Leases, keys

SHORT_TTL = 0.2  # seconds: long enough to act within, short enough to wait out


@pytest.fixture
async def leases(redis_url: str) -> AsyncIterator[Leases]:
    client = await Leases.connect(redis_url)
    yield client
    await client.close()


async def _expire() -> None:
    await asyncio.sleep(SHORT_TTL * 2)


# --- leader election --------------------------------------------------------------------


async def test_exactly_one_of_many_concurrent_acquirers_wins(redis_url: str) -> None:
    clients = [await Leases.connect(redis_url) for _ in range(8)]
    try:
        results = await asyncio.gather(
            *(
                c.try_acquire_leadership(f"coord-{i}-{j}", ttl_s=10)
                for i, c in enumerate(clients)
                for j in range(5)
            )
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        assert await clients[0].current_leader() == winners[0].holder
    finally:
        for c in clients:
            await c.close()


async def test_epoch_increases_with_each_election(leases: Leases) -> None:
    epochs = []
    for i in range(3):
        won = await leases.try_acquire_leadership(f"coord-{i}", ttl_s=10)
        assert won is not None
        assert won.holder == f"coord-{i}"
        epochs.append(won.epoch)
        assert await leases.release_leadership(won)
    assert epochs == sorted(epochs)
    assert len(set(epochs)) == 3


async def test_held_lease_blocks_others_and_renew_keeps_it(leases: Leases) -> None:
    won = await leases.try_acquire_leadership("a", ttl_s=SHORT_TTL)
    assert won is not None
    for _ in range(4):  # renewing past several TTLs keeps the lease
        await asyncio.sleep(SHORT_TTL / 2)
        assert await leases.renew_leadership(won, ttl_s=SHORT_TTL)
    assert await leases.try_acquire_leadership("b", ttl_s=10) is None
    assert await leases.current_leader() == "a"


async def test_wrong_token_cannot_renew_or_release(leases: Leases) -> None:
    won = await leases.try_acquire_leadership("a", ttl_s=10)
    assert won is not None
    forged = Leadership(token="a#forged", epoch=won.epoch, holder="a")
    assert not await leases.renew_leadership(forged, ttl_s=10)
    assert not await leases.release_leadership(forged)
    assert await leases.current_leader() == "a"


async def test_expired_lease_lets_another_win_and_old_token_fails(leases: Leases) -> None:
    first = await leases.try_acquire_leadership("a", ttl_s=SHORT_TTL)
    assert first is not None
    await _expire()
    assert await leases.current_leader() is None
    assert not await leases.renew_leadership(first, ttl_s=10)  # expired, nobody else yet
    second = await leases.try_acquire_leadership("b", ttl_s=10)
    assert second is not None
    assert second.epoch > first.epoch
    assert not await leases.renew_leadership(first, ttl_s=10)
    assert not await leases.release_leadership(first)
    assert await leases.current_leader() == "b"


async def test_min_epoch_lifts_a_counter_that_redis_lost(leases: Leases) -> None:
    # The counter starts from scratch (empty Redis) while Postgres remembers epoch 41.
    won = await leases.try_acquire_leadership("a", ttl_s=10, min_epoch=41)
    assert won is not None
    assert won.epoch == 42
    assert await leases.release_leadership(won)
    again = await leases.try_acquire_leadership("b", ttl_s=10, min_epoch=0)
    assert again is not None
    assert again.epoch == 43  # the lifted counter stays lifted


async def test_min_epoch_below_counter_changes_nothing(leases: Leases) -> None:
    first = await leases.try_acquire_leadership("a", ttl_s=10, min_epoch=10)
    assert first is not None
    assert await leases.release_leadership(first)
    second = await leases.try_acquire_leadership("b", ttl_s=10, min_epoch=5)
    assert second is not None
    assert second.epoch == first.epoch + 1


async def test_holder_names_may_contain_separators(leases: Leases) -> None:
    won = await leases.try_acquire_leadership("host#1:2", ttl_s=10)
    assert won is not None
    assert await leases.current_leader() == "host#1:2"


# --- heartbeats -------------------------------------------------------------------------


async def test_heartbeat_liveness_and_expiry(leases: Leases) -> None:
    await leases.heartbeat("n1", ttl_s=SHORT_TTL)
    await leases.heartbeat("n2", ttl_s=10)
    assert await leases.live_nodes(["n1", "n2", "n3"]) == {"n1", "n2"}
    await _expire()
    assert await leases.live_nodes(["n1", "n2", "n3"]) == {"n2"}
    await leases.heartbeat("n1", ttl_s=10)
    assert await leases.live_nodes(iter(["n1", "n2"])) == {"n1", "n2"}
    assert await leases.live_nodes([]) == set()


async def test_live_nodes_over_ten_thousand_ids(leases: Leases) -> None:
    ids = [f"node-{i:05d}" for i in range(10_000)]
    alive = set(ids[::3])
    for chunk in range(0, len(ids), 500):
        await asyncio.gather(
            *(leases.heartbeat(n, ttl_s=30) for n in ids[chunk : chunk + 500] if n in alive)
        )
    assert await leases.live_nodes(ids) == alive


# --- allocation leases ------------------------------------------------------------------


async def test_alloc_lease_belongs_to_one_holder(leases: Leases) -> None:
    assert await leases.acquire_alloc_lease("alloc-1", "agent-a", ttl_s=10)
    assert not await leases.acquire_alloc_lease("alloc-1", "agent-b", ttl_s=10)
    assert not await leases.renew_alloc_lease("alloc-1", "agent-b", ttl_s=10)
    assert not await leases.release_alloc_lease("alloc-1", "agent-b")
    assert await leases.renew_alloc_lease("alloc-1", "agent-a", ttl_s=10)
    assert await leases.acquire_alloc_lease("alloc-1", "agent-a", ttl_s=10)  # re-acquire
    assert await leases.release_alloc_lease("alloc-1", "agent-a")
    assert not await leases.release_alloc_lease("alloc-1", "agent-a")
    assert await leases.acquire_alloc_lease("alloc-1", "agent-b", ttl_s=10)
    assert await leases.acquire_alloc_lease("alloc-2", "agent-a", ttl_s=10)  # independent


async def test_expired_alloc_lease_can_be_taken_over(leases: Leases) -> None:
    assert await leases.acquire_alloc_lease("alloc-1", "agent-a", ttl_s=SHORT_TTL)
    await _expire()
    assert not await leases.renew_alloc_lease("alloc-1", "agent-a", ttl_s=10)
    assert await leases.acquire_alloc_lease("alloc-1", "agent-b", ttl_s=10)
    assert not await leases.renew_alloc_lease("alloc-1", "agent-a", ttl_s=10)


async def test_concurrent_alloc_lease_has_one_winner(leases: Leases) -> None:
    results = await asyncio.gather(
        *(leases.acquire_alloc_lease("alloc-x", f"agent-{i}", ttl_s=10) for i in range(20))
    )
    assert results.count(True) == 1


# --- keys -------------------------------------------------------------------------------


async def test_every_key_written_is_listed_in_keys(leases: Leases, redis_url: str) -> None:
    won = await leases.try_acquire_leadership("a", ttl_s=10)
    assert won is not None
    await leases.heartbeat("n1", ttl_s=10)
    await leases.acquire_alloc_lease("alloc-1", "agent-a", ttl_s=10)
    raw = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        written = {str(k) for k in await raw.keys("*")}
    finally:
        await raw.aclose()
    assert written == {
        keys.LEADER,
        keys.LEADER_EPOCH,
        keys.node_heartbeat("n1"),
        keys.alloc_lease("alloc-1"),
    }
    assert all(k.startswith(keys.PREFIX) for k in written)


# --- Redis failures ---------------------------------------------------------------------

HANG_GUARD_S = 30  # fails the test instead of hanging it; not a speed assertion


async def test_unreachable_redis_raises_backend_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    with pytest.raises(BackendUnavailable) as caught:
        await asyncio.wait_for(
            Leases.connect(f"redis://:pw@127.0.0.1:{port}/0", timeout_s=1), HANG_GUARD_S
        )
    assert caught.value.backend == "redis"


async def test_killed_redis_raises_then_recovers_after_restart(own_redis: EmbeddedRedis) -> None:
    leases = await Leases.connect(own_redis.url, timeout_s=1)
    try:
        won = await leases.try_acquire_leadership("a", ttl_s=10)
        assert won is not None
        await own_redis.kill()
        calls = [
            leases.ping(),
            leases.try_acquire_leadership("b", ttl_s=10),
            leases.renew_leadership(won, ttl_s=10),
            leases.heartbeat("n1", ttl_s=10),
            leases.live_nodes(["n1"]),
            leases.acquire_alloc_lease("alloc-1", "agent-a", ttl_s=10),
        ]
        for call in calls:
            with pytest.raises(BackendUnavailable):
                await asyncio.wait_for(call, HANG_GUARD_S)
        await own_redis.start()
        # Redis came back empty: the old lease is gone, a new election works.
        assert not await leases.renew_leadership(won, ttl_s=10)
        again = await leases.try_acquire_leadership("b", ttl_s=10, min_epoch=won.epoch)
        assert again is not None
        assert again.epoch == won.epoch + 1
    finally:
        await leases.close()


async def test_frozen_redis_times_out_instead_of_hanging(own_redis: EmbeddedRedis) -> None:
    leases = await Leases.connect(own_redis.url, timeout_s=0.5)
    pid = own_redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(BackendUnavailable):
            await asyncio.wait_for(leases.heartbeat("n1", ttl_s=10), HANG_GUARD_S)
        with pytest.raises(BackendUnavailable):
            await asyncio.wait_for(leases.live_nodes(["n1"]), HANG_GUARD_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    await leases.heartbeat("n2", ttl_s=10)
    assert await leases.live_nodes(["n2"]) == {"n2"}
    await leases.close()
