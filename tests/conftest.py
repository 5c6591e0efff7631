"""One XLA compilation cache for the whole test run, fresh for each run (so a CI run pays
a cold start honestly): this process uses it, and the entry points and worker processes
the tests start find it through ``$BNJAX_XLA_CACHE``. Programs that several tests (and
their subprocesses) build are compiled once."""

import os
import shutil
import tempfile

import pytest

from bnjax import xla_cache

_STATE: dict = {}


def pytest_configure(config):
    path = tempfile.mkdtemp(prefix="bnjax-test-xla-")
    _STATE.update(path=path, env=os.environ.get(xla_cache.ENV))
    os.environ[xla_cache.ENV] = path
    xla_cache.enable(path)


def pytest_unconfigure(config):
    if _STATE.get("env") is None:
        os.environ.pop(xla_cache.ENV, None)
    else:
        os.environ[xla_cache.ENV] = _STATE["env"]
    shutil.rmtree(_STATE.get("path", ""), ignore_errors=True)


@pytest.fixture
def session_xla_cache():
    """The test run's cache directory; re-enabled after the test (for tests that point JAX elsewhere)."""
    yield _STATE["path"]
    xla_cache.enable(_STATE["path"])
