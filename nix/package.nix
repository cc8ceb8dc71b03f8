# mxvm as a Python application: the `mxvm` command with its SQL queries and migrations
# (pyproject.toml declares them as package data, so the wheel carries them).
{
  lib,
  python3Packages,
}:

let
  py = python3Packages;
  root = ../.;
in
py.buildPythonApplication {
  pname = "mxvm";
  version = "0.1.0";
  pyproject = true;

  # Only what the wheel needs: a change to tests, nix/ or the justfile rebuilds nothing,
  # and a working tree's __pycache__ stays out.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      (lib.fileset.fileFilter (file: file.hasExt "py" || file.hasExt "sql") ../mxvm)
      # pyproject names README.md as the long description; tolerate its absence.
      (lib.fileset.maybeMissing ../README.md)
    ];
  };

  build-system = [ py.setuptools ];

  dependencies = [
    py.aiohttp
    py.asyncpg
    py.redis
    py.pydantic
    py.pydantic-settings
    py.psutil
    py.nvidia-ml-py
    py.pyroute2
    py.libvirt # libvirt-python: the libvirt driver
  ];

  optional-dependencies.libvirt = [ py.libvirt ];

  # The test suite needs live Postgres, Redis, QEMU and netlink; the NixOS test
  # (nix/tests/vm-test.nix) exercises the installed package instead.
  doCheck = false;

  pythonImportsCheck = [
    "mxvm.cli.main"
    "mxvm.store"
    "mxvm.guest"
  ];

  # Fail the build, not the first migration, when package data goes missing.
  # (postInstall, not an install check: doCheck = false turns those off too.)
  postInstall = ''
    site=$out/${py.python.sitePackages}/mxvm/store
    ls $site/migrations/*.sql >/dev/null
    ls $site/queries/*.sql >/dev/null
  '';

  meta = {
    description = "A microVM orchestrator for fleets of AI agents";
    license = lib.licenses.asl20;
    mainProgram = "mxvm";
    platforms = lib.platforms.linux;
  };
}
