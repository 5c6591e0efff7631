"""The persistent XLA cache: where it lives (flag, environment, XDG, home), that a program
loaded from it computes bitwise what a fresh compile does, that the time breakdown
counts loaded programs apart from compiled ones, that two processes compiling the same
programs into one cache at once both finish and leave loadable entries, and that the
cache stays under its size bound."""

import hashlib
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bnjax import fit, timing, xla_cache
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from experiments import _cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a BN net with augmentation and dropout (its matrix products are where XLA's CPU threads split sums)
CFG = TrainConfig(model=ModelConfig(arch="mlp", hidden=(32, 32), norm="batch", activation="relu", dropout=0.1),
                  optim=OptimConfig(name="momentum", learning_rate=0.05),
                  data=DataConfig(source="digits", batch_size=32, augment="rotate:10"), steps=12, eval_every=6)


def test_the_cache_directory_follows_flag_then_environment_then_xdg_then_home():
    env = {"HOME": "/h", "XDG_CACHE_HOME": "/x", xla_cache.ENV: "/e"}
    assert xla_cache.resolve("/flag", env) == "/flag"
    assert xla_cache.resolve(None, env) == "/e"
    assert xla_cache.resolve(None, {"HOME": "/h", "XDG_CACHE_HOME": "/x"}) == "/x/bnjax/xla"
    assert xla_cache.resolve(None, {"HOME": "/h"}) == "/h/.cache/bnjax/xla"
    assert xla_cache.resolve(None, {"HOME": "/h", xla_cache.ENV: ""}) == "/h/.cache/bnjax/xla"
    assert xla_cache.resolve("off", env) is None and xla_cache.resolve(None, {xla_cache.ENV: "off"}) is None
    assert xla_cache.resolve("rel/dir", {}) == os.path.abspath("rel/dir")


def test_cache_flags_reach_every_entry_point_and_refuse_nonsense(tmp_path, capsys, session_xla_cache):
    p = _cli.parser("doc")
    args = _cli.parse(p, ["--xla-cache", str(tmp_path / "c")])
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c") and os.path.isdir(tmp_path / "c")
    args = _cli.parse(p, ["--no-xla-cache"])
    assert _cli.cache_dir(args) is None and not jax.config.jax_enable_compilation_cache
    with pytest.raises(SystemExit) as e:
        _cli.parse(p, ["--no-xla-cache", "--xla-cache", str(tmp_path)])
    assert e.value.code == 2 and "give one of them" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:
        _cli.parse(p, ["--xla-cache", str(tmp_path / "file" / "sub")])
    assert e.value.code == 2 and "cannot be created" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_bytes"):
        xla_cache.enable(str(tmp_path), max_bytes=0)


def _digest(result) -> str:
    leaves = jax.tree_util.tree_leaves(jax.device_get((result.state.params, result.state.batch_stats)))
    return hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in leaves)).hexdigest()


def _fit(cache: str | None) -> tuple[str, dict, timing.Phases]:
    xla_cache.enable(cache)
    jax.clear_caches()  # nothing compiled in this process is reused from memory
    phases = timing.Phases()
    r = fit(CFG, progress=False, phases=phases)
    return _digest(r), r.summary, phases


@pytest.mark.slow
def test_a_loaded_program_computes_bitwise_what_a_fresh_compile_does(tmp_path, session_xla_cache):
    compiled, s1, p1 = _fit(str(tmp_path))  # an empty cache: every program compiled, and written
    loaded, s2, p2 = _fit(str(tmp_path))
    assert compiled == loaded and s1["final_test_accuracy"] == s2["final_test_accuracy"]
    assert p1.programs["loaded"] == 0 and p1.seconds["cache"] == 0 and p1.programs["compiled"] >= 3
    assert p2.programs == {"compiled": 0, "loaded": p1.programs["compiled"]}  # every program loaded
    assert p2.seconds["cache"] > 0
    assert p2.seconds["compile"] < p1.seconds["compile"]  # tracing and lowering remain
    store = xla_cache.store_dir(str(tmp_path))  # entries per host processor
    assert os.path.dirname(store) == str(tmp_path) and os.path.basename(store).startswith("host-")
    assert len([f for f in os.listdir(store) if f.endswith("-cache")]) >= p1.programs["compiled"]
    off, s0, p0 = _fit(None)  # no cache at all: the same bits
    assert off == compiled and p0.programs == p1.programs and p0.seconds["cache"] == 0


_CHILD = """
import hashlib, sys, jax, numpy as np
from bnjax import fit, timing, xla_cache
sys.path.insert(0, {root!r})
from tests.test_xla_cache import CFG, _digest
xla_cache.enable(sys.argv[1])
phases = timing.Phases()
r = fit(CFG, progress=False, phases=phases)
print(_digest(r), phases.programs["compiled"], phases.programs["loaded"])
"""


@pytest.mark.slow
def test_two_processes_compiling_into_one_cache_at_once_both_finish(tmp_path, session_xla_cache):
    code = _CHILD.format(root=ROOT)
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert not any("Error" in o[1] for o in outs), [o[1][-2000:] for o in outs]  # no failed cache write or read
    lines = [o[0].split() for o in outs]
    # a third process (a clean JAX config, as the two had: this one's may carry other tests' settings)
    third = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=300).stdout.split()
    assert lines[0][0] == lines[1][0] == third[0]
    assert third[1] == "0" and int(third[2]) >= 3  # everything the two wrote loads


def test_the_cache_stays_within_its_size_bound(tmp_path, session_xla_cache):
    bound = 400_000
    xla_cache.enable(str(tmp_path), max_bytes=bound)
    for k in range(12):  # distinct programs, each a few tens of kB
        jax.jit(lambda x, k=k: jax.numpy.sin(x) * k + jax.numpy.cumsum(x) ** (k % 3))(np.ones(64 + k))
    entries = [e.stat().st_size for e in os.scandir(xla_cache.store_dir(str(tmp_path))) if e.name.endswith("-cache")]
    assert entries and sum(entries) <= bound
    assert xla_cache.size_bytes(str(tmp_path)) == sum(entries)


def test_the_store_evicts_the_least_recently_used_entries_and_writes_whole_files(tmp_path):
    store = xla_cache.DirectoryStore(str(tmp_path), max_bytes=250)
    for key in ("a", "b", "c"):
        store.put(key, key.encode() * 80)
        os.utime(tmp_path / f"{key}-cache", ns=(0, {"a": 1, "b": 2, "c": 3}[key] * 10**9))  # written in this order
    assert store.get("a") == b"a" * 80  # a read counts as use: "a" is now the newest
    store.put("d", b"d" * 80)  # 320 bytes > 250: the least recently used ("b") goes
    entries = lambda: sorted(p.name[:-6] for p in tmp_path.iterdir() if p.name.endswith("-cache"))  # noqa: E731
    assert entries() == ["a", "c", "d"]
    store.put("e", b"e" * 80)  # then "c", the oldest left
    assert entries() == ["a", "d", "e"]
    assert store.get("b") is None and store.get("d") == b"d" * 80
    store.put("d", b"other")  # an existing entry is kept as it is
    assert store.get("d") == b"d" * 80
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # no partial file left behind
    with pytest.raises(ValueError, match="key cannot be empty"):
        store.get("")


def test_each_host_processor_has_its_own_entries(tmp_path, monkeypatch, session_xla_cache):
    here = xla_cache.store_dir(str(tmp_path))
    assert xla_cache.host_signature() == xla_cache.host_signature() and len(xla_cache.host_signature()) == 12
    monkeypatch.setattr(xla_cache, "host_signature", lambda: "another-cpu")
    xla_cache.enable(str(tmp_path))
    jax.jit(lambda x: x * 3 + 1)(np.ones(5))
    assert os.path.isdir(tmp_path / "host-another-cpu") and xla_cache.store_dir(str(tmp_path)) != here
    assert [f for f in os.listdir(tmp_path / "host-another-cpu") if f.endswith("-cache")]
