"""A migrated Store on a fresh database per test, and small builders for its records."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from mxvm.models import (
    Allocation,
    Evaluation,
    Job,
    JobSpec,
    Node,
    NodeRegistration,
    Plan,
    Resources,
)
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


def job_spec(name: str = "train", memory: int = 1024) -> JobSpec:
    return JobSpec.model_validate(
        {"name": name, "task": {"argv": ["true"], "memory_mb": memory, "driver": "fake"}}
    )


def placement(job_id: str, node_id: str, index: int = 0, **kw: object) -> Allocation:
    """An allocation as a plan would place it (1 CPU, 1 GiB)."""
    return Allocation.model_validate(
        {
            "id": str(uuid.uuid4()),
            "job_id": job_id,
            "node_id": node_id,
            "name": f"train[{index}]",
            "index": index,
            "resources": Resources(cpu_millicores=1000, memory_mb=1024),
            **kw,
        }
    )


async def one_placed(store: Store) -> tuple[Node, Job, Evaluation, Allocation]:
    """A node with one allocation of a fresh job placed on it (epoch 1)."""
    node, _ = await store.register_node(
        registration("n1"), subnet_pool="10.87.0.0/16", subnet_prefix=24
    )
    job, ev = await store.create_job(job_spec())
    a = placement(job.id, node.id)
    await store.apply_plan(Plan(eval_id=ev.id, job_id=job.id, placements=[a]), 1)
    return node, job, ev, a
