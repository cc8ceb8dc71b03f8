"""Submitting jobs: a batch goes in one statement, each spec gets its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mxvm.coordinator.submits import SubmitBatcher
from mxvm.errors import Conflict, InvalidSpec
from mxvm.models import EvalTrigger, JobSpec
from mxvm.store import Store
from tests.store.conftest import registration


def _spec(name: str, memory_mb: int = 256) -> JobSpec:
    task = {"argv": ["x"], "driver": "fake", "memory_mb": memory_mb}
    return JobSpec.model_validate({"name": name, "type": "service", "task": task})


async def test_a_batch_answers_each_spec_in_order(store: Store) -> None:
    reg = registration("n1", attributes={"image.default.min_memory_mb": "192"})
    await store.register_node(reg, subnet_pool="10.99.0.0/16", subnet_prefix=24)
    live, _ = await store.create_job(_spec("taken"))
    out = await store.create_jobs(
        [_spec("a"), _spec("taken"), _spec("small", memory_mb=128), _spec("b"), _spec("a")]
    )
    a, taken, small, b, a_again = out
    assert not isinstance(a, Exception) and not isinstance(b, Exception)
    assert isinstance(taken, Conflict) and "'taken' is already live" in taken.detail
    assert isinstance(small, InvalidSpec) and "minimum of 192 MiB" in small.detail
    assert isinstance(a_again, Conflict)  # the same name twice in one batch: the first wins
    for job, ev in (a, b):
        assert (await store.get_job(job.id)).name == job.name
        stored = await store.get_evaluation(ev.id)
        assert (stored.job_id, stored.trigger) == (job.id, EvalTrigger.JOB_REGISTER)
    names = sorted(j.name for j in await store.list_jobs())
    assert names == ["a", "b", "taken"]  # nothing of the refused specs was stored
    assert {e.job_id for e in await store.ready_evaluations(10)} == {live.id, a[0].id, b[0].id}


class CountingStore:
    """The real store, counting the statements submits go in; the first is held in flight
    until `release` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[int] = []
        self.release = asyncio.Event()

    async def create_jobs(self, specs: list[JobSpec]) -> Any:
        self.batches.append(len(specs))
        if len(self.batches) == 1:
            await self.release.wait()
        return await self.store.create_jobs(specs)


async def test_concurrent_submits_share_statements_and_keep_their_own_answers(
    store: Store,
) -> None:
    counting = CountingStore(store)
    batcher = SubmitBatcher(counting)  # type: ignore[arg-type]
    first = asyncio.create_task(batcher.submit(_spec("j0")))
    while not counting.batches:  # the first submit goes to the store at once, alone
        await asyncio.sleep(0)
    specs = [_spec(f"j{i}") for i in range(1, 30)] + [_spec("j0")]
    rest = asyncio.gather(*(batcher.submit(s) for s in specs), return_exceptions=True)
    await asyncio.sleep(0.05)
    assert counting.batches == [1]  # the others wait for the statement in flight
    counting.release.set()
    results = [await first, *await rest]
    assert counting.batches == [1, 30]  # then go together, in one statement
    assert isinstance(results[-1], Conflict)  # each keeps its own answer
    ok = [r for r in results[:-1] if not isinstance(r, BaseException)]
    assert [job.name for job, _ in ok] == [f"j{i}" for i in range(30)]


async def test_a_failed_statement_fails_each_request_of_its_batch(store: Store) -> None:
    batcher = SubmitBatcher(store)
    await store.close()  # every statement now fails
    results = await asyncio.gather(
        *(batcher.submit(_spec(f"x{i}")) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results)
    with pytest.raises(Exception, match="pool is not open"):
        raise results[0]  # type: ignore[misc]


async def test_a_submit_cancelled_while_queued_stores_nothing(store: Store) -> None:
    counting = CountingStore(store)
    batcher = SubmitBatcher(counting)  # type: ignore[arg-type]
    first = asyncio.create_task(batcher.submit(_spec("first")))
    while not counting.batches:
        await asyncio.sleep(0)
    gone = asyncio.create_task(batcher.submit(_spec("gone")))
    kept = asyncio.create_task(batcher.submit(_spec("kept")))
    await asyncio.sleep(0.05)
    gone.cancel()  # its client went away while the first statement was in flight
    counting.release.set()
    await first
    job, _ = await kept
    assert counting.batches == [1, 1]
    assert sorted(j.name for j in await store.list_jobs()) == ["first", "kept"]
    assert gone.cancelled() and job.name == "kept"


async def test_settled_waits_for_the_statement_in_flight_only(store: Store) -> None:
    counting = CountingStore(store)
    batcher = SubmitBatcher(counting)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await batcher.settled(5)  # nothing in flight: at once
    assert loop.time() - t0 < 1
    first = asyncio.create_task(batcher.submit(_spec("first")))
    while not counting.batches:
        await asyncio.sleep(0)
    t0 = loop.time()
    await batcher.settled(0.2)  # held in flight: gives up after its timeout
    assert 0.15 <= loop.time() - t0 < 2 and not first.done()
    waiting = asyncio.create_task(batcher.settled(5))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    counting.release.set()
    await asyncio.wait_for(waiting, 5)  # ends once the statement has stored its job
    assert [j.name for j in await store.list_jobs()] == ["first"]
    await first


async def test_settled_resumes_its_caller_ahead_of_the_requests_it_answers(store: Store) -> None:
    # The evaluator waits in settled(): it must get the CPU before the statement's requests
    # write their answers, or a burst's scheduling waits for every response to be sent.
    counting = CountingStore(store)
    batcher = SubmitBatcher(counting)  # type: ignore[arg-type]
    order: list[str] = []

    async def request(name: str) -> None:
        await batcher.submit(_spec(name))
        order.append(name)

    async def evaluator() -> None:
        await batcher.settled(5)
        order.append("evaluator")

    requests = [asyncio.create_task(request(f"r{i}")) for i in range(5)]
    while not counting.batches:
        await asyncio.sleep(0)
    waiting = asyncio.create_task(evaluator())
    await asyncio.sleep(0.01)
    counting.release.set()
    await asyncio.gather(waiting, *requests)
    assert order[0] == "evaluator", order
