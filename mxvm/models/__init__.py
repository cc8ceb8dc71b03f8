"""The mxvm vocabulary as pydantic models. No I/O and no clock in this package."""

from mxvm.models.agent import (
    AssignedAllocation,
    ExecRequest,
    ExecResult,
    NodeAllocations,
    Registered,
)
from mxvm.models.allocation import (
    TERMINAL,
    TRANSITIONS,
    Allocation,
    AllocEvent,
    AllocStatusUpdate,
    ClientStatus,
    DesiredStatus,
)
from mxvm.models.evaluation import EvalStatus, EvalTrigger, Evaluation
from mxvm.models.job import (
    MIN_GUEST_MEMORY_MB,
    Constraint,
    DeviceRequest,
    Job,
    JobSpec,
    JobStatus,
    JobType,
    Operator,
    PortRequest,
    ReschedulePolicy,
    RestartPolicy,
    Task,
    VolumeRequest,
)
from mxvm.models.node import (
    Device,
    Eligibility,
    EligibilityUpdate,
    Node,
    NodeRegistration,
    NodeStatus,
)
from mxvm.models.plan import AllocStop, Plan, PlanResult
from mxvm.models.resources import ZERO, Resources
from mxvm.models.snapshot import ClusterSnapshot, NodeUsage

__all__ = [
    "MIN_GUEST_MEMORY_MB",
    "TERMINAL",
    "TRANSITIONS",
    "ZERO",
    "AllocEvent",
    "AllocStatusUpdate",
    "AllocStop",
    "Allocation",
    "AssignedAllocation",
    "ClientStatus",
    "ClusterSnapshot",
    "Constraint",
    "DesiredStatus",
    "Device",
    "DeviceRequest",
    "Eligibility",
    "EligibilityUpdate",
    "EvalStatus",
    "EvalTrigger",
    "Evaluation",
    "ExecRequest",
    "ExecResult",
    "Job",
    "JobSpec",
    "JobStatus",
    "JobType",
    "Node",
    "NodeAllocations",
    "NodeRegistration",
    "NodeStatus",
    "NodeUsage",
    "Operator",
    "Plan",
    "PlanResult",
    "PortRequest",
    "Registered",
    "ReschedulePolicy",
    "Resources",
    "RestartPolicy",
    "Task",
    "VolumeRequest",
]
