"""Response shapes that exist only at the API (everything else is a model from mxvm.models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mxvm.models import Evaluation, Job


class JobSubmitted(BaseModel):
    job: Job
    evaluation: Evaluation


class JobStopped(BaseModel):
    job: Job
    evaluation: Evaluation | None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = Field(default=None, description="bad fields (422)")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


class ClusterStatus(BaseModel):
    coordinator_id: str
    leader: str | None
    is_leader: bool
    epoch: int
    nodes: dict[str, Any]
    jobs: dict[str, Any]
