"""Modules imported on first use, so a process that never needs them does not pay for
them at start-up.

`scipy.stats` (0.7 s) and `matplotlib.pyplot` (0.2 s) are most of what importing bnjax
costs beyond JAX itself, and the processes that train (the workers and jobs of a suite,
each started fresh) use neither: only analysis does. `module` is the recipe of the
Python documentation for `importlib.util.LazyLoader`.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def module(name: str) -> ModuleType:
    """``name``, imported when one of its attributes is first read (at once if it is
    already imported, so a module is never executed twice)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    loader.exec_module(mod)
    return mod
