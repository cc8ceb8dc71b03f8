"""flake.nix through Nix's own flake machinery (`nix eval .#…`): its outputs exist and the
ones that need only lib evaluate. nixpkgs is replaced by a stub flake (nixpkgs' lib from
$MXVM_NIXPKGS_LIB plus tests/nix/fake-pkgs.nix as legacyPackages), microvm.nix by an empty
one, so nothing is downloaded. Nix sees only files git tracks, so this checks the committed
flake (plus staged changes)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.nix.conftest import NIX_OPTIONS, REPO, nixpkgs_lib

FEATURES = ["--extra-experimental-features", "nix-command flakes"]

NIXPKGS_STUB = """{
  inputs.lib = { url = "path:%s"; flake = false; };
  outputs = { self, lib }: let l = import lib; in {
    lib = l;
    legacyPackages = l.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system:
      import ./fake-pkgs.nix { lib = l; } // { stdenv.hostPlatform.system = system; });
  };
}
"""


@pytest.fixture(scope="module")
def flake_eval(tmp_path_factory: pytest.TempPathFactory) -> Any:
    nix = shutil.which("nix")
    if nix is None:
        pytest.skip("nix not found (scripts/bootstrap installs Debian's nix-bin)")
    lib = nixpkgs_lib()
    stubs = tmp_path_factory.mktemp("flake-stubs")
    (stubs / "nixpkgs").mkdir()
    (stubs / "nixpkgs" / "flake.nix").write_text(NIXPKGS_STUB % lib)
    shutil.copy(Path(__file__).with_name("fake-pkgs.nix"), stubs / "nixpkgs")
    (stubs / "microvm").mkdir()
    (stubs / "microvm" / "flake.nix").write_text("{ outputs = _: { nixosModules = { }; }; }\n")

    def run(attr: str, apply: str | None = None) -> Any:
        argv = [nix, *FEATURES, *NIX_OPTIONS, "eval", "--json", f"{REPO}#{attr}"]
        argv += ["--no-write-lock-file", "--override-input", "nixpkgs", f"path:{stubs}/nixpkgs"]
        argv += ["--override-input", "microvm", f"path:{stubs}/microvm"]
        if apply:
            argv += ["--apply", apply]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    return run


def test_flake_outputs(flake_eval: Any) -> None:
    names = "builtins.attrNames"
    assert flake_eval("nixosModules", names) == ["agent", "coordinator", "default"]
    assert flake_eval("overlays", names) == ["default"]
    assert flake_eval("nixosConfigurations", names) == ["agent-guest"]
    assert flake_eval("packages.x86_64-linux", names) == [
        "agent-guest-image",
        "agent-guest-runner",
        "default",
    ]
    assert flake_eval("packages.aarch64-linux", names) == ["default"]
    assert flake_eval("checks.x86_64-linux", names) == ["package", "vm-test"]
    assert flake_eval("devShells.x86_64-linux", names) == ["default"]


def test_default_package_is_nix_package_nix(flake_eval: Any) -> None:
    # The fake callPackage names what it was called with.
    assert flake_eval("packages.x86_64-linux.default.name") == "mxvm-from-package.nix"
