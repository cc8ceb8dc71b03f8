"""apply_plan is the fence: capacity, device and port claims re-checked, stale epochs refused."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mxvm.errors import StaleEpoch
from mxvm.models import (
    AllocStatusReport,
    AllocStop,
    ClientStatus,
    Device,
    Plan,
)
from mxvm.store import Store
from mxvm.store.queries import q
from tests.store.conftest import job_spec, one_placed, placement, registration


async def test_two_plans_racing_for_the_last_slot_exactly_one_commits(store: Store) -> None:
    node, _ = await store.register_node(
        registration("n1", memory=2048), subnet_pool="10.87.0.0/16", subnet_prefix=24
    )
    job, ev = await store.create_job(job_spec())
    # 1 GiB already used: room for exactly one more 1 GiB allocation.
    first = Plan(eval_id=ev.id, job_id=job.id, placements=[placement(job.id, node.id, 0)])
    assert (await store.apply_plan(first, epoch=1)).committed
    racers = [
        Plan(eval_id=ev.id, job_id=job.id, placements=[placement(job.id, node.id, i)])
        for i in (1, 2)
    ]
    results = await asyncio.gather(*(store.apply_plan(p, epoch=1) for p in racers))
    committed = [r for r in results if r.committed]
    rejected = [r for r in results if r.rejected_nodes]
    assert len(committed) == 1 and len(rejected) == 1
    assert rejected[0].rejected_nodes == {node.id: "not enough memory"}
    assert len(await store.job_allocations(job.id)) == 2


async def test_a_plan_with_an_old_epoch_is_rejected(store: Store) -> None:
    node, _ = await store.register_node(
        registration("n1"), subnet_pool="10.87.0.0/16", subnet_prefix=24
    )
    job, ev = await store.create_job(job_spec())
    await store.apply_plan(Plan(eval_id=ev.id, job_id=job.id), epoch=5)
    assert await store.current_epoch() == 5
    index = await store.node_alloc_index(node.id)
    stale = Plan(eval_id=ev.id, job_id=job.id, placements=[placement(job.id, node.id)])
    with pytest.raises(StaleEpoch) as info:
        await store.apply_plan(stale, epoch=4)
    assert info.value.current_epoch == 5
    assert await store.job_allocations(job.id) == []
    assert await store.node_alloc_index(node.id) == index  # no agent woken for nothing
    with pytest.raises(StaleEpoch):  # a plan touching no node is fenced just the same
        await store.apply_plan(Plan(eval_id=ev.id, job_id=job.id), epoch=4)
    await store.apply_plan(Plan(eval_id=ev.id, job_id=job.id, placements=stale.placements), 5)
    assert len(await store.job_allocations(job.id)) == 1
    assert await store.node_alloc_index(node.id) == index + 1


async def test_a_device_is_never_assigned_twice(store: Store) -> None:
    gpu = Device(id="0000:65:00.0", vendor="nvidia", model="H100", memory_mb=81920)
    node, _ = await store.register_node(
        registration("gpu1", memory=65536, devices=[gpu]),
        subnet_pool="10.87.0.0/16",
        subnet_prefix=24,
    )
    job, ev = await store.create_job(job_spec())
    plans = [
        Plan(
            eval_id=ev.id,
            job_id=job.id,
            placements=[placement(job.id, node.id, i, device_ids=[gpu.id])],
        )
        for i in range(4)
    ]
    results = await asyncio.gather(*(store.apply_plan(p, epoch=1) for p in plans))
    assert sum(1 for r in results if r.committed) == 1
    # Once the holder ends, the device is free again.
    holder = next(a for a in await store.job_allocations(job.id))
    await store.update_allocation_statuses(
        node.id, [AllocStatusReport(alloc_id=holder.id, client_status=ClientStatus.FAILED)]
    )
    again = Plan(
        eval_id=ev.id,
        job_id=job.id,
        placements=[placement(job.id, node.id, 9, device_ids=[gpu.id])],
    )
    assert (await store.apply_plan(again, epoch=1)).committed


async def test_ports_and_unknown_devices_are_checked(store: Store) -> None:
    node, _ = await store.register_node(
        registration("n1", memory=8192), subnet_pool="10.87.0.0/16", subnet_prefix=24
    )
    job, ev = await store.create_job(job_spec())
    a = placement(job.id, node.id, 0, ports={"http": 8080})
    assert (await store.apply_plan(Plan(eval_id=ev.id, job_id=job.id, placements=[a]), 1)).committed
    b = placement(job.id, node.id, 1, ports={"http": 8080})
    r = await store.apply_plan(Plan(eval_id=ev.id, job_id=job.id, placements=[b]), 1)
    assert r.rejected_nodes == {node.id: "port 8080 is taken"}
    c = placement(job.id, node.id, 2, device_ids=["0000:99:00.0"])
    r = await store.apply_plan(Plan(eval_id=ev.id, job_id=job.id, placements=[c]), 1)
    assert r.rejected_nodes == {node.id: "device 0000:99:00.0 is unavailable"}


async def test_stops_mark_desired_stop_and_wake_the_node(store: Store) -> None:
    node, job, ev, a = await one_placed(store)
    before = await store.node_alloc_index(node.id)
    stop = Plan(eval_id=ev.id, job_id=job.id, stops=[AllocStop(alloc_id=a.id, description="x")])
    result = await store.apply_plan(stop, 1)
    assert result.stopped == [a.id]
    got = await store.get_allocation(a.id)
    assert got.desired_status == "stop" and got.desired_description == "x"
    assert await store.node_alloc_index(node.id) > before
    desired = await store.node_desired(node.id)
    assert [x.allocation.id for x in desired.allocations] == [a.id]  # still live until it ends


async def test_bulk_registration_gives_each_node_its_own_subnet(store: Store) -> None:
    regs = [registration(f"bulk-{i}") for i in range(50)]
    first, _ = await store.register_node(
        registration("single"), subnet_pool="10.87.0.0/16", subnet_prefix=24
    )
    ids = await store.register_nodes(regs, subnet_pool="10.87.0.0/16", subnet_prefix=24)
    nodes = {n.id: n for n in await store.list_nodes()}
    assert set(ids) <= set(nodes) and len(nodes) == 51
    subnets = [n.subnet for n in nodes.values()]
    assert len(set(subnets)) == 51 and first.subnet == "10.87.0.0/24"
    assert nodes[ids[0]].drivers == ["qemu", "fake"]


async def test_each_allocation_gets_its_own_ip_and_gives_it_back(store: Store) -> None:
    node, _ = await store.register_node(
        registration("n1", cpu=64000, memory=65536), subnet_pool="10.87.0.0/16", subnet_prefix=29
    )
    assert node.subnet == "10.87.0.0/29"  # hosts .1-.6; .1 is the node's bridge
    job, ev = await store.create_job(job_spec())
    first = [placement(job.id, node.id, i) for i in range(3)]
    assert (
        await store.apply_plan(Plan(eval_id=ev.id, job_id=job.id, placements=first), 1)
    ).committed
    ips = [(await store.get_allocation(a.id)).ip for a in first]
    assert ips == ["10.87.0.2", "10.87.0.3", "10.87.0.4"]
    too_many = [placement(job.id, node.id, i) for i in range(3, 6)]
    r = await store.apply_plan(Plan(eval_id=ev.id, job_id=job.id, placements=too_many), 1)
    assert r.rejected_nodes == {node.id: "no free IP address in the node's subnet"}
    await store.update_allocation_statuses(
        node.id, [AllocStatusReport(alloc_id=first[1].id, client_status=ClientStatus.COMPLETE)]
    )
    again = placement(job.id, node.id, 9)
    assert (
        await store.apply_plan(Plan(eval_id=ev.id, job_id=job.id, placements=[again]), 1)
    ).committed
    assert (await store.get_allocation(again.id)).ip == "10.87.0.3"  # the freed address


async def test_a_batch_of_plans_commits_together_and_each_gets_its_result(store: Store) -> None:
    small, _ = await store.register_node(
        registration("small", memory=1024), subnet_pool="10.87.0.0/16", subnet_prefix=24
    )
    big, _ = await store.register_node(
        registration("big", memory=8192), subnet_pool="10.87.0.0/16", subnet_prefix=24
    )
    job1, ev1 = await store.create_job(job_spec("one"))
    job2, ev2 = await store.create_job(job_spec("two"))
    # Each plan fits alone, but together they overfill `small`: its node is refused for both.
    p1 = Plan(
        eval_id=ev1.id,
        job_id=job1.id,
        placements=[placement(job1.id, small.id, 0), placement(job1.id, big.id, 1)],
    )
    p2 = Plan(eval_id=ev2.id, job_id=job2.id,
              placements=[placement(job2.id, small.id, 0, ports={"http": 80})])  # fmt: skip
    r1, r2 = await store.apply_plans([p1, p2], epoch=1)
    assert r1.committed == [p1.placements[1].id] and r2.committed == []
    assert r1.rejected_nodes == r2.rejected_nodes == {small.id: "not enough memory"}
    snap = await store.snapshot()
    assert snap.usage_of(big.id).used.memory_mb == 1024
    assert snap.usage_of(small.id).alloc_count == 0 and not snap.usage_of(small.id).ports
    # The committed one got its IP claim in the same statement.
    assert (await store.get_allocation(p1.placements[1].id)).ip is not None


async def test_an_agents_desired_allocations_leave_out_the_event_history(store: Store) -> None:
    node, job, _, a = await one_placed(store)
    event = {"time": "2026-01-01T00:00:00Z", "type": "running", "message": "up"}
    report = AllocStatusReport.model_validate(
        {"alloc_id": a.id, "client_status": "running", "events": [event]}
    )
    await store.update_allocation_statuses(node.id, [report])
    stored = await store.get_allocation(a.id)
    assert [e.type for e in stored.events] == ["placed", "running"]  # people still see it
    [desired] = (await store.node_desired(node.id)).allocations
    assert desired.allocation.events == []
    # Everything else is the stored allocation, field for field.
    assert desired.allocation == stored.model_copy(update={"events": []})
    assert desired.job_name == job.name and desired.task == job.task


async def test_nothing_is_placed_for_a_job_stopped_before_or_while_its_plan_commits(
    store: Store, pg_dsn: str
) -> None:
    node, _ = await store.register_node(
        registration("n1"), subnet_pool="10.87.0.0/16", subnet_prefix=24
    )
    # Stopped before the plan commits (it was planned before the stop).
    job, ev = await store.create_job(job_spec("before"))
    await store.stop_job(job.id)
    a = placement(job.id, node.id)
    result = await store.apply_plan(Plan(eval_id=ev.id, job_id=job.id, placements=[a]), 1)
    assert result.withdrawn == [a.id] and not result.committed and result.fully_committed
    assert await store.job_allocations(job.id) == []
    # Stopped while it commits: the stop holds the job's row, the plan waits and sees it.
    job2, ev2 = await store.create_job(job_spec("during"))
    other, ev3 = await store.create_job(job_spec("other"))
    conn = await asyncpg.connect(pg_dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        assert await conn.fetchrow(q("job_stop"), job2.id) is not None
        plans = [
            Plan(eval_id=ev2.id, job_id=job2.id, placements=[placement(job2.id, node.id)]),
            Plan(eval_id=ev3.id, job_id=other.id, placements=[placement(other.id, node.id)]),
        ]
        applying = asyncio.create_task(store.apply_plans(plans, 1))
        await asyncio.sleep(0.3)
        assert not applying.done()  # waiting for the stop
        await tx.commit()
        during, unrelated = await applying
    finally:
        await conn.close()
    assert during.withdrawn == [plans[0].placements[0].id] and not during.committed
    assert unrelated.committed == [plans[1].placements[0].id] and not unrelated.withdrawn
    assert await store.job_allocations(job2.id) == []
    assert len(await store.job_allocations(other.id)) == 1
