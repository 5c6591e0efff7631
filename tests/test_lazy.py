"""`bnjax.lazy`: modules imported on first use."""

import os
import subprocess
import sys

import pytest

from bnjax import lazy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_lazy_module_loads_on_first_use_and_never_twice(tmp_path):
    """`bnjax.lazy.module`: the module runs when an attribute is first read, not before;
    an imported module is returned as it is (running it again would make its classes two
    different types)."""
    (tmp_path / "probe.py").write_text("print('probe runs')\nX = 1\n")
    code = ("import sys, json; from bnjax import lazy; m = lazy.module('probe'); print('asked'); print(m.X); "
            "print(lazy.module('probe') is m is sys.modules['probe'], lazy.module('json') is json)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}).stdout.split("\n")
    assert out[:4] == ["asked", "probe runs", "1", "True True"]
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        lazy.module("no_such_module")
