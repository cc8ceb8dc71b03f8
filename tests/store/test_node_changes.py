"""An agent's long-poll for changes: the allocations that changed after its index, in full,
and the ids of every live one (allocations.node_index, stamped under the node's lock)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from mxvm.models import AllocStatusReport, AllocStop, NodeChanges, Plan
from mxvm.store import Store
from tests.store.conftest import job_spec, one_placed, placement, registration


def _ids(changes: NodeChanges) -> list[str]:
    return [c.allocation.id for c in changes.changed]


async def test_changes_carry_only_what_changed_after_the_index(store: Store) -> None:
    node, job, ev, a = await one_placed(store)
    everything = await store.node_changes(node.id, 0)
    assert _ids(everything) == [a.id] and everything.live == [a.id]
    i1 = everything.index
    assert i1 == await store.node_alloc_index(node.id)
    quiet = await store.node_changes(node.id, i1)
    assert quiet.changed == [] and quiet.live == [a.id] and quiet.index == i1

    job2, ev2 = await store.create_job(job_spec("second"))
    b = placement(job2.id, node.id)
    await store.apply_plan(Plan(eval_id=ev2.id, job_id=job2.id, placements=[b]), 1)
    after_b = await store.node_changes(node.id, i1)
    assert _ids(after_b) == [b.id] and after_b.live == [a.id, b.id] and after_b.index > i1
    assert after_b.changed[0].job_name == "second" and after_b.changed[0].task == job2.task

    stop = Plan(eval_id=ev.id, job_id=job.id, stops=[AllocStop(alloc_id=a.id, description="x")])
    await store.apply_plan(stop, 1)
    after_stop = await store.node_changes(node.id, after_b.index)
    assert _ids(after_stop) == [a.id] and after_stop.index > after_b.index
    assert after_stop.changed[0].allocation.desired_status == "stop"
    assert after_stop.live == [a.id, b.id]  # live until its agent says it ended

    done = AllocStatusReport.model_validate({"alloc_id": a.id, "client_status": "complete"})
    await store.update_allocation_statuses(node.id, [done])
    gone = await store.node_changes(node.id, after_stop.index)
    assert gone.changed == [] and gone.live == [b.id]  # no longer live: the agent drops it
    # The full answer is what it was: every live allocation.
    assert [x.allocation.id for x in (await store.node_desired(node.id)).allocations] == [b.id]


async def test_an_index_from_another_incarnation_of_the_node_gets_everything(
    store: Store,
) -> None:
    node, _, _, a = await one_placed(store)
    future = await store.node_alloc_index(node.id) + 1000
    changes = await store.node_changes(node.id, future)
    assert _ids(changes) == [a.id] and changes.index < future


async def test_a_drain_stamps_what_it_stops(store: Store) -> None:
    node, _, _, a = await one_placed(store)
    before = await store.node_alloc_index(node.id)
    await store.drain_node(node.id, enable=True, ignore_system_jobs=False, deadline_s=0)
    changes = await store.node_changes(node.id, before)
    assert _ids(changes) == [a.id] and changes.index > before
    assert changes.changed[0].allocation.desired_status == "stop"
    assert (await store.node_changes(node.id, changes.index)).changed == []


@contextlib.asynccontextmanager
async def node_locked(pg_dsn: str, node_id: str) -> AsyncIterator[asyncpg.Connection]:
    """Another session holding the node's row lock, as a plan or drain committing does;
    the lock goes when the block ends."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM nodes WHERE id = $1 FOR UPDATE", node_id)
            yield conn
    finally:
        await conn.close()


async def test_a_report_batch_takes_the_node_lock_before_its_allocations(
    store: Store, pg_dsn: str
) -> None:
    """Plans and drains lock a node, then its allocations; a report batch that ends an
    allocation bumps its node too, so it must take the locks in the same order, or a plan
    stopping that allocation meanwhile deadlocks with it."""
    node, _, _, a = await one_placed(store)
    done = AllocStatusReport.model_validate({"alloc_id": a.id, "client_status": "failed"})
    async with node_locked(pg_dsn, node.id) as plan_like:
        report = asyncio.create_task(store.update_allocation_statuses(node.id, [done]))
        await asyncio.sleep(0.3)  # the batch is under way and waits for the node
        assert not report.done()
        # Had the batch locked the allocation first, this would fail at once.
        await plan_like.execute("SELECT 1 FROM allocations WHERE id = $1 FOR UPDATE NOWAIT", a.id)
    applied = await asyncio.wait_for(report, 10)
    assert [e.id for e in applied.ended] == [a.id]


async def test_reports_that_end_nothing_do_not_wait_for_the_node(store: Store, pg_dsn: str) -> None:
    """A VM starting is reported while plans for its node commit: only a batch that may end
    an allocation (and so bump the node) takes the node's lock."""
    node, _, _, a = await one_placed(store)
    up = AllocStatusReport.model_validate({"alloc_id": a.id, "client_status": "running"})
    async with node_locked(pg_dsn, node.id):
        applied = await asyncio.wait_for(store.update_allocation_statuses(node.id, [up]), 5)
    assert applied.refusals == [None] and applied.ended == []


async def test_the_answer_names_on_disconnect_only_for_jobs_that_ask_to_stop(
    store: Store,
) -> None:
    # Agents from before on_disconnect forbid fields they do not know: while a job keeps
    # the default, its answer must not carry the field. Agents from now on ignore new ones.
    node, _, _, kept = await one_placed(store)
    spec = job_spec("fenced").model_copy(update={"on_disconnect": "stop"})
    job2, ev2 = await store.create_job(spec)
    fenced = placement(job2.id, node.id)
    await store.apply_plan(Plan(eval_id=ev2.id, job_id=job2.id, placements=[fenced]), 1)
    answer = (await store.node_changes(node.id, 0)).model_dump(mode="json")
    by_id = {c["allocation"]["id"]: c for c in answer["changed"]}
    assert "on_disconnect" not in by_id[kept.id]
    assert by_id[fenced.id]["on_disconnect"] == "stop"
    answer["changed"][0]["from_a_newer_coordinator"] = True
    answer["from_a_newer_coordinator"] = True
    parsed = NodeChanges.model_validate(answer)
    assert {c.allocation.id: c.on_disconnect for c in parsed.changed} == {
        kept.id: "keep",
        fenced.id: "stop",
    }


async def test_a_heartbeat_says_came_back_only_when_the_node_was_not_ready(store: Store) -> None:
    """Only a node coming back from down changes capacity; the refresh of the stored
    heartbeat every half TTL does not (it re-queued every blocked evaluation and every
    system job's, per node, each time)."""
    node, _ = await store.register_node(
        registration("hb"), subnet_pool="10.87.0.0/16", subnet_prefix=24
    )
    assert node.status == "ready"  # registering announced the capacity already
    before = (await store.get_node(node.id)).last_heartbeat
    await asyncio.sleep(0.01)
    assert await store.node_heartbeat(node.id, refresh_after_s=0) is False  # refreshed only
    assert (await store.get_node(node.id)).last_heartbeat != before
    await store.mark_nodes_down([node.id])
    assert await store.node_heartbeat(node.id, refresh_after_s=3600) is True
    assert await store.node_heartbeat(node.id, refresh_after_s=3600) is False  # not written
