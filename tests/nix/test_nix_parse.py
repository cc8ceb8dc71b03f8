"""Every .nix file in the repository parses, and follows the house style."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.nix.conftest import REPO, parse

SKIP_DIRS = {".git", ".venv", "node_modules", "result"}


def nix_files() -> list[Path]:
    return sorted(
        p
        for p in REPO.rglob("*.nix")
        if not SKIP_DIRS.intersection(p.relative_to(REPO).parts)
        and not any(part.startswith(".") for part in p.relative_to(REPO).parts)
    )


def test_the_repository_has_the_nix_files_issue_5_names() -> None:
    names = {str(p.relative_to(REPO)) for p in nix_files()}
    assert {
        "flake.nix",
        "nix/package.nix",
        "nix/modules/default.nix",
        "nix/modules/coordinator.nix",
        "nix/modules/agent.nix",
        "nix/microvms/base.nix",
        "nix/microvms/agent-guest.nix",
        "nix/tests/vm-test.nix",
    } <= names


@pytest.mark.parametrize("path", nix_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_parses(path: Path) -> None:
    proc = parse(path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", nix_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_never_with_lib(path: Path) -> None:
    """Modern nixpkgs style: `inherit (lib) ...`, not `with lib;` (it hides where names
    come from and defeats static checks)."""
    assert not re.search(r"\bwith\s+lib\s*;", path.read_text()), path
