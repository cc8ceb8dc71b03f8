"""nix/tests/vm-test.nix, short of booting it: both nodes' configurations evaluate (through
the flake's modules) without a failed assertion, they agree with each other and with the
Python side, and the test script is valid Python whose job is a valid JobSpec."""

from __future__ import annotations

import ast
from typing import Any

from mxvm.config import AgentSettings, CoordinatorSettings, split_listen
from mxvm.models.job import JobSpec
from tests.nix.conftest import Evaluated
from tests.nix.scenarios import AGENT, COORD


def credential_sources(e: Evaluated, unit: str) -> list[str]:
    return [entry.split(":", 1)[1] for entry in e.service_config(unit)["LoadCredential"]]


def test_nodes_evaluate_cleanly(ev: dict[str, Evaluated]) -> None:
    for name in ("vmtest_coordinator", "vmtest_host"):
        assert (ev[name].failed_assertions, ev[name].warnings) == ([], []), name


def test_credentials_exist_on_the_nodes(ev: dict[str, Evaluated]) -> None:
    for name, unit in (("vmtest_coordinator", COORD), ("vmtest_host", AGENT)):
        e = ev[name]
        for source in credential_sources(e, unit):
            assert source.removeprefix("/etc/") in e.raw["etc"], source


def test_host_reaches_the_coordinator_and_back(ev: dict[str, Evaluated]) -> None:
    coord = CoordinatorSettings(**ev["vmtest_coordinator"].settings(COORD)[1])
    host = ev["vmtest_host"]
    agent = AgentSettings(**host.settings(AGENT)[1])
    _, coord_port = split_listen(coord.listen)
    assert agent.url == f"http://coordinator:{coord_port}"
    assert coord_port in ev["vmtest_coordinator"].raw["firewall"]
    _, agent_port = split_listen(agent.api_listen)
    assert agent_port in host.raw["firewall"]
    assert agent.address == "host"
    assert any(
        rule.startswith(f"L+ {agent.images_dir}/default ") and "-mxvm-agent-guest-image" in rule
        for rule in host.raw["tmpfiles"]
    )


def _job_literal(script: str) -> dict[str, Any]:
    for node in ast.walk(ast.parse(script)):
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
            "job"
        ]:
            job: dict[str, Any] = ast.literal_eval(node.value)
            return job
    raise AssertionError("no `job = {...}` in the test script")


def test_script_is_python_and_submits_a_valid_job(ev: dict[str, Evaluated]) -> None:
    script = ev["vmtest_host"].raw["testScript"]
    compile(script, "vm-test testScript", "exec")
    spec = JobSpec.model_validate(_job_literal(script))
    assert spec.task.image == "default"
    assert spec.task.memory_mb >= ev["guest"].raw["guest"]["manifest"]["min_memory_mb"]
    for node in ("coordinator", "host"):
        assert f"{node}." in script
