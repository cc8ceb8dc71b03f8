"""Running Nix from tests: `nix-instantiate --parse` on files, and evaluating the NixOS
modules with nixpkgs' lib.evalModules (tests/nix/eval.nix) against stub NixOS options."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.nix.scenarios import BAD, SCENARIOS

REPO = Path(__file__).resolve().parents[2]
EVAL_NIX = Path(__file__).with_name("eval.nix")
PACKAGE_EVAL_NIX = Path(__file__).with_name("package-eval.nix")
LIB_ENV = "MXVM_NIXPKGS_LIB"
# Used when LIB_ENV is unset: CI runs a clone with the project's shared/ folder beside it,
# so a nixpkgs.lib checkout placed there makes CI evaluate the modules too.
SHARED_LIB = REPO.parent / "shared" / "nixpkgs-lib"
# Debian's nix-bin expects a nixbld group that evaluation never uses.
NIX_OPTIONS = ["--option", "build-users-group", ""]


def nix_instantiate() -> str:
    path = shutil.which("nix-instantiate")
    if path is None:
        pytest.skip("nix-instantiate not found (scripts/bootstrap installs Debian's nix-bin)")
    return path


def nixpkgs_lib() -> Path:
    """The directory holding nixpkgs' lib/default.nix, from $MXVM_NIXPKGS_LIB, else from
    ../shared/nixpkgs-lib beside the checkout."""
    value = os.environ.get(LIB_ENV) or (str(SHARED_LIB) if SHARED_LIB.is_dir() else "")
    if not value:
        pytest.skip(
            f"{LIB_ENV} is unset and there is no {SHARED_LIB}: point it at a checkout of "
            "nixpkgs' lib (e.g. nix-community/nixpkgs.lib) to evaluate the NixOS modules"
        )
    root = Path(value)
    for candidate in (root / "lib", root):
        if (candidate / "default.nix").is_file() and (candidate / "modules.nix").is_file():
            return candidate
    pytest.fail(f"{value} holds no nixpkgs lib (no lib/default.nix, lib/modules.nix)")


def parse(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nix_instantiate(), *NIX_OPTIONS, "--parse", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class Evaluated:
    """One scenario's evaluated configuration (the attrset eval.nix returns)."""

    raw: dict[str, Any]

    @property
    def failed_assertions(self) -> list[str]:
        return list(self.raw["failedAssertions"])

    @property
    def warnings(self) -> list[str]:
        return list(self.raw["warnings"])

    @property
    def services(self) -> dict[str, Any]:
        return dict(self.raw["services"])

    def unit(self, name: str) -> dict[str, Any]:
        unit: dict[str, Any] = self.raw["services"][name]
        return unit

    def service_config(self, name: str) -> dict[str, Any]:
        config: dict[str, Any] = self.unit(name)["serviceConfig"]
        return config

    def settings(self, name: str) -> tuple[str, dict[str, Any]]:
        """The settings file the unit's MXVM_CONFIG names, and the values rendered into it
        (fake-pkgs.nix appends them as JSON after a '#')."""
        path, _, rendered = self.unit(name)["environment"]["MXVM_CONFIG"].partition("#")
        values: dict[str, Any] = json.loads(rendered)
        return path, values


def eval_json(nix_file: Path, **args: str) -> Any:
    """`nix-instantiate --eval --strict --json FILE --argstr libPath <lib> --argstr k v ...`."""
    argv = [nix_instantiate(), *NIX_OPTIONS, "--eval", "--strict", "--json", str(nix_file)]
    for key, value in {"libPath": str(nixpkgs_lib()), **args}.items():
        argv += ["--argstr", key, value]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def evaluate(scenarios: dict[str, dict[str, Any]]) -> dict[str, Evaluated]:
    """Evaluate each scenario (a NixOS configuration as JSON) in one nix-instantiate run."""
    result: dict[str, Any] = eval_json(EVAL_NIX, scenariosJson=json.dumps(scenarios))
    return {name: Evaluated(value) for name, value in result.items()}


def evaluate_package(python_packages: list[str]) -> dict[str, Any]:
    """nix/package.nix's buildPythonApplication arguments, given only these Python packages."""
    result: dict[str, Any] = eval_json(PACKAGE_EVAL_NIX, namesJson=json.dumps(python_packages))
    return result


@pytest.fixture(scope="session")
def ev() -> dict[str, Evaluated]:
    """Every scenario in tests/nix/scenarios.py, evaluated once."""
    return evaluate({**SCENARIOS, **{name: cfg for name, (cfg, _) in BAD.items()}})
