"""The documentation matches the project: the README fits a first read, every page it
links exists and is linked, every linked file exists, and every module a command block
runs can be imported."""

import glob
import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _links(path: str) -> list[str]:
    text = open(path).read()
    return [m for m in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", m) and not m.startswith("#")]


def test_readme_is_a_first_read_and_links_every_docs_page():
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert len(readme.splitlines()) <= 200
    linked = {os.path.normpath(os.path.join(ROOT, link.split("#")[0])) for link in _links(os.path.join(ROOT, "README.md"))}
    assert set(PAGES[1:]) <= linked, set(PAGES[1:]) - linked
    assert len(PAGES) >= 5


def test_every_linked_file_exists():
    missing = []
    for page in PAGES:
        for link in _links(page):
            target = os.path.normpath(os.path.join(os.path.dirname(page), link.split("#")[0]))
            if not os.path.exists(target):
                missing.append(f"{os.path.relpath(page, ROOT)} -> {link}")
    assert not missing, missing


def _in_command_blocks(pattern: str) -> set[str]:
    """Every match of ``pattern`` (its group) inside the pages' shell command blocks."""
    found = set()
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", open(page).read(), flags=re.S):
            found |= set(re.findall(pattern, block))
    return found


def test_every_module_a_command_block_runs_exists():
    modules = _in_command_blocks(r"python3? -m ([\w.]+)")
    assert {"experiments.reproduce", "pytest"} <= modules
    missing = [m for m in sorted(modules) if importlib.util.find_spec(m) is None]
    assert not missing, missing


def test_every_tool_a_command_block_runs_is_installed():
    """``.venv/bin/TOOL`` in a command block is a console script that requirements.txt installs."""
    import sys

    tools = _in_command_blocks(r"\.venv/bin/([\w-]+)")
    assert {"tensorboard", "jupyter-execute", "python"} <= tools
    bindir = os.path.dirname(sys.executable)
    assert not [t for t in sorted(tools) if t != "pip" and not os.path.exists(os.path.join(bindir, t))]
