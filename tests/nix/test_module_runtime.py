"""The coordinator starts from exactly what the NixOS module hands it: the unit's ExecStart
arguments, its settings rendered as TOML at $MXVM_CONFIG, and its LoadCredential files in
$CREDENTIALS_DIRECTORY, against real Postgres and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import free_port
from tests.nix.conftest import Evaluated
from tests.nix.scenarios import COORD


def render_toml(values: dict[str, Any]) -> str:
    """Flat TOML, as pkgs.formats.toml writes the coordinator's (flat) settings."""
    lines = []
    for key, value in sorted(values.items()):
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value!r}")
        elif isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")  # a TOML basic string
        else:
            raise TypeError(f"{key}: nested settings are not expected here")
    return "\n".join(lines) + "\n"


async def _status(url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status


async def _wait_up(url: str, token: str, proc: asyncio.subprocess.Process) -> int:
    for _ in range(300):
        if proc.returncode is not None:
            break
        try:
            return await _status(url, token)
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.1)
    out = await proc.stdout.read() if proc.stdout else b""
    raise AssertionError(f"coordinator did not come up:\n{out.decode(errors='replace')}")


async def test_coordinator_runs_from_the_module_environment(
    ev: dict[str, Evaluated], pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    e = ev["coord_external"]
    unit = e.unit(COORD)
    config = tmp_path / "mxvm-coordinator.toml"
    config.write_text(render_toml(e.settings(COORD)[1]))
    secrets = {
        "/run/secrets/admin": "admin-tok\n",
        "/run/secrets/agents": "agent-a\nagent-b\n",
        "/run/secrets/db": pg_dsn,
        "/run/secrets/redis": redis_url,
    }
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for entry in unit["serviceConfig"]["LoadCredential"]:
        cred_id, source = entry.split(":", 1)
        (credentials / cred_id).write_text(secrets[source])
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "MXVM_CONFIG": str(config),
        "CREDENTIALS_DIRECTORY": str(credentials),
        # Not the unit's: a free port, and no /var/lib on the test machine.
        "MXVM_LISTEN": f"127.0.0.1:{port}",
        "MXVM_STATE_DIR": str(tmp_path / "state"),
        **{k: v for k, v in unit["environment"].items() if k != "MXVM_CONFIG"},
    }
    args = unit["serviceConfig"]["ExecStart"].split()[1:]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mxvm", *args,
        env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        nodes = f"http://127.0.0.1:{port}/api/v1/nodes"
        assert await _wait_up(nodes, "admin-tok", proc) == 200
        assert await _status(nodes, "not-a-token") == 401
        agent_only = f"http://127.0.0.1:{port}/api/v1/agent/nodes/none/allocations"
        assert await _status(agent_only, "agent-b") != 401, "agent tokens from the credential"
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=30)
