"""What NVML last said about each GPU, kept on disk for when it can no longer see it.

A GPU bound to vfio-pci is invisible to NVML, yet the scheduler still needs its model and
memory. The agent remembers them here (`<state_dir>/gpu-names.json`, address -> details).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

log = logging.getLogger(__name__)

CACHE_FILE = "gpu-names.json"


class RememberedGpu(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    uuid: str = ""
    memory_mb: int = 0


_Cache = TypeAdapter(dict[str, RememberedGpu])


def load_names(state_dir: Path) -> dict[str, RememberedGpu]:
    """The remembered GPUs; an unreadable or corrupt file counts as empty, not fatal."""
    path = state_dir / CACHE_FILE
    try:
        return _Cache.validate_json(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValidationError) as exc:
        log.warning("gpu_cache.unreadable %s: %s", path, exc)
        return {}


def save_names(state_dir: Path, names: dict[str, RememberedGpu]) -> None:
    """Replace the cache atomically, so a crash never leaves half a file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / CACHE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(_Cache.dump_json(names, indent=2))
    tmp.replace(path)
