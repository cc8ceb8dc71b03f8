"""Everything one evaluation needs to place allocations, and the building of an Allocation."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from mxvm.models.allocation import Allocation, ClientStatus, DesiredStatus
from mxvm.models.job import Job
from mxvm.models.resources import Resources
from mxvm.models.snapshot import ClusterSnapshot
from mxvm.scheduler import devices, ports
from mxvm.scheduler.config import SchedulerConfig
from mxvm.scheduler.filters import (
    Filter,
    availability_filters,
    dynamic_filters,
    match_filters,
)
from mxvm.scheduler.reconcile import Placement
from mxvm.scheduler.scorers import Scorer, scorer
from mxvm.scheduler.state import NodeState, States


def algorithm(job: Job, config: SchedulerConfig) -> str:
    """The job's own choice when it made one, else the cluster default."""
    return job.scheduling if "scheduling" in job.model_fields_set else config.algorithm_default


@dataclass(slots=True)
class Context:
    job: Job
    eval_id: str
    new_id: Callable[[], str]
    config: SchedulerConfig
    states: States
    need: Resources
    available: list[Filter]
    matches: list[Filter]
    dynamic: list[Filter]
    chain: list[Filter]  # all three, in order: what probe() runs
    score: Scorer
    rng: random.Random
    prototype: Allocation

    @classmethod
    def build(
        cls,
        snapshot: ClusterSnapshot,
        job: Job,
        eval_id: str,
        new_id: Callable[[], str],
        config: SchedulerConfig,
    ) -> Context:
        need = job.task.resources
        return cls(
            job=job,
            eval_id=eval_id,
            new_id=new_id,
            config=config,
            states=States(snapshot.nodes, snapshot.usage),
            need=need,
            available=(available := availability_filters()),
            matches=(matches := match_filters(job)),
            dynamic=(dynamic := dynamic_filters(job, config.port_range)),
            chain=available + matches + dynamic,
            score=scorer(algorithm(job, config), need),
            # str seeds are hashed with SHA-512: the same eval id gives the same walk anywhere.
            rng=random.Random(eval_id),
            prototype=prototype(job, eval_id, need),
        )

    def probe(self, pos: int) -> tuple[str | None, float]:
        """Why the node at `pos` cannot take one more allocation, or its score."""
        state = self.states[pos]
        for f in self.chain:  # first_rejection(), inlined: this is the hot loop
            reason = f.check(state)
            if reason is not None:
                return reason, 0.0
        return None, self.score(state)

    def place(self, state: NodeState, placement: Placement) -> Allocation:
        """Build the allocation on a node the dynamic filters accepted, and account for it."""
        job, need = self.job, self.need
        device_ids: list[str] = []
        if job.devices:
            device_ids = devices.assign(job.devices, state.node.devices, state.device_in_use)[0]
        port_map: dict[str, int] = {}
        if job.ports:
            port_map = ports.assign(job.ports, state.port_in_use, self.config.port_range) or {}
        state.add(
            need.cpu_millicores, need.memory_mb, need.disk_mb, device_ids, list(port_map.values())
        )
        # A copy of the evaluation's prototype, not validation: every value here comes from
        # validated parts, and validating 100,000 allocations would dominate the run time.
        # The mutable fields (device_ids, ports, events) are always fresh objects.
        return self.prototype.model_copy(
            update={
                "id": self.new_id(),
                "node_id": state.node.id,
                "name": f"{job.name}[{placement.index}]",
                "index": placement.index,
                "device_ids": device_ids,
                "ports": port_map,
                "events": [],
                "previous_allocation": placement.previous.id if placement.previous else None,
                "reschedule_attempts": placement.attempts,
            }
        )


def prototype(job: Job, eval_id: str, need: Resources) -> Allocation:
    """The fields every new allocation of this evaluation shares (all given: defaults are slow)."""
    return Allocation.model_construct(
        id="",
        eval_id=eval_id,
        job_id=job.id,
        job_version=job.version,
        node_id="",
        name="",
        index=0,
        desired_status=DesiredStatus.RUN,
        desired_description="",
        client_status=ClientStatus.PENDING,
        client_description="",
        resources=need,
        device_ids=[],
        ports={},
        ip=None,
        exit_code=None,
        previous_allocation=None,
        reschedule_attempts=0,
        events=[],
        created_at=None,
        modified_at=None,
    )
