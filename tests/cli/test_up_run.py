"""The README's main command for real: `mxvm up` (own Postgres, Redis, a local agent and the
dev guest image), then `mxvm run` boots a microVM, streams its output, exits with its code."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.cli.test_cli import _up, json_of, mxvm

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def up_with_agent() -> Iterator[dict[str, str]]:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64 (scripts/bootstrap installs it)")
    yield from _up()


def test_mxvm_run_boots_a_microvm_and_returns_the_guest_exit_code(
    up_with_agent: dict[str, str],
) -> None:
    out = mxvm(up_with_agent, "run", "--", "sh", "-c", "echo hello from $(uname -s); exit 3")
    assert out.returncode == 3, out.stderr
    assert "hello from Linux" in out.stdout
    [node] = json_of(up_with_agent, "node", "ls")
    assert node["drivers"] == ["qemu"] and node["status"] == "ready"
    allocs = json_of(up_with_agent, "alloc", "ls")
    assert allocs[0]["client_status"] == "failed" and allocs[0]["exit_code"] == 3
    logs = mxvm(up_with_agent, "alloc", "logs", allocs[0]["id"])
    assert "hello from Linux" in logs.stdout
    ok = mxvm(up_with_agent, "run", "--memory", "128", "--", "true")
    assert ok.returncode == 0, ok.stderr
    # A runaway command: stopped at its max runtime, and `mxvm run` says why.
    runaway = mxvm(
        up_with_agent, "run", "--max-runtime", "8s", "--", "sh", "-c", "echo begun; sleep 600"
    )
    assert runaway.returncode == 1 and "begun" in runaway.stdout
    assert "failed: exceeded its max runtime of 8s: stopped" in runaway.stderr
