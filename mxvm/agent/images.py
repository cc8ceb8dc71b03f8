"""Guest images on a node: a directory per image name with a manifest.json.

The dev image (`mxvm image build`) and a Nix-built guest (kernel + initrd in the Nix store)
use the same manifest: `kernel` and `initrd` (or `root_disk`) as paths relative to the
image directory or absolute, `min_memory_mb`, and optional `cmdline` words.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mxvm.hypervisors.base import ImageError

MANIFEST = "manifest.json"


class GuestImage(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    kernel: Path
    initrd: Path | None = None
    root_disk: Path | None = None
    min_memory_mb: int = Field(default=128, ge=1)
    cmdline: list[str] = Field(default_factory=list)


class _Manifest(BaseModel):
    kernel: str
    initrd: str | None = None
    root_disk: str | None = None
    min_memory_mb: int = 128
    cmdline: str | list[str] = ""


def _path(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() else base / p


def resolve_image(image_dir: Path, name: str) -> GuestImage:
    """The image called `name`; ImageError naming the file that is missing or wrong."""
    if not name or "/" in name or name.startswith("."):
        raise ImageError(image_dir / name, "is not a valid image name")
    manifest = image_dir / name / MANIFEST
    try:
        st = manifest.stat()
    except FileNotFoundError as exc:
        raise ImageError(
            manifest, f"does not exist: no image {name!r} on this node (`mxvm image build`?)"
        ) from exc
    except OSError as exc:
        raise ImageError(manifest, f"is not a valid image manifest: {exc}") from exc
    # Every VM start resolves its image: the manifest is read again only when it changed.
    return _load(manifest, name, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _load(manifest: Path, name: str, _mtime_ns: int, _size: int) -> GuestImage:
    try:
        raw = json.loads(manifest.read_text())
        m = _Manifest.model_validate(raw)
    except FileNotFoundError as exc:
        raise ImageError(
            manifest, f"does not exist: no image {name!r} on this node (`mxvm image build`?)"
        ) from exc
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise ImageError(manifest, f"is not a valid image manifest: {exc}") from exc
    base = manifest.parent
    words = m.cmdline.split() if isinstance(m.cmdline, str) else list(m.cmdline)
    kernel = _path(base, m.kernel)
    assert kernel is not None
    return GuestImage(
        name=name,
        kernel=kernel,
        initrd=_path(base, m.initrd),
        root_disk=_path(base, m.root_disk),
        min_memory_mb=m.min_memory_mb,
        cmdline=words,
    )


def list_images(image_dir: Path) -> dict[str, GuestImage]:
    """Every valid image under image_dir (broken ones are left out)."""
    out: dict[str, GuestImage] = {}
    if not image_dir.is_dir():
        return out
    for entry in sorted(image_dir.iterdir()):
        if (entry / MANIFEST).is_file():
            try:
                out[entry.name] = resolve_image(image_dir, entry.name)
            except ImageError:
                continue
    return out
