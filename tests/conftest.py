"""Shared fixtures: real Postgres and Redis servers, started as child processes.

Session-wide servers (`pg_server`, `redis_server`) are started once; each test gets a fresh
database (`pg_dsn`) or an emptied Redis (`redis_url`). Tests that kill and restart a server
take a dedicated one (`own_pg`, `own_redis`).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio

from mxvm.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    find_postgres_binaries,
    find_redis_server,
)
from tests.harness import Api, running, settings_for


def _server_dir(prefix: str) -> Path:
    # 0755, not pytest's tmp_path: as root, Postgres runs as another user, who must be able
    # to reach the directory, and /tmp/pytest-of-root is 0700.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def _require_postgres() -> None:
    try:
        find_postgres_binaries()
    except EmbeddedServerError as exc:
        pytest.skip(f"needs a Postgres server: {exc.detail}")


def _require_redis() -> None:
    try:
        find_redis_server()
    except EmbeddedServerError as exc:
        pytest.skip(f"needs redis-server: {exc.detail}")


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """An empty 0755 directory for a server's data, removed afterwards."""
    path = _server_dir("mxvm-srv-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
async def pg_server() -> AsyncIterator[EmbeddedPostgres]:
    """One Postgres (fsync off) for the whole session; use `pg_dsn` for a database."""
    _require_postgres()
    path = _server_dir("mxvm-pg-")
    server = EmbeddedPostgres(path, fsync=False)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def pg_dsn(pg_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """DSN of a fresh, empty database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex}"
    conn = await asyncpg.connect(pg_server.dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield pg_server.dsn_for(name)
    if not pg_server.running:  # a test stopped the shared server; nothing to drop
        return
    conn = await asyncpg.connect(pg_server.dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def redis_server() -> AsyncIterator[EmbeddedRedis]:
    """One Redis for the whole session; use `redis_url` for an emptied one."""
    _require_redis()
    path = _server_dir("mxvm-redis-")
    server = EmbeddedRedis(path)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session Redis, emptied (FLUSHALL) before the test."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    return redis_server.url


@pytest.fixture
async def own_pg() -> AsyncIterator[EmbeddedPostgres]:
    """A started Postgres of this test's own, free to stop, kill and restart.

    fsync is off (no disk flushes) but synchronous_commit is on, so a commit that returned
    survives kill(): WAL reaches the OS before COMMIT returns, and kill() is a process
    crash, not a machine crash.
    """
    _require_postgres()
    path = _server_dir("mxvm-pg-")
    server = EmbeddedPostgres(path, fsync=False, settings=["synchronous_commit=on"])
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def own_redis() -> AsyncIterator[EmbeddedRedis]:
    """A started Redis of this test's own, free to stop, kill and restart."""
    _require_redis()
    path = _server_dir("mxvm-redis-")
    server = EmbeddedRedis(path)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def api(pg_dsn: str, redis_url: str) -> AsyncIterator[Api]:
    """A running coordinator (leading) over this test's fresh database."""
    async with running(settings_for(pg_dsn, redis_url)) as a:
        yield a
