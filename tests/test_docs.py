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


ENTRY_POINTS = sorted(os.path.relpath(p, ROOT)[:-3].replace(os.sep, ".")
                      for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                      + glob.glob(os.path.join(ROOT, "experiments", "bench", "*.py"))
                      if "def main(" in open(p).read())
OTHER_TOOLS = ("pytest", "pip", "git", "mutmut", "apt-get", "dpkg-deb", "tensorboard", "jupyter-execute", "XLA_FLAGS")
FOREIGN_FLAGS = ("--durations", "--dist", "--xla_")  # pytest's and XLA's, named alone


def _help(module: str) -> str:
    """``python -m MODULE --help``, in this process (the modules are imported once)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            importlib.import_module(module).main(["--help"])
        except SystemExit:
            pass
    return out.getvalue()


def _has_flag(text: str, flag: str) -> bool:
    return re.search(re.escape(flag) + r"(?![\w-])", text) is not None


def test_every_flag_the_docs_name_exists():
    """A ``--flag`` on a documented command line is in that module's ``--help``; any other
    ``--flag`` the README or docs name (in code, outside other tools' command lines) is in
    some entry point's ``--help``."""
    helps = {m: _help(m) for m in ENTRY_POINTS}
    assert all(helps.values()) and _has_flag(helps["experiments.reproduce"], "--stale")
    wrong, unknown = [], []
    for page in PAGES:
        text = open(page).read()
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for m in re.finditer(r"python3? -m (experiments[\w.]*)((?:\s+(?!&&|\||;|#)\S+)*)", line):
                    wrong += [(page, m.group(1), f) for f in re.findall(r"(?<!\S)(--[a-z][\w.-]*)", m.group(2))
                              if not _has_flag(helps[m.group(1)], f)]
        for code in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
            if any(tool in code for tool in OTHER_TOOLS) or code.startswith(FOREIGN_FLAGS):
                continue
            unknown += [(page, f) for f in re.findall(r"(?<![\w-])(--[a-z][\w.-]*[\w])", code)
                        if not any(_has_flag(h, f) for h in helps.values())]
    assert not wrong, wrong
    assert not unknown, unknown


def test_every_see_pointer_in_the_code_resolves():
    """``see README`` / ``see docs/PAGE.md`` (with an optional ``, "Section"``) in the
    code's docstrings and help texts name a page that exists and, if given, a heading in it."""
    pointers = []
    for path in glob.glob(os.path.join(ROOT, "bnjax", "*.py")) + glob.glob(os.path.join(ROOT, "experiments", "**",
                                                                                         "*.py"), recursive=True):
        text = re.sub(r"\s+", " ", open(path).read())
        pointers += [(path, page, section) for page, section in
                     re.findall(r'see (README|docs/[\w-]+\.md)(?:, "([^"]+)")?', text)]
    assert len(pointers) >= 3
    for path, page, section in pointers:
        target = os.path.join(ROOT, "README.md" if page == "README" else page)
        assert os.path.exists(target), (path, page)
        headings = [h.strip() for h in re.findall(r"^#+ (.+)$", open(target).read(), flags=re.M)]
        assert not section or section in headings, (path, page, section)
