"""The library's shape (STYLE.md): no function over 60 lines, no `global` statement, no
argparse in bnjax/ (flags live in experiments/), statistics and plots import nothing
from training."""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "bnjax", "*.py")))


def _trees():
    for path in SOURCES:
        with open(path) as f:
            yield os.path.basename(path), ast.parse(f.read())


def test_no_long_functions_no_global_no_argparse():
    long, globals_, argparse_ = [], [], []
    for name, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
            if isinstance(node, ast.Global):
                globals_.append(name)
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                argparse_ += [name for m in mods if m.split(".")[0] == "argparse"]
    assert len(SOURCES) > 15
    assert long == [] and globals_ == [] and argparse_ == []


def test_statistics_and_plots_import_nothing_from_training():
    allowed = {"stats.py": {"numpy", "bnjax.verdicts"},
               "verdicts.py": {"numpy", "bnjax.power", "bnjax.ranks", "bnjax.lazy"},
               "power.py": {"numpy", "bnjax.ranks", "bnjax.lazy"}, "ranks.py": {"numpy"},
               "plots.py": {"matplotlib", "numpy", "bnjax.stats", "bnjax.lazy"},
               "report.py": {"bnjax.stats", "bnjax.verdicts"}, "lazy.py": set()}
    for name, tree in _trees():
        if name not in allowed:
            continue
        mods = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:  # from bnjax import x: bnjax.x
                mods |= {f"bnjax.{a.name}" for a in node.names} if node.module == "bnjax" else {node.module}
        third_party = {m for m in mods if m.split(".")[0] in ("bnjax", "numpy", "matplotlib", "jax", "flax",
                                                               "optax", "orbax")}
        assert {m.split(".pyplot")[0] for m in third_party} <= allowed[name], (name, third_party)

