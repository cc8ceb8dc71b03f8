"""mxvm.net loads the rtnetlink part of pyroute2 only, and pyroute2 stays whole for others."""

from __future__ import annotations

from tests.fresh_python import fresh_python


def test_mxvm_net_does_not_run_pyroute2s_package_init() -> None:
    code = (
        "import sys, mxvm.net; print('pyroute2.ndb.main' in sys.modules, 'sqlite3' in sys.modules)"
    )
    assert fresh_python(code) == "False False"


def test_a_top_level_pyroute2_name_still_imports_after_mxvm_net() -> None:
    code = (
        "import mxvm.net\n"
        "from pyroute2 import NDB, IPRoute\n"
        "import pyroute2\n"
        "print(IPRoute.__name__, NDB.__name__, pyroute2.__version__ != 'unknown')"
    )
    assert fresh_python(code) == "IPRoute NDB True"


def test_pyroute2_imported_first_is_left_alone() -> None:
    code = "import pyroute2, mxvm.net; print(hasattr(pyroute2, 'IPDB'))"
    assert fresh_python(code) == "True"
