"""The guest's Python: Debian's python3.11 interpreter and a trimmed stdlib, taken from
extracted .debs, plus every shared library they need resolved from those same extracted
files (never from the host's Python or loader)."""

from __future__ import annotations

import py_compile
import shutil
import sys
from pathlib import Path

from mxvm.image.elf import is_elf, read_elf
from mxvm.image.errors import ImageBuildError

PY = "python3.11"
DEBS = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib")
LIB_DEBS = ("libc6", "zlib1g", "libexpat1", "libgcc-s1")
# Loaded with dlopen(), so absent from every DT_NEEDED: glibc needs libgcc_s for
# pthread_exit/cancellation (without it a thread exiting at shutdown aborts the process).
DLOPENED = ("libgcc_s.so.1",)
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
GUEST_LIB_DIR = "lib/x86_64-linux-gnu"

# Never needed in a guest that runs commands: tests, GUIs, docs data, packaging, and
# modules whose C parts need libraries the image does not carry (ssl, sqlite, curses...).
EXCLUDE = {
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "pydoc_data", "lib2to3",
    "distutils", "unittest", "venv", "sqlite3", "dbm", "curses", "turtle.py", "pydoc.py",
    "doctest.py", "antigravity.py", "this.py", "__phello__", "__hello__.py",
    "sitecustomize.py", "EXTERNALLY-MANAGED", "LICENSE.txt", "__pycache__",
}  # fmt: skip
EXCLUDE_DYNLOAD_PREFIXES = ("_test", "xx", "_ctypes_test", "_xx")


def install(extracted: Path, root: Path) -> int:
    """Install interpreter, stdlib and libraries under root; returns the stdlib file count."""
    src_lib = extracted / "usr" / "lib" / PY
    interpreter = extracted / "usr" / "bin" / PY
    if not interpreter.is_file() or not src_lib.is_dir():
        raise ImageBuildError(f"no {PY} in the extracted packages under {extracted}")
    bindir = root / "usr" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(interpreter, bindir / PY)
    for alias in ("python3", "python"):
        (bindir / alias).symlink_to(PY)
    dest_lib = root / "usr" / "lib" / PY
    count = _copy_stdlib(src_lib, dest_lib)
    elves = [bindir / PY, *(dest_lib / "lib-dynload").glob("*.so")]
    available = _library_index(extracted)
    _drop_unresolvable(elves, available)
    _install_libraries([e for e in elves if e.exists()], available, root)
    compile_tree(dest_lib, sourceless=True)
    return count


def _copy_stdlib(src: Path, dest: Path) -> int:
    def ignore(_dir: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in EXCLUDE}
        if _dir.endswith("lib-dynload"):
            skip |= {n for n in names if n.startswith(EXCLUDE_DYNLOAD_PREFIXES)}
        return skip

    shutil.copytree(src, dest, ignore=ignore, symlinks=True)
    for link in [p for p in dest.rglob("*") if p.is_symlink()]:
        link.unlink()  # Debian points a few files at /etc; the guest has none of them
    return sum(1 for p in dest.rglob("*") if p.is_file())


def _library_index(extracted: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for libdir in LIB_DIRS:
        for path in sorted((extracted / libdir).glob("*.so*")):
            index.setdefault(path.name, path)
    return index


def _needed_closure(elves: list[Path], available: dict[str, Path]) -> set[str] | None:
    """Every library the files need, or None when one of them is not available."""
    seen: set[str] = set()
    todo = [n for e in elves for n in read_elf(e).needed]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in available:
            return None
        seen.add(name)
        todo.extend(read_elf(available[name]).needed)
    return seen


def _drop_unresolvable(elves: list[Path], available: dict[str, Path]) -> None:
    """Extension modules needing libraries we do not ship are removed (import fails cleanly)."""
    if _needed_closure(elves[:1], available) is None:
        raise ImageBuildError(f"{PY} needs libraries missing from {LIB_DEBS}")
    for ext in elves[1:]:
        if _needed_closure([ext], available) is None:
            ext.unlink()


def _install_libraries(elves: list[Path], available: dict[str, Path], root: Path) -> None:
    needed = _needed_closure(elves, available) or set()
    for name in DLOPENED:
        if name not in available:
            raise ImageBuildError(f"{name} is not in the extracted packages")
        needed |= {name, *(_needed_closure([available[name]], available) or set())}
    dest = root / GUEST_LIB_DIR
    dest.mkdir(parents=True, exist_ok=True)
    for name in sorted(needed):
        shutil.copyfile(available[name], dest / name)  # resolves symlinks: one real file
        (dest / name).chmod(0o755)
    interp = read_elf(elves[0]).interpreter
    if interp is None:
        raise ImageBuildError(f"{PY} has no ELF interpreter")
    loader = available.get(Path(interp).name)
    if loader is None:
        raise ImageBuildError(f"the loader {interp} is not in the extracted packages")
    target = root / interp.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    in_libdir = dest / loader.name
    if not in_libdir.exists():
        shutil.copyfile(loader, in_libdir)
        in_libdir.chmod(0o755)
    if not target.exists() and target != in_libdir:
        target.symlink_to(f"/{GUEST_LIB_DIR}/{loader.name}")


def compile_tree(lib: Path, *, sourceless: bool = False) -> None:
    """Byte-compile so TCG guests do not compile the stdlib at every boot; unchecked-hash
    pycs stay valid whatever mtimes the archive carries. `sourceless` puts each .pyc in
    place of its .py (half the bytes for TCG to unpack; tracebacks lose source lines).
    Only the same minor version can write them; another builder Python ships sources only,
    and the guest compiles at run time."""
    if sys.version_info[:2] != (3, 11):
        return
    for source in sorted(lib.rglob("*.py")):
        target = source.with_suffix(".pyc") if sourceless else None
        try:
            py_compile.compile(
                str(source),
                cfile=str(target) if target else None,
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
        except py_compile.PyCompileError:
            continue  # keep the source of a file that does not compile
        if sourceless:
            source.unlink()


def shipped_elves(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and is_elf(p)]
