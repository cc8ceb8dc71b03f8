"""The route table: one row per endpoint, used for routing, auth scopes and OpenAPI."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from mxvm.api import agent, allocations, cluster, jobs, logs, nodes
from mxvm.api.auth import Scope
from mxvm.api.errors import Handler
from mxvm.api.schemas import ClusterStatus, Health, JobStopped, JobSubmitted, Readiness
from mxvm.models import (
    Allocation,
    AllocReportResults,
    AllocStatusBatch,
    AllocStatusUpdate,
    DrainResult,
    DrainUpdate,
    EligibilityUpdate,
    Evaluation,
    ExecRequest,
    ExecResult,
    Job,
    JobSpec,
    Node,
    NodeAllocations,
    NodeChanges,
    NodeRegistration,
    Registered,
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    name: str
    summary: str
    scope: Scope = Scope.ADMIN
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    response_is_list: bool = False
    status: int = 200
    query: dict[str, str] = field(default_factory=dict)  # name -> description


V1 = "/api/v1"
ROUTES: list[Route] = [
    Route("GET", "/health", cluster.health, "health", "Liveness", Scope.PUBLIC, response=Health),
    Route("GET", "/ready", cluster.ready, "ready", "Postgres and Redis reachable", Scope.ANY,
          response=Readiness),
    Route("GET", f"{V1}/cluster/status", cluster.cluster_status, "cluster_status",
          "Leader, epoch, node and job counts", response=ClusterStatus),
    Route("GET", f"{V1}/jobs", jobs.list_jobs, "list_jobs", "List jobs", response=Job,
          response_is_list=True),
    Route("POST", f"{V1}/jobs", jobs.submit_job, "submit_job", "Submit a job", request=JobSpec,
          response=JobSubmitted, status=201),
    Route("GET", f"{V1}/jobs/{{id}}", jobs.get_job, "get_job", "Get a job", response=Job),
    Route("POST", f"{V1}/jobs/{{id}}/stop", jobs.stop_job, "stop_job", "Stop a job",
          response=JobStopped, status=202),
    Route("GET", f"{V1}/jobs/{{id}}/allocations", jobs.job_allocations, "job_allocations",
          "A job's allocations", response=Allocation, response_is_list=True),
    Route("GET", f"{V1}/allocations", allocations.list_allocations, "list_allocations",
          "List allocations", response=Allocation, response_is_list=True,
          query={"job_id": "only this job's", "node_id": "only this node's", "limit": "max rows"}),
    Route("GET", f"{V1}/allocations/{{id}}", allocations.get_allocation, "get_allocation",
          "Get an allocation", response=Allocation),
    Route("GET", f"{V1}/allocations/{{id}}/logs", logs.logs, "allocation_logs",
          "The allocation's output (application/octet-stream), followed while it runs",
          query={"follow": "true: keep streaming until the allocation ends",
                 "offset": "start at this byte"}),
    Route("POST", f"{V1}/allocations/{{id}}/exec", logs.exec_, "allocation_exec",
          "Run a command in the allocation's running guest", request=ExecRequest,
          response=ExecResult),
    Route("GET", f"{V1}/evaluations/{{id}}", allocations.get_evaluation, "get_evaluation",
          "Get an evaluation (with its placement failure explanation)", response=Evaluation),
    Route("GET", f"{V1}/nodes", nodes.list_nodes, "list_nodes", "List nodes", response=Node,
          response_is_list=True),
    Route("GET", f"{V1}/nodes/{{id}}", nodes.get_node, "get_node", "Get a node", response=Node),
    Route("POST", f"{V1}/nodes/{{id}}/eligibility", nodes.set_eligibility, "set_eligibility",
          "Mark a node eligible or ineligible for new placements", request=EligibilityUpdate,
          response=Node),
    Route("POST", f"{V1}/nodes/{{id}}/drain", nodes.drain, "drain_node",
          "Drain a node: mark it ineligible, stop its allocations (system jobs' too unless "
          "ignore_system_jobs) and queue evaluations that place them on other nodes; the drain "
          "flag clears once nothing it stopped is live. enable=false cancels the drain; the "
          "node stays ineligible until it is made eligible again", request=DrainUpdate,
          response=DrainResult),
    Route("POST", f"{V1}/agent/register", agent.register, "agent_register",
          "Register a node (agent)", Scope.AGENT, request=NodeRegistration, response=Registered),
    Route("POST", f"{V1}/agent/nodes/{{id}}/heartbeat", agent.heartbeat, "agent_heartbeat",
          "Heartbeat (agent)", Scope.AGENT),
    Route("GET", f"{V1}/agent/nodes/{{id}}/allocations", agent.desired_allocations,
          "agent_allocations", "Long-poll the node's desired allocations (agent)", Scope.AGENT,
          response=NodeAllocations,
          query={"index": "answer once the node's index is above this",
                 "wait": "seconds to wait at most (default 30)"}),
    Route("GET", f"{V1}/agent/nodes/{{id}}/allocations/changes", agent.allocation_changes,
          "agent_allocation_changes", "Long-poll what changed in the node's allocations after "
          "an index: those allocations in full, and the ids of all live ones (agent)",
          Scope.AGENT, response=NodeChanges,
          query={"index": "answer once the node's index is above this, with the allocations "
                          "that changed after it (all of them from 0)",
                 "wait": "seconds to wait at most (default 30)"}),
    Route("POST", f"{V1}/agent/nodes/{{id}}/allocations/status", agent.report_statuses,
          "agent_report_statuses", "Report several allocations' statuses at once, applied in "
          "order; one result per report (agent)", Scope.AGENT, request=AllocStatusBatch,
          response=AllocReportResults),
    Route("POST", f"{V1}/agent/nodes/{{id}}/allocations/{{alloc_id}}/status",
          agent.report_status, "agent_report_status", "Report an allocation's status (agent)",
          Scope.AGENT, request=AllocStatusUpdate, response=Allocation),
    Route("POST", f"{V1}/agent/nodes/{{id}}/devices", agent.report_devices, "agent_devices",
          "Report the node's devices and their health; fails allocations on unhealthy ones "
          "(agent)", Scope.AGENT, request=agent.DeviceList, response=Node),
]  # fmt: skip
