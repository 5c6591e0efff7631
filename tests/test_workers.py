"""Worker processes (``reproduce --workers N``): cores split disjointly, a worker trains only
what nobody holds and never waits, the analysing process collects the rest, and a suite
trained by two single-core workers records and reports its core count and re-renders
byte for byte."""

import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest

from bnjax import pool, runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.progress import SuiteProgress
from experiments import _workers, reproduce

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_core_sets_split_the_cores_disjointly(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 0, 1, 2, 3}, raising=False)
    assert _workers.core_sets(2) == [[0, 1, 2], [3, 4]]
    assert _workers.core_sets(5) == [[0], [1], [2], [3], [4]]
    assert _workers.core_sets(1) == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="may run on 5 core"):
        _workers.core_sets(6)
    with pytest.raises(ValueError, match=">= 1"):
        _workers.core_sets(0)
    assert _workers.parse_worker("1/2@2,3") == (1, 2, [2, 3])


def test_a_worker_argv_drops_the_workers_flag_only():
    argv = ["--data", "mnist", "--workers", "2", "--seeds", "1", "--workers=3", "--quiet"]
    assert reproduce._without_workers(argv) == ["--data", "mnist", "--seeds", "1", "--quiet"]


def _cfg() -> TrainConfig:
    return TrainConfig(model=ModelConfig(arch="mlp", hidden=(16,), norm="batch", activation="relu"),
                       optim=OptimConfig(name="momentum", learning_rate=0.05),
                       data=DataConfig(source="digits", batch_size=16), steps=10, eval_every=5)


def test_a_worker_leaves_held_runs_and_the_analyser_collects_them(tmp_path):
    p = str(tmp_path / "pool")
    held = pool.run_dir(p, dataclasses.replace(_cfg(), seed=1))
    os.makedirs(held)
    lock = runlog.RunLock(held)  # another process trains seed 1
    assert pool.train_unheld({"a": _cfg()}, [0, 1, 2], p) == 2  # returns at once: no waiting
    assert not os.path.exists(os.path.join(held, "results.json"))
    assert pool.train_unheld({"a": _cfg()}, [0, 1, 2], p) == 0  # finished ones are read back, not trained
    stamps = {s: os.path.getmtime(os.path.join(pool.run_dir(p, dataclasses.replace(_cfg(), seed=s)),
                                               "results.json")) for s in (0, 2)}
    lock.release()
    tracker = SuiteProgress(3, bar=False)
    runs = pool.run_arms({"a": _cfg()}, [0, 1, 2], p, progress=False, tracker=tracker)["a"]
    assert [r.seed for r in runs] == [0, 1, 2] and tracker.trained == 1  # only the held run trains here
    assert stamps == {s: os.path.getmtime(os.path.join(runs[s].workdir, "results.json")) for s in (0, 2)}


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="two workers need two cores and CPU affinity (Linux)")
def test_reproduce_with_two_workers_trains_each_run_once_on_one_core(tmp_path):
    wd = str(tmp_path / "rep")
    # the reproduce smoke test's flags (tests/test_experiments.py): the depth section's programs are compiled once
    cmd = [sys.executable, "-m", "experiments.reproduce", "--quick", "--only", "depth", "--seeds", "1", "--steps",
           "3", "--quiet", "--workers", "2", "--workdir", wd]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = glob.glob(os.path.join(wd, "runs", "*", "seed_0"))
    status = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(wd, "workers", "worker_*.json")))]
    assert [s["cores"] for s in status] == [[c] for c in sorted(os.sched_getaffinity(0))[:2]]
    assert sum(s["sections"]["depth"]["trained"] for s in status) == len(runs) == 4  # each run once
    for r in runs:  # trained by a one-core process, recorded as such; no run directory left locked
        assert runlog.read_json(os.path.join(r, "meta.json"))["cpu_cores"] == 1 and not runlog.is_locked(r)
    report = open(os.path.join(wd, "report.md")).read()
    assert "1 core (4 runs)" in report and "--workers 2" in report and "| worker 1 (cores " in report
    assert "waiting for runs other processes train" in report
    suite = json.load(open(os.path.join(wd, "suite.json")))  # the breakdown adds up to the section's wall time
    wall, parts = suite["seconds"]["depth"], sum(suite["time_s"]["depth"].values())
    assert abs(parts - wall) <= 0.5 + 0.02 * wall and suite["time_s"]["depth"]["wait"] > 0.5 * wall
    for w in suite["workers"]:  # a worker's "other" column is the rest of its wall time, never negative
        sec = w["sections"]["depth"]
        assert 0 <= sec["seconds"] - sum(sec["time_s"].values()) <= 0.5 + 0.05 * sec["seconds"]
    # the analysing process counted each run once, as the workers finished them
    assert proc.stdout.count(": trained in ") == 4 and "[4/4]" in proc.stdout
    redo = subprocess.run([sys.executable, "-m", "experiments.reproduce", "--reanalyze", "--workdir", wd], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert redo.returncode == 0, redo.stderr
    assert open(os.path.join(wd, "report.md")).read() == report  # no workers started, the same report


def test_the_eta_divides_by_the_processes_training_at_once(capsys):
    one, two = SuiteProgress(4, bar=False), SuiteProgress(4, bar=False, parallel=2)
    for t in (one, two):
        t.finished("a", "a seed 0", 10.0, trained=True)
        t.finished("b", "b seed 0", 0.0, trained=False)  # read back: no time, still done
    assert one.eta_s() == 20.0 and two.eta_s() == 10.0  # 10 s per trained run, 2 runs left


def test_a_worker_that_starts_halfway_trains_the_other_programs_first(tmp_path):
    p = str(tmp_path / "pool")
    arms = {"a": _cfg(), "b": dataclasses.replace(_cfg(), model=dataclasses.replace(_cfg().model, hidden=(8,)))}
    assert pool.train_unheld(arms, [0, 1], p, start=0.5) == 4
    done = {(arm, s): os.stat(os.path.join(pool.run_dir(p, dataclasses.replace(cfg, seed=s)), "results.json"))
            .st_mtime_ns for arm, cfg in arms.items() for s in (0, 1)}
    assert sorted(done, key=done.get) == [("b", 0), ("b", 1), ("a", 0), ("a", 1)]
    with pytest.raises(ValueError, match="start must be in"):
        pool.train_unheld(arms, [0], p, start=1.0)
