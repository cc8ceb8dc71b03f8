"""Plan and PlanResult: the scheduler's output and what the applier could commit of it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from mxvm.models.allocation import Allocation


class AllocStop(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alloc_id: str
    description: str


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eval_id: str
    job_id: str
    placements: list[Allocation] = Field(default_factory=list)
    stops: list[AllocStop] = Field(default_factory=list)
    failures: dict[str, int] = Field(default_factory=dict)
    unplaced: int = Field(default=0, ge=0, description="allocations wanted but not placed")
    next_eval_at: datetime | None = Field(
        default=None, description="earliest time a follow-up evaluation should run (delays)"
    )

    @property
    def empty(self) -> bool:
        return not self.placements and not self.stops


class PlanResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    committed: list[str] = Field(default_factory=list, description="placed allocation ids")
    stopped: list[str] = Field(default_factory=list)
    rejected_nodes: dict[str, str] = Field(
        default_factory=dict, description="node id -> why its placements went stale"
    )
    withdrawn: list[str] = Field(
        default_factory=list, description="placements not made: their job was stopped meanwhile"
    )

    @property
    def fully_committed(self) -> bool:
        return not self.rejected_nodes
