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


def parse_policy(text: str) -> dict[str, str | None]:
    """`apt-cache policy A B ...` output -> {package: candidate version or None}."""
    out: dict[str, str | None] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1]
            out[current] = None
        elif current is not None and line.strip().startswith("Candidate:"):
            value = line.split(":", 1)[1].strip()
            out[current] = None if value in ("", "(none)") else value
    return out


def candidates(names: list[str]) -> dict[str, str]:
    """The version apt would fetch for each package, in one apt-cache call (each call
    costs most of a second: it loads the whole package cache)."""
    found = parse_policy(_run(["apt-cache", "policy", *names]))
    missing = [n for n in names if found.get(n) is None]
    if missing:
        raise ImageBuildError(f"apt has no candidate for {', '.join(missing)}")
    return {n: v for n, v in found.items() if v is not None}


def parse_kernel_depends(show: str) -> str | None:
    for line in show.splitlines():
        if line.startswith("Depends:"):
            for dep in line.removeprefix("Depends:").split(","):
                name = dep.strip().split(" ", 1)[0]
                if name.startswith("linux-image-"):
                    return name
    return None


def kernel_package() -> str:
    """The versioned kernel package the cloud-kernel metapackage points at; runs
    `apt-get update` once (as root) when apt does not know the metapackage yet."""
    try:
        show = _run(["apt-cache", "show", "--no-all-versions", KERNEL_META])
    except ImageBuildError:
        if os.geteuid() != 0:
            raise ImageBuildError(
                f"apt does not know {KERNEL_META}; run `apt-get update` as root once"
            ) from None
        _run(["apt-get", "update", "-q"])
        show = _run(["apt-cache", "show", "--no-all-versions", KERNEL_META])
    name = parse_kernel_depends(show)
    if name is None:
        raise ImageBuildError(f"cannot resolve {KERNEL_META} to a kernel package")
    return name


def refresh_lists() -> bool:
    """`apt-get update` when we may (root); False when we may not."""
    if os.geteuid() != 0:
        return False
    _run(["apt-get", "update", "-q"])
    return True


def installed_version(name: str) -> str | None:
    try:
        out = _run(["dpkg-query", "-W", "-f=${Version}", name])
    except ImageBuildError:
        return None
    return out.strip() or None


def download(versions: dict[str, str], dest: Path) -> list[Deb]:
    """The .deb of each package=version in `dest`, fetched unless already there."""
    dest.mkdir(parents=True, exist_ok=True)
    debs = []
    for name, version in versions.items():
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
