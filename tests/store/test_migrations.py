import asyncio

import asyncpg

from mxvm.store import Store
from mxvm.store.migrate import available


async def _schema(dsn: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY 1, 2"
        )
    finally:
        await conn.close()
    return [(r[0], r[1], r[2]) for r in rows]


async def test_all_migrations_apply_once_and_twice_is_a_no_op(pg_dsn: str) -> None:
    store = await Store.connect(pg_dsn)
    try:
        first = await store.migrate()
        schema = await _schema(pg_dsn)
        second = await store.migrate()
    finally:
        await store.close()
    assert first == [f"{m.version:04d}_{m.name}" for m in available()]
    assert second == []
    assert await _schema(pg_dsn) == schema
    assert ("allocations", "live", "boolean") in schema


async def test_concurrent_migrations_apply_each_exactly_once(pg_dsn: str) -> None:
    stores = [await Store.connect(pg_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(s.migrate() for s in stores))
    finally:
        for s in stores:
            await s.close()
    applied = [name for r in results for name in r]
    assert sorted(applied) == sorted(f"{m.version:04d}_{m.name}" for m in available())
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(available())
    finally:
        await conn.close()
