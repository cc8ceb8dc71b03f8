"""The generated units, rendered the way NixOS renders them, pass `systemd-analyze verify`:
every directive exists and every value parses (a typo such as ProtectKernelTunable would
otherwise be ignored by systemd, silently dropping the hardening)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.nix.conftest import Evaluated
from tests.nix.scenarios import AGENT, COORD, GUEST

CASES = [
    ("coord", COORD),
    ("coord_external", COORD),
    ("agent", AGENT),
    ("agent_gpu_nat", AGENT),
    ("guest", GUEST),
]


def systemd_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def section(entries: dict[str, Any]) -> list[str]:
    """NixOS's attrsToSection: a list becomes one line per element."""
    out = []
    for key, value in entries.items():
        for item in value if isinstance(value, list) else [value]:
            out.append(f"{key}={systemd_value(item)}")
    return out


def render(unit: dict[str, Any]) -> str:
    """A unit file as NixOS would write it, with ExecStart's store path replaced by a
    binary that exists here (verify checks that it is executable)."""
    service = dict(unit["serviceConfig"])
    service["ExecStart"] = "/bin/true " + service["ExecStart"].split(" ", 1)[1]
    env = dict(unit["environment"])
    if "MXVM_CONFIG" in env:
        env["MXVM_CONFIG"] = env["MXVM_CONFIG"].partition("#")[0]  # drop the test's JSON
    lists = {k.capitalize(): " ".join(unit[k]) for k in ("after", "wants", "requires")}
    head = {"Description": "mxvm unit under test", **lists, **unit["unitConfig"]}
    return "\n".join(
        [
            "[Unit]",
            *section({k: v for k, v in head.items() if v}),
            "[Service]",
            *section(service),
            *(f'Environment="{k}={v}"' for k, v in env.items()),
            "",
        ]
    )


@pytest.mark.parametrize(("scenario", "name"), CASES)
def test_systemd_accepts_the_unit(
    ev: dict[str, Evaluated], tmp_path: Path, scenario: str, name: str
) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not found (Debian package systemd)")
    path = tmp_path / f"{name}.service"
    path.write_text(render(ev[scenario].unit(name)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    # Syntax complaints name the file and line ("x.service:12: Unknown key ..."); the
    # units it requires (postgresql, redis) do not exist here, which is not our concern.
    at_line = re.compile(rf"{re.escape(path.name)}:\d+:")
    complaints = [
        line
        for line in proc.stderr.splitlines()
        if at_line.search(line) or "Failed to parse" in line
    ]
    assert complaints == [], path.read_text()
