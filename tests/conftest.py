"""One XLA compilation cache for the whole test run, fresh for each run (so a CI run pays
a cold start honestly): this process, pytest-xdist's worker processes and the entry
points and worker processes the tests start all find it through ``$BNJAX_XLA_CACHE``.
A program that several tests (or their subprocesses) build is compiled once.

The tests' programs are compiled with LLVM's optimisation level 0
(``--xla_backend_optimization_level=0`` in ``$XLA_FLAGS``, inherited by every process the
tests start; XLA's own HLO passes, fusion included, run as always). Compilation is most
of the suite's time, and this cuts it by about 40%; the programs compute the same
functions, their float results differing from the default's in the last bits (summation
order), which no test depends on: every test compares numbers computed under the same
flags, or against references with a tolerance. ``BNJAX_TEST_XLA_OPT=default`` runs the
suite with the default optimisation level instead."""

import os
import shutil
import tempfile

_OPT = "--xla_backend_optimization_level=0"
if os.environ.get("BNJAX_TEST_XLA_OPT", "O0") != "default" and _OPT not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_OPT}".strip()  # before any backend starts

import pytest  # noqa: E402

from bnjax import xla_cache  # noqa: E402

_STATE: dict = {}


def pytest_configure(config):
    if getattr(config.option, "maxschedchunk", "absent") is None:  # the xdist controller: see modifyitems below
        config.option.maxschedchunk = 1
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller's cache, from the environment
        path = os.environ[xla_cache.ENV]
    elif os.environ.get("BNJAX_TEST_XLA_CACHE"):  # a cache kept across test runs (mutation testing runs thousands)
        path = os.environ["BNJAX_TEST_XLA_CACHE"]
        _STATE.update(owner=False)
        os.environ[xla_cache.ENV] = path
    else:
        path = tempfile.mkdtemp(prefix="bnjax-test-xla-")
        _STATE.update(owner=True, env=os.environ.get(xla_cache.ENV))
        os.environ[xla_cache.ENV] = path  # before xdist starts its workers, which inherit it
    _STATE["path"] = path
    xla_cache.enable(path)


def pytest_unconfigure(config):
    if not _STATE.get("owner"):
        return
    if _STATE.get("env") is None:
        os.environ.pop(xla_cache.ENV, None)
    else:
        os.environ[xla_cache.ENV] = _STATE["env"]
    shutil.rmtree(_STATE["path"], ignore_errors=True)


_PROGRAMS_ORDER = {"smoke": 0, None: 1, "after smoke": 2}  # slow tests; the rest come last (3)


def _order(item) -> int:
    slow = item.get_closest_marker("slow")
    if slow is None:
        return 3
    programs = slow.kwargs.get("programs")
    if programs not in _PROGRAMS_ORDER:
        raise pytest.UsageError(f"{item.nodeid}: slow(programs={programs!r}): choose from "
                                f"{[k for k in _PROGRAMS_ORDER if k]}")
    return _PROGRAMS_ORDER[programs]


def pytest_collection_modifyitems(config, items):
    """The tests marked slow first (stable otherwise), handed out one at a time: pytest-xdist's
    workers start on the long end-to-end tests and finish on short ones together, instead of
    one worker running a long test alone at the end (longest first is the classic rule for
    keeping parallel workers busy). One at a time (``--maxschedchunk 1``, set in
    `pytest_configure` unless given): xdist's default first hands each worker a block of a
    quarter of its share of consecutive tests, which would give every slow test to the
    first worker.

    Among the slow tests, the reproduce smoke (``slow(programs="smoke")``) starts first and
    the tests that compile the smoke's programs again (``slow(programs="after smoke")``:
    its flags, another process) start after the other slow tests, by when the smoke has put
    those programs in the run's XLA cache: they load them instead of compiling them at the
    same time as the smoke.

    A value computed once per run (`once_per_run`) is computed by the first test that asks
    for it, while any other worker asking for it waits: the first test of a module that
    uses one starts among the slow tests (order 1 at the latest) and the module's others
    come with the rest (order 3), so they find it made instead of waiting for it."""
    rank, first = {}, set()
    for item in items:
        rank[item.nodeid] = _order(item)
        if "once_per_run" in item.fixturenames:
            if item.module.__name__ in first:
                rank[item.nodeid] = 3
            else:
                first.add(item.module.__name__)
                rank[item.nodeid] = min(rank[item.nodeid], 1)
    items.sort(key=lambda item: rank[item.nodeid])


@pytest.fixture(autouse=True)
def _float32_matmuls():
    """Matrix products at full float32 precision in every test, on backends where JAX's default
    is lower (bf16 passes on a TPU, TF32 on a GPU); a CPU computes them in float32 either way,
    so there nothing is set. Scoped to each test, not set for the process: the precision is
    written into every program's HLO, and a process-wide setting (four test modules had one,
    run at collection, so in effect for every test in a worker) made each program compiled in
    the test workers differ from the same program compiled by the entry points the tests
    start: none could be loaded from the run's XLA cache."""
    import jax

    if jax.default_backend() == "cpu":
        yield
        return
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture
def session_xla_cache():
    """The test run's cache directory; re-enabled after the test (for tests that point JAX elsewhere)."""
    yield _STATE["path"]
    xla_cache.enable(_STATE["path"])


@pytest.fixture(scope="session")
def once_per_run(request, tmp_path_factory):
    """``once_per_run(name, make)``: ``(folder, make(folder))`` computed once per test run and
    shared by pytest-xdist's workers: the first worker to get there calls ``make`` (its
    result JSON-able) in a folder of the run's base temporary directory under a file lock;
    the others wait and read the result back. Without xdist, the folder is this run's."""
    import json
    import pathlib

    import filelock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if hasattr(request.config, "workerinput") else base  # the workers' shared parent

    def run(name: str, make):
        done = root / f"{name}.json"
        with filelock.FileLock(str(done) + ".lock"):
            if not done.exists():
                folder = root / name
                folder.mkdir(exist_ok=True)
                done.write_text(json.dumps({"folder": str(folder), "out": make(folder)}))
        d = json.loads(done.read_text())
        return pathlib.Path(d["folder"]), d["out"]

    return run


@pytest.fixture
def figures_not_drawn(monkeypatch):
    """For tests of a report's text and data in this process: `bnjax.plots.save` closes each
    figure without laying it out or writing its PNG (about 0.4 s a figure on 2 cores, 3-5 s a
    report), and records the path it was asked to write; the fixture's value is that list.
    The figures themselves are asserted where they are drawn: the reproduce smoke's
    command-line invocation (every figure its report links), the natural-image tiers' grid."""
    from bnjax import plots

    asked: list[str] = []

    def close(fig, path):
        plots.plt.close(fig)
        asked.append(str(path))
        return path

    monkeypatch.setattr(plots, "save", close)
    return asked
