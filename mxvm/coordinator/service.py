"""The coordinator's operations, as the API calls them.

Every write that could let the scheduler do something new creates an evaluation (job
submitted or stopped, node joined or came back, allocation ended) or unblocks the blocked
ones (capacity changed). Scheduling itself happens only in the leader's evaluator.
"""

from __future__ import annotations

import logging
from typing import Any

from mxvm.config import CoordinatorSettings
from mxvm.coordinator.agent_calls import AgentCalls
from mxvm.coordinator.nudge import Coalesced
from mxvm.coordinator.reaper import declare_lost
from mxvm.coordinator.submits import SubmitBatcher
from mxvm.coordinator.watch import NodeWatch
from mxvm.errors import BackendUnavailable, Conflict
from mxvm.leases import Leases
from mxvm.models import (
    Allocation,
    AllocReportResult,
    AllocStatusReport,
    AllocStatusUpdate,
    ClientStatus,
    Device,
    DrainResult,
    DrainUpdate,
    Eligibility,
    EligibilityUpdate,
    EvalTrigger,
    Evaluation,
    Job,
    JobSpec,
    Node,
    NodeAllocations,
    NodeChanges,
    NodeRegistration,
    Registered,
)
from mxvm.store import Store
from mxvm.store.allocations import ReportsApplied
from mxvm.store.evaluations import NewEvaluation

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(
        self,
        settings: CoordinatorSettings,
        store: Store,
        leases: Leases,
        watch: NodeWatch,
        *,
        planner: Store | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.planner = planner or store  # the evaluator's store (its own small pool)
        self.leases = leases
        self.watch = watch
        self.leader_epoch: int | None = None  # set by the leader loop while we lead
        self.agents = AgentCalls(store)
        self.eval_nudge = Coalesced(store.notify_evaluators, "evaluator")
        self.submits = SubmitBatcher(store, on_stored=self._wake_evaluator)

    # --- jobs -----------------------------------------------------------------------------
    async def submit_job(self, spec: JobSpec) -> tuple[Job, Evaluation]:
        """Store the job and queue its evaluation. Refused (422) when its memory is below
        the minimum every node that has its image reports (`image.<name>.min_memory_mb`)."""
        job, ev = await self.submits.submit(spec)  # wakes the evaluator (_wake_evaluator)
        log.info("job.submitted %s", job.id, extra={"job_id": job.id, "eval_id": ev.id})
        return job, ev

    def _wake_evaluator(self) -> None:
        self.watch.wake_evaluator()
        if self.leader_epoch is None:  # the evaluator runs in another coordinator, if any
            self.eval_nudge.trigger()

    async def stop_job(self, job_id: str) -> tuple[Job, Evaluation | None]:
        job, ev = await self.store.stop_job(job_id)
        log.info("job.stopped %s", job_id, extra={"job_id": job_id})
        self.watch.wake_evaluator()
        return job, ev

    # --- nodes ----------------------------------------------------------------------------
    async def register_node(self, reg: NodeRegistration) -> Registered:
        """Register or refresh a node by name. A name claimed by another agent's key is
        refused while that node is live (two hosts under one name would both run its
        allocations). Once it is not, the new agent gets the name (a re-imaged host) as a new
        node: the old one is declared lost (its VMs may still run on a host nobody hears
        from: they are replaced, as if the reaper had found it gone) and renamed, so that
        its agent, should it come back, runs as a node of its own, not as this one."""
        claim = await self.store.node_claim(reg.name)
        expect_key = None if claim is None else claim.node_key
        if claim is not None and claim.node_key not in (None, reg.node_key):
            if await self.leases.live_nodes([claim.node_id]):
                raise Conflict(
                    f"node name {reg.name!r} belongs to live node {claim.node_id} "
                    f"(address {claim.address or '?'}), registered by another agent: give this "
                    "host a name of its own (MXVM_NODE_NAME), or stop the other agent"
                )
            await declare_lost(self.store, [claim.node_id])
            retired = await self.store.retire_node_name(claim)
            log.warning(
                "node.name_taken_over %s by a new agent; node %s is now %s",
                reg.name,
                claim.node_id,
                retired,
                extra={"node_id": claim.node_id},
            )
            expect_key = None  # the name is free now: a new node, unless one raced us to it
        node, _created = await self.store.register_node(
            reg,
            subnet_pool=self.settings.node_subnet_pool,
            subnet_prefix=self.settings.node_subnet_prefix,
            expect_key=expect_key,
        )
        await self.leases.heartbeat(node.id, self.settings.heartbeat_ttl_s)
        log.info("node.registered %s %s", node.id, node.name, extra={"node_id": node.id})
        await self._capacity_changed(node_id=node.id)
        return Registered(node=node, heartbeat_ttl_s=self.settings.heartbeat_ttl_s)

    async def heartbeat(self, node_id: str) -> None:
        """Renew the node's Redis lease (what node-loss is judged by; 503 when Redis is down),
        then its coarse copy in Postgres. Without Postgres the heartbeat still counts: the
        lease is renewed, so the node cannot be declared lost, and an agent whose jobs stop
        on disconnect must not stop them for it. The copy (and a node coming back from down)
        is written by the next heartbeat that finds Postgres."""
        await self.leases.heartbeat(node_id, self.settings.heartbeat_ttl_s)
        try:
            came_back = await self.store.node_heartbeat(
                node_id, refresh_after_s=self.settings.heartbeat_ttl_s / 2
            )
        except BackendUnavailable as exc:
            log.warning("node.heartbeat_unrecorded %s %s", node_id, exc.detail)
            return
        if came_back:
            log.info("node.ready %s", node_id, extra={"node_id": node_id})
            await self._capacity_changed(node_id=node_id)

    async def set_eligibility(self, node_id: str, update: EligibilityUpdate) -> Node:
        node = await self.store.set_node_eligibility(node_id, update.eligibility)
        if update.eligibility == Eligibility.ELIGIBLE:
            await self._capacity_changed(node_id=node_id)
        return node

    async def drain_node(self, node_id: str, update: DrainUpdate) -> DrainResult:
        """Start draining a node (ineligible; what is due stopped now, one evaluation per
        affected job to place it elsewhere, the rest stepped along by the leader's drainer),
        or cancel the drain (it stays ineligible)."""
        drained = await self.store.drain_node(
            node_id,
            enable=update.enable,
            ignore_system_jobs=update.ignore_system_jobs,
            deadline_s=update.deadline_s,
        )
        log.info(
            "node.drain %s enable=%s stopped=%d",
            node_id,
            update.enable,
            len(drained.stopped),
            extra={"node_id": node_id, "stopped": [a for a, _ in drained.stopped]},
        )
        if drained.evaluations:
            self.watch.wake_evaluator()
        if drained.node.drain:
            self.watch.draining = True
            self.watch.wake_drainer()
        return DrainResult(
            node=drained.node,
            stopped=[alloc_id for alloc_id, _ in drained.stopped],
            evaluations=drained.evaluations,
        )

    async def report_devices(self, node_id: str, devices: list[Device]) -> Node:
        """An agent's fresh view of its devices (health from NVML and sysfs).

        A device that turned unhealthy (or vanished) takes the live allocation holding it
        down: the coordinator marks that allocation FAILED with the reason itself, as it
        marks allocations LOST when a node dies, instead of asking the agent (desired STOP)
        and waiting for its report. FAILED, not stopped, so the job's reschedule policy
        governs the replacement (attempts counted, previous_allocation linked; a STOP would
        read as "stopped on purpose"), and the claim is released at once, so the replacement
        can be planned on a healthy GPU right away. The agent sees the allocation leave its
        desired set and tears the VM down (its own final report is then refused as stale).
        """
        node, failed = await self.store.set_node_devices(node_id, devices)
        for alloc_id, job_id in failed:
            log.warning(
                "alloc.device_failed %s on node %s",
                alloc_id,
                node_id,
                extra={"alloc_id": alloc_id, "job_id": job_id, "node_id": node_id},
            )
        await self.store.create_evaluations(
            [
                NewEvaluation(job_id, EvalTrigger.ALLOC_FAILURE, node_id)
                for job_id in sorted({job_id for _, job_id in failed})
            ]
        )
        await self._capacity_changed()  # a device may be healthy again: retry blocked evals
        return node

    async def node_allocations(self, node_id: str, index: int, wait_s: float) -> NodeAllocations:
        """Long-poll: answer when the node's allocations change past `index`, or at `wait_s`."""
        return await self.watch.wait_for_node(
            self.store, node_id, index, wait_s, lambda: self.store.node_desired(node_id)
        )

    async def node_changes(self, node_id: str, index: int, wait_s: float) -> NodeChanges:
        """Long-poll as node_allocations, answering with what changed after `index`."""
        return await self.watch.wait_for_node(
            self.store, node_id, index, wait_s, lambda: self.store.node_changes(node_id, index)
        )

    async def report_allocation(
        self, node_id: str, alloc_id: str, update: AllocStatusUpdate
    ) -> Allocation:
        report = AllocStatusReport(alloc_id=alloc_id, **update.model_dump())
        applied = await self._apply_reports(node_id, [report])
        if applied.refusals[0] is not None:
            raise applied.refusals[0]
        return await self.store.get_allocation(alloc_id)

    async def report_allocations(
        self, node_id: str, reports: list[AllocStatusReport]
    ) -> list[AllocReportResult]:
        """An agent's queued reports, applied in order; each gets its own result."""
        applied = await self._apply_reports(node_id, reports)
        return [
            AllocReportResult(alloc_id=r.alloc_id, status=200)
            if why is None
            else AllocReportResult(alloc_id=r.alloc_id, status=why.status, detail=why.detail)
            for r, why in zip(reports, applied.refusals, strict=True)
        ]

    async def _apply_reports(
        self, node_id: str, reports: list[AllocStatusReport]
    ) -> ReportsApplied:
        applied = await self.store.update_allocation_statuses(node_id, reports)
        if self.watch.draining:  # a replacement may now run, letting a drain go on
            self.watch.wake_drainer()
        if applied.ended:
            # An allocation ended: its job may need a replacement (or is complete), and what it
            # held is free for the blocked evaluations.
            await self.store.create_evaluations(
                [
                    NewEvaluation(
                        a.job_id,
                        EvalTrigger.ALLOC_FAILURE
                        if a.client_status == ClientStatus.FAILED
                        else EvalTrigger.CAPACITY_CHANGE,
                        node_id,
                    )
                    for a in applied.ended
                ]
            )
            for done in await self.store.complete_drains([node_id]):
                log.info("node.drain_complete %s", done, extra={"node_id": done})
            await self._capacity_changed()
        return applied

    async def _capacity_changed(self, node_id: str | None = None) -> None:
        """A node joined or came back, or resources were freed: retry what was blocked."""
        await self.store.unblock_evaluations()
        if node_id is not None:
            await self.store.create_evaluations(
                [
                    NewEvaluation(job_id, EvalTrigger.NODE_UPDATE, node_id)
                    for job_id in await self.store.live_system_job_ids()
                ]
            )
        self.watch.wake_evaluator()

    # --- cluster --------------------------------------------------------------------------
    async def readiness(self) -> dict[str, str]:
        """'ok' or the error per backend; the API answers 503 unless both are ok."""
        out: dict[str, str] = {}
        for name, probe in (("postgres", self.store.ping), ("redis", self.leases.ping)):
            try:
                await probe()
                out[name] = "ok"
            except BackendUnavailable as exc:
                out[name] = exc.detail
        return out

    async def cluster_status(self) -> dict[str, Any]:
        counts = await self.store.status_counts()
        nodes, jobs = counts["nodes"], counts["jobs"]
        return {
            "coordinator_id": self.settings.coordinator_id,
            "leader": await self.leases.current_leader(),
            "is_leader": self.leader_epoch is not None,
            "epoch": await self.store.current_epoch(),
            "nodes": {"total": sum(nodes.values()), **nodes},
            "jobs": {"total": sum(jobs.values()), **jobs},
        }
