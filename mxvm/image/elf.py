"""Just enough ELF64 reading to resolve shared-library dependencies of extracted files
(no readelf/ldd: the build must not depend on binutils or on the host's loader)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

PT_INTERP = 3
PT_DYNAMIC = 2
PT_LOAD = 1
DT_NEEDED = 1
DT_STRTAB = 5


@dataclass(frozen=True)
class ElfInfo:
    needed: tuple[str, ...]
    interpreter: str | None  # None: statically linked


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def read_elf(path: Path) -> ElfInfo:
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a little-endian ELF64 file")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    headers = [struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize) for i in range(phnum)]
    interp = None
    loads = []
    dynamic = None
    for p_type, _flags, offset, vaddr, _paddr, filesz, _memsz, _align in headers:
        if p_type == PT_INTERP:
            interp = data[offset : offset + filesz].rstrip(b"\0").decode()
        elif p_type == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (offset, filesz)
    needed: tuple[str, ...] = ()
    if dynamic is not None:
        needed = _needed(data, dynamic, loads)
    return ElfInfo(needed=needed, interpreter=interp)


def _needed(
    data: bytes, dynamic: tuple[int, int], loads: list[tuple[int, int, int]]
) -> tuple[str, ...]:
    offset, size = dynamic
    entries = [struct.unpack_from("<qQ", data, offset + i) for i in range(0, size, 16)]
    strtab_vaddr = next((val for tag, val in entries if tag == DT_STRTAB), None)
    if strtab_vaddr is None:
        return ()
    strtab = _file_offset(strtab_vaddr, loads)
    names = []
    for tag, val in entries:
        if tag == DT_NEEDED:
            end = data.index(b"\0", strtab + val)
            names.append(data[strtab + val : end].decode())
    return tuple(names)


def _file_offset(vaddr: int, loads: list[tuple[int, int, int]]) -> int:
    for seg_vaddr, seg_offset, filesz in loads:
        if seg_vaddr <= vaddr < seg_vaddr + filesz:
            return vaddr - seg_vaddr + seg_offset
    raise ValueError(f"address {vaddr:#x} is in no loadable segment")
