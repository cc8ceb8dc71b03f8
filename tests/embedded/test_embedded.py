"""EmbeddedPostgres / EmbeddedRedis against the real server binaries."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis.asyncio
import redis.exceptions

from mxvm.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    find_postgres_binaries,
    find_redis_server,
)

# --- Postgres ---------------------------------------------------------------------------


async def test_dsn_connects_as_mxvm_to_database_mxvm(pg_server: EmbeddedPostgres) -> None:
    assert pg_server.running
    assert (
        pg_server.dsn
        == f"postgresql://mxvm:{_pg_password(pg_server)}@127.0.0.1:{pg_server.port}/mxvm"
    )
    conn = await asyncpg.connect(pg_server.dsn)
    try:
        row = await conn.fetchrow("SELECT current_user AS u, current_database() AS d")
        assert row is not None
        assert (row["u"], row["d"]) == ("mxvm", "mxvm")
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
    finally:
        await conn.close()


async def test_password_is_required(pg_server: EmbeddedPostgres) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://mxvm:wrong@127.0.0.1:{pg_server.port}/mxvm", timeout=5)


async def test_password_file_is_private(pg_server: EmbeddedPostgres) -> None:
    mode = (pg_server.data_dir / "password").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


async def test_pg_dsn_is_a_fresh_database(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert (await conn.fetchval("SELECT current_database()")).startswith("test_")
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables == 0
    finally:
        await conn.close()


async def _write_row(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS t (v text)")
        await conn.execute("INSERT INTO t VALUES ('kept')")
    finally:
        await conn.close()


async def _read_rows(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["v"] for r in await conn.fetch("SELECT v FROM t")]
    finally:
        await conn.close()


async def test_restart_keeps_data_and_dsn(own_pg: EmbeddedPostgres) -> None:
    dsn = own_pg.dsn
    await _write_row(dsn)
    await own_pg.stop()
    assert not own_pg.running
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=5)
    assert await own_pg.start() == dsn
    assert await _read_rows(dsn) == ["kept"]


async def test_stop_is_idempotent(own_pg: EmbeddedPostgres) -> None:
    await own_pg.stop()
    await own_pg.stop()
    assert not own_pg.running


async def test_kill_then_start_again(own_pg: EmbeddedPostgres) -> None:
    dsn = own_pg.dsn
    await _write_row(dsn)
    await own_pg.kill()
    assert not own_pg.running
    assert not (own_pg.pgdata / "postmaster.pid").exists()
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=5)
    assert await own_pg.start() == dsn
    assert await _read_rows(dsn) == ["kept"]  # committed before the crash: WAL replay


async def test_kill_ends_every_backend(own_pg: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(own_pg.dsn)
    backend_pid = await conn.fetchval("SELECT pg_backend_pid()")
    await own_pg.kill()
    assert not _alive(backend_pid)
    conn.terminate()


async def test_explicit_port_is_used_and_kept(server_dir: Path) -> None:
    port = _free_port()
    server = EmbeddedPostgres(server_dir, port=port, fsync=False)
    try:
        assert f"@127.0.0.1:{port}/mxvm" in await server.start()
        await server.stop()
        again = EmbeddedPostgres(server_dir, fsync=False)  # no port given: the kept one
        try:
            assert f"@127.0.0.1:{port}/" in await again.start()
        finally:
            await again.stop()
    finally:
        await server.stop()


async def test_start_failure_reports_log_tail(server_dir: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        server = EmbeddedPostgres(server_dir, port=blocker.getsockname()[1], fsync=False)
        with pytest.raises(EmbeddedServerError, match="Address already in use"):
            await server.start()
    assert not server.running


async def test_missing_postgres_binaries_name_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(EmbeddedServerError, match="postgresql-15"):
        find_postgres_binaries(search_path=str(tmp_path), debian_root=tmp_path / "none")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("mxvm.embedded.binaries.DEBIAN_POSTGRES_ROOT", tmp_path / "none")
    with pytest.raises(EmbeddedServerError, match=r"initdb, postgres"):
        await EmbeddedPostgres(tmp_path / "data").start()


def _fake_bin(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_debian_layout_newest_version_first(tmp_path: Path) -> None:
    for version in ("9.6", "13", "15"):
        _fake_bin(tmp_path / version / "bin" / "initdb")
        _fake_bin(tmp_path / version / "bin" / "postgres")
    _fake_bin(tmp_path / "16" / "bin" / "initdb")  # incomplete: no postgres
    found = find_postgres_binaries(search_path=str(tmp_path / "empty"), debian_root=tmp_path)
    assert found.initdb == tmp_path / "15" / "bin" / "initdb"
    assert found.postgres == tmp_path / "15" / "bin" / "postgres"


def test_path_wins_over_debian_layout(tmp_path: Path) -> None:
    _fake_bin(tmp_path / "onpath" / "initdb")
    _fake_bin(tmp_path / "onpath" / "postgres")
    _fake_bin(tmp_path / "15" / "bin" / "initdb")
    _fake_bin(tmp_path / "15" / "bin" / "postgres")
    found = find_postgres_binaries(search_path=str(tmp_path / "onpath"), debian_root=tmp_path)
    assert found.postgres == tmp_path / "onpath" / "postgres"


async def test_unreachable_data_dir_is_a_clear_error() -> None:
    if os.geteuid() != 0:
        pytest.skip("only root switches to another user for Postgres")
    private = Path(tempfile.mkdtemp(prefix="mxvm-private-"))  # mode 0700, owned by root
    try:
        with pytest.raises(EmbeddedServerError, match="not searchable"):
            await EmbeddedPostgres(private / "pg", fsync=False).start()
    finally:
        shutil.rmtree(private)


# --- Redis ------------------------------------------------------------------------------


async def _redis_ping(url: str) -> bool:
    client = redis.asyncio.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


async def test_redis_url_needs_password(redis_server: EmbeddedRedis) -> None:
    assert await _redis_ping(redis_server.url)
    with pytest.raises(redis.exceptions.AuthenticationError):
        await _redis_ping(f"redis://:wrong@127.0.0.1:{redis_server.port}/0")


async def test_redis_url_fixture_is_empty(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await client.dbsize() == 0
        await client.set("left-behind", "1")  # the next test's FLUSHALL removes it
    finally:
        await client.aclose()


async def test_redis_restart_keeps_url(own_redis: EmbeddedRedis) -> None:
    url = own_redis.url
    await own_redis.stop()
    await own_redis.stop()
    assert not own_redis.running
    with pytest.raises(redis.exceptions.ConnectionError):
        await _redis_ping(url)
    assert await own_redis.start() == url
    assert await _redis_ping(url)


async def test_redis_kill_then_start(own_redis: EmbeddedRedis) -> None:
    url = own_redis.url
    await own_redis.kill()
    assert not own_redis.running
    with pytest.raises(redis.exceptions.ConnectionError):
        await _redis_ping(url)
    assert await own_redis.start() == url
    assert await _redis_ping(url)


def test_missing_redis_names_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServerError, match="apt-get install redis-server"):
        find_redis_server(search_path=str(tmp_path))


_ORPHAN_SCRIPT = """
import asyncio, sys
from pathlib import Path
from mxvm.embedded import EmbeddedRedis
async def main():
    server = EmbeddedRedis(Path(sys.argv[1]))
    await server.start()
    print(server._child.pid, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_children_die_with_their_parent(server_dir: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ORPHAN_SCRIPT, str(server_dir), stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    line = await asyncio.wait_for(parent.stdout.readline(), 30)
    child_pid = int(line)
    assert _alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    await parent.wait()
    for _ in range(200):
        if not _alive(child_pid):
            break
        await asyncio.sleep(0.02)
    assert not _alive(child_pid)


# --- helpers ----------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pg_password(server: EmbeddedPostgres) -> str:
    return (server.data_dir / "password").read_text().strip()
