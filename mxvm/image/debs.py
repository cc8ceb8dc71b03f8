"""Debian packages for the guest image: resolve versions with apt-cache, fetch with
`apt-get download` (no install on the host), unpack with `dpkg-deb -x`."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mxvm.image.errors import ImageBuildError

KERNEL_META = "linux-image-cloud-amd64"


@dataclass(frozen=True)
class Deb:
    name: str
    version: str
    path: Path


def _run(argv: list[str], cwd: Path | None = None) -> str:
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{argv[0]} is not installed (a Debian host is needed)") from exc
    if proc.returncode != 0:
        raise ImageBuildError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def candidate(name: str) -> str | None:
    """The version apt would fetch for `name`, None when apt has no lists for it."""
    for line in _run(["apt-cache", "policy", name]).splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate":
            value = value.strip()
            return None if value in ("", "(none)") else value
    return None


def ensure_lists() -> None:
    """Run `apt-get update` once if apt does not know the cloud kernel yet."""
    if candidate(KERNEL_META) is not None:
        return
    if os.geteuid() != 0:
        raise ImageBuildError("apt has no package lists; run `apt-get update` as root once")
    _run(["apt-get", "update", "-q"])
    if candidate(KERNEL_META) is None:
        raise ImageBuildError(f"apt knows no {KERNEL_META} even after apt-get update")


def kernel_package() -> str:
    """The versioned kernel package the cloud-kernel metapackage points at."""
    for line in _run(["apt-cache", "depends", KERNEL_META]).splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Depends" and value.strip().startswith("linux-image-"):
            return value.strip()
    raise ImageBuildError(f"cannot resolve {KERNEL_META} to a kernel package")


def installed_version(name: str) -> str | None:
    try:
        out = _run(["dpkg-query", "-W", "-f=${Version}", name])
    except ImageBuildError:
        return None
    return out.strip() or None


def download(names: list[str], dest: Path) -> list[Deb]:
    """The candidate .deb of each package in `dest`, fetched unless already there."""
    dest.mkdir(parents=True, exist_ok=True)
    debs = []
    for name in names:
        version = candidate(name)
        if version is None:
            raise ImageBuildError(f"apt has no candidate for {name}")
        pattern = f"{name}_{version.replace(':', '%3a')}_*.deb"
        found = sorted(dest.glob(pattern))
        if not found:
            _run(["apt-get", "download", "-q", f"{name}={version}"], cwd=dest)
            found = sorted(dest.glob(pattern))
        if not found:
            raise ImageBuildError(f"apt-get download {name}={version} produced no {pattern}")
        debs.append(Deb(name, version, found[0]))
    keep = {d.path for d in debs}
    for stale in dest.glob("*.deb"):  # superseded versions from earlier builds
        if stale not in keep:
            stale.unlink()
    return debs


def extract(deb: Deb, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb.path), str(into)])
