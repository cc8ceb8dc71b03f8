"""Evaluation: a reason to re-plan a job, and the outcome of doing so."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class EvalTrigger(StrEnum):
    JOB_REGISTER = "job-register"
    JOB_DEREGISTER = "job-deregister"
    NODE_UPDATE = "node-update"
    ALLOC_FAILURE = "alloc-failure"
    CAPACITY_CHANGE = "capacity-change"


class EvalStatus(StrEnum):
    PENDING = "pending"
    COMPLETE = "complete"
    BLOCKED = "blocked"  # some allocations could not be placed; retried on capacity change
    FAILED = "failed"
    CANCELED = "canceled"


class Evaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    job_id: str
    trigger: EvalTrigger
    status: EvalStatus = EvalStatus.PENDING
    status_description: str = ""
    node_id: str | None = None
    failures: dict[str, int] = Field(
        default_factory=dict, description="why nodes were rejected, e.g. {'memory': 7}"
    )
    queued: int = Field(default=0, ge=0, description="allocations that could not be placed")
    created_at: datetime | None = None
    modified_at: datetime | None = None


class EvalOutcome(BaseModel):
    """What processing an evaluation decided, for the store to record with the batch."""

    model_config = ConfigDict(extra="forbid")

    evaluation: Evaluation
    status: EvalStatus
    description: str = ""
    failures: dict[str, int] = Field(default_factory=dict)
    queued: int = Field(default=0, ge=0)
    follow_up_at: datetime | None = Field(
        default=None, description="when a delayed follow-up evaluation should run (reschedule)"
    )
