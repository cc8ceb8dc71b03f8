"""pyroute2 without its package __init__.

`import pyroute2` runs an __init__ that imports every netlink family the library knows
(NDB with sqlite3, IPDB, IPVS, WireGuard, nl80211, conntrack, plan9, ...): 163 modules and
about 5 MiB of the host agent's RSS, where mxvm.net needs rtnetlink alone. `install()`
registers the package without running that __init__, so `from pyroute2.iproute.linux
import AsyncIPRoute` loads only what that needs. Asking the package for a name that is not
a submodule (`from pyroute2 import IPRoute`, anywhere in the process) runs the real
__init__ at that moment, so other users of pyroute2 see no difference.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys


def install() -> None:
    """Register a bare `pyroute2` package, unless pyroute2 is imported already."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return  # the ordinary import reports the missing package
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(name: str) -> object:
        if not name.startswith("__"):
            try:
                return importlib.import_module(f"pyroute2.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"pyroute2.{name}":
                    raise
        # a top-level name such as IPRoute: run the real __init__ once, then answer
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, name)

    package.__dict__["__getattr__"] = __getattr__
    sys.modules["pyroute2"] = package
