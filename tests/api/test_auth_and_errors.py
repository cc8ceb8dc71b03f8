"""Auth on every endpoint but /health, and problem+json for every error."""

from __future__ import annotations

from tests.harness import AGENT, Api

JOB = {"name": "hello", "task": {"driver": "fake", "argv": ["echo", "hi"]}}


async def test_health_needs_no_token_but_everything_else_does(api: Api) -> None:
    status, body, _ = await api.call("GET", "/health", token=None)
    assert (status, body) == (200, {"status": "ok"})
    for path in ("/ready", "/api/v1/jobs", "/api/v1/nodes", "/api/v1/openapi.json"):
        status, body, headers = await api.call("GET", path, token=None)
        assert status == 401, path
        assert headers["Content-Type"].startswith("application/problem+json")
        assert body["status"] == 401 and "bearer" in body["detail"]
    status, _, _ = await api.call("GET", "/api/v1/jobs", token="wrong")
    assert status == 401


async def test_agent_token_cannot_call_admin_endpoints(api: Api) -> None:
    for method, path in (
        ("GET", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/cluster/status"),
        ("POST", "/api/v1/nodes/x/eligibility"),
    ):
        status, body, _ = await api.call(method, path, token=AGENT, json=JOB)
        assert status == 403, (method, path, body)
        assert body["title"] == "forbidden"
    # ... but it can use the agent endpoints.
    node = await api.register("agent-ok")
    assert node["status"] == "ready"


async def test_bad_spec_is_422_naming_the_field(api: Api) -> None:
    bad = {"name": "x", "task": {"driver": "fake", "argv": ["true"], "memory_mb": 8}}
    status, body, headers = await api.call("POST", "/api/v1/jobs", json=bad)
    assert status == 422
    assert headers["Content-Type"].startswith("application/problem+json")
    assert [e["field"] for e in body["errors"]] == ["task.memory_mb"]
    status, body, _ = await api.call("POST", "/api/v1/jobs", json={"name": "x"})
    assert status == 422 and {e["field"] for e in body["errors"]} == {"task"}
    status, body, _ = await api.call(
        "POST",
        "/api/v1/jobs",
        json={**JOB, "constraints": [{"attribute": "attr.x", "operator": "regexp", "value": "("}]},
    )
    assert status == 422 and body["errors"][0]["field"] == "constraints.0"


async def test_invalid_json_is_400(api: Api) -> None:
    async with api.session.post(
        api.url + "/api/v1/jobs",
        data=b"{not json",
        headers={"Authorization": "Bearer admin-secret"},
    ) as resp:
        assert resp.status == 400
        assert "not valid JSON" in (await resp.json(content_type=None))["detail"]


async def test_unknown_ids_are_404(api: Api) -> None:
    for path in (
        "/api/v1/jobs/nope",
        "/api/v1/jobs/nope/allocations",
        "/api/v1/allocations/nope",
        "/api/v1/evaluations/nope",
        "/api/v1/nodes/nope",
    ):
        status, body, _ = await api.call("GET", path)
        assert status == 404, path
        assert body["title"] == "not found"
    status, _, _ = await api.call("POST", "/api/v1/jobs/nope/stop")
    assert status == 404


async def test_a_second_live_job_with_the_same_name_is_409(api: Api) -> None:
    first = await api.ok("POST", "/api/v1/jobs", json=JOB)
    status, body, _ = await api.call("POST", "/api/v1/jobs", json=JOB)
    assert status == 409 and "already live" in body["detail"]
    await api.ok("POST", f"/api/v1/jobs/{first['job']['id']}/stop")
    status, _, _ = await api.call("POST", "/api/v1/jobs", json=JOB)
    assert status == 201  # a stopped job's name is free again


async def test_openapi_lists_every_route_and_resolves_refs(api: Api) -> None:
    doc = await api.ok("GET", "/api/v1/openapi.json")
    assert doc["openapi"] == "3.1.0"
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ("POST", "/api/v1/jobs") in ops
    assert ("GET", "/api/v1/agent/nodes/{id}/allocations") in ops
    schemas = doc["components"]["schemas"]
    assert {"JobSpec", "Job", "Allocation", "Node", "Problem", "Evaluation"} <= set(schemas)

    def refs(x: object) -> list[str]:
        if isinstance(x, dict):
            return [v for k, v in x.items() if k == "$ref"] + [
                r for v in x.values() for r in refs(v)
            ]
        if isinstance(x, list):
            return [r for v in x for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert doc["paths"]["/health"]["get"]["security"] == []
