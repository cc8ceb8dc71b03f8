"""Leader election and the leader-only loops (evaluator, reaper, drainer, garbage collector).

Every coordinator runs `LeaderLoop.run`. The one holding the Redis lease runs the evaluator,
the reaper, the drainer and the collector with the lease's epoch; the others only serve the
API. Losing the lease (or Redis) cancels the leader tasks; a stale leader that still tries to
commit is refused by Postgres, which records the highest epoch it has seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from mxvm.coordinator.collector import Collector
from mxvm.coordinator.drainer import Drainer
from mxvm.coordinator.evaluator import Evaluator
from mxvm.coordinator.reaper import Reaper
from mxvm.coordinator.service import Coordinator
from mxvm.errors import BackendUnavailable, MxvmError, StaleEpoch
from mxvm.leases import Leadership

log = logging.getLogger(__name__)

# How long an evaluation round waits for a submit statement in flight (see
# SubmitBatcher.settled): about one statement's time, so a burst takes one round, not two.
SUBMITS_SETTLE_S = 0.02


class LostLeadership(Exception):
    pass


class LeaderLoop:
    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self.settings = coord.settings

    async def run(self, stop: asyncio.Event) -> None:
        if not self.settings.leader:
            log.info("leader.not_standing (API-only coordinator)")
            await stop.wait()
            return
        while not stop.is_set():
            lease = await self._try_acquire()
            if lease is not None:
                await self._lead(lease, stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.leader_ttl_s / 3)

    async def _try_acquire(self) -> Leadership | None:
        try:
            min_epoch = await self.coord.store.current_epoch()
            return await self.coord.leases.try_acquire_leadership(
                self.settings.coordinator_id, self.settings.leader_ttl_s, min_epoch=min_epoch
            )
        except BackendUnavailable as exc:
            log.warning("leader.acquire_failed %s", exc.detail)
            return None

    async def _lead(self, lease: Leadership, stop: asyncio.Event) -> None:
        log.info("leader.elected epoch=%d", lease.epoch, extra={"epoch": lease.epoch})
        try:
            await self.coord.store.claim_epoch(lease.epoch)
            self.coord.leader_epoch = lease.epoch
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._renew(lease, stop), name="leader-renew")
                tg.create_task(self._evaluate(lease.epoch, stop), name="evaluator")
                tg.create_task(self._reap(stop), name="reaper")
                tg.create_task(self._drain(stop), name="drainer")
                tg.create_task(self._collect(stop), name="gc")
        except* (LostLeadership, StaleEpoch, BackendUnavailable):
            if stop.is_set():
                log.info("leader.stepped_down epoch=%d", lease.epoch, extra={"epoch": lease.epoch})
            else:
                log.warning("leader.lost epoch=%d", lease.epoch, extra={"epoch": lease.epoch})
        except* Exception:
            # A bug in a leader loop must not take the API down: step down, retry later.
            log.exception("leader.crashed epoch=%d", lease.epoch, extra={"epoch": lease.epoch})
        finally:
            self.coord.leader_epoch = None
            with contextlib.suppress(MxvmError):
                await self.coord.leases.release_leadership(lease)

    async def _renew(self, lease: Leadership, stop: asyncio.Event) -> None:
        interval = self.settings.leader_ttl_s / 3
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                break
            try:
                ok = await self.coord.leases.renew_leadership(lease, self.settings.leader_ttl_s)
            except BackendUnavailable:
                ok = False
            if not ok:
                raise LostLeadership()
        raise LostLeadership()  # stopping: leave the TaskGroup

    async def _evaluate(self, epoch: int, stop: asyncio.Event) -> None:
        evaluator = Evaluator(self.coord.planner, epoch, wake=self.coord.watch.wake_evaluator)
        wake = self.coord.watch.eval_wakeup
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    await self.coord.submits.settled(SUBMITS_SETTLE_S)
                    if await evaluator.run_once():
                        continue  # there may be more ready
                except BackendUnavailable as exc:
                    log.warning("evaluator.backend_unavailable %s", exc.detail)
                # asyncio.timeout, not wait_for: the wake-up then resumes this task directly,
                # ahead of the requests whose jobs were just stored (wait_for's extra task
                # would queue it behind them).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.eval_poll_interval_s):
                        await wake.wait()
        finally:
            # Also when leadership is lost: these plans were committed under our epoch.
            await evaluator.outcomes_written()

    async def _reap(self, stop: asyncio.Event) -> None:
        reaper = Reaper(self.coord.store, self.coord.leases, self.settings.heartbeat_ttl_s)
        await self._repeat(stop, "reaper", reaper.run_once, self.settings.heartbeat_ttl_s / 3)

    async def _drain(self, stop: asyncio.Event) -> None:
        drainer = Drainer(self.coord.store, self.coord.watch)
        interval_s, wake = self.settings.drain_interval_s, self.coord.watch.drain_wakeup
        await self._repeat(stop, "drainer", drainer.run_once, interval_s, wake)

    async def _collect(self, stop: asyncio.Event) -> None:
        collector = Collector(self.coord.store, self.settings)
        await self._repeat(stop, "gc", collector.run_once, self.settings.gc_interval_s)

    async def _repeat(
        self,
        stop: asyncio.Event,
        name: str,
        step: Callable[[], Awaitable[object]],
        interval_s: float,
        wake: asyncio.Event | None = None,
    ) -> None:
        """`step` every `interval_s`, or sooner when `wake` is set, while we lead (losing the
        lease or stopping cancels this); a truthy result means evaluations to run."""
        wake = wake or asyncio.Event()
        while not stop.is_set():
            wake.clear()
            try:
                if await step():
                    self.coord.watch.wake_evaluator()
            except BackendUnavailable as exc:
                log.warning("%s.backend_unavailable %s", name, exc.detail)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await wake.wait()
