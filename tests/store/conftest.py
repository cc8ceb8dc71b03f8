"""A migrated Store on a fresh database per test, and small builders for its records."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mxvm.models import NodeRegistration, Resources
from mxvm.store import Store


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[Store]:
    s = await Store.connect(pg_dsn)
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


def registration(name: str, cpu: int = 4000, memory: int = 4096, **kw: object) -> NodeRegistration:
    return NodeRegistration.model_validate(
        {
            "name": name,
            "resources": Resources(cpu_millicores=cpu, memory_mb=memory, disk_mb=10000),
            "drivers": ["qemu", "fake"],
            **kw,
        }
    )
