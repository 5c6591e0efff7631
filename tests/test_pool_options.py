"""The pool's options beyond its queue (tests/test_pool_queue.py, whose recording trainer
these tests use): the steps override in every function that names runs, what
`train_unheld` hands the trainer, the seconds added to a caller's timing (against the
trainer's and the wait's own clocks), the validation split checked for staleness, the runs
mode "auto" resolves to, and what a stale or missing run is told."""

import dataclasses
import os
import threading
import time

import pytest

from bnjax import config as config_lib
from bnjax import events, pool, runlog
from tests.test_pool_queue import WAIT_S, Trainer, _cfg, _release_when_waited_for, _run_arms, _write_run, trainer  # noqa: F401  (fixture)


def _seeded(cfg, seed, steps=None):
    cfg = dataclasses.replace(cfg, seed=seed)
    if steps is None:
        return cfg
    return dataclasses.replace(cfg, steps=steps, eval_every=min(cfg.eval_every, steps),
                               checkpoint_every=min(cfg.checkpoint_every, steps))


def test_every_function_that_names_runs_names_those_of_the_steps_override(tmp_path, trainer):
    root, arms = str(tmp_path / "pool"), {"a": _cfg(16, steps=10)}
    rdir = _run_arms(tmp_path, arms, [0], steps=3)["a"][0].workdir
    assert rdir == pool.run_dir(root, _seeded(arms["a"], 0, steps=3)) != pool.run_dir(root, _seeded(arms["a"], 0))
    assert pool.run_dirs(arms, [0], root, steps=3) == [rdir]
    assert pool.run_labels(arms, [0], root, steps=3) == {rdir: "a seed 0"}
    assert pool.read_runs(arms, [0], root, steps=3)["a"][0].workdir == rdir
    with pytest.raises(pool.MissingRunsError):
        pool.read_runs(arms, [0], root)  # the 10-step run was never trained
    stored = runlog.read_json(os.path.join(rdir, "config.json"))
    stored["optim"]["learning_rate"] = 0.5
    runlog.write_json(os.path.join(rdir, "config.json"), stored)
    assert pool.stale_runs(arms, [0], root, steps=3) == {rdir: ["config (optim.learning_rate)"]}
    assert pool.stale_runs(arms, [0], root) == {}  # nothing stored for the 10-step run
    trainer.calls.clear()
    assert pool.train_unheld(arms, [1], root, steps=3) == 1
    assert trainer.calls[0].dirs == [pool.run_dir(root, _seeded(arms["a"], 1, steps=3))]


def test_train_unheld_hands_on_its_count_progress_mode_phases_and_view(tmp_path, trainer):
    from bnjax.timing import Phases

    root, view, phases = str(tmp_path / "pool"), str(tmp_path / "view"), Phases()
    assert pool.train_unheld({"a": _cfg(16)}, [0, 1], root) == 2
    assert [(c.desc, c.progress, c.runs) for c in trainer.calls] == [("[1/2] a seed 0", False, "sequential"),
                                                                     ("[2/2] a seed 1", False, "sequential")]
    trainer.calls.clear()
    assert pool.train_unheld({"w": _cfg(24)}, [0, 1], root, progress=True, runs="together", phases=phases,
                             view=view) == 2
    (call,) = trainer.calls
    assert (call.desc, call.progress, call.runs, call.phases) == ("[1/2] w (2 runs)", True, "together", phases)
    assert phases.seconds.get("data", 0.0) > 0.0
    for rdir, seed in zip(call.dirs, (0, 1), strict=True):  # each run writes its events into the view
        assert os.path.abspath(events.logdir_of(rdir)) == os.path.abspath(events.view_dir(view, "w", seed))


def test_run_arms_shows_progress_unless_told_not_to(tmp_path, trainer):
    pool.run_arms({"a": _cfg(16)}, [0], str(tmp_path / "pool"))
    assert trainer.calls[0].progress is True


def test_the_seconds_trained_and_waited_are_added_to_the_callers_own(tmp_path, monkeypatch):
    """``timing`` gains what the pool measured: the training calls' wall time (against the
    trainer's own clock) and the wait for a held run (against the wait's own clock),
    from zero where the caller had nothing, else added to what it had."""
    root, spent, timers, holders = str(tmp_path / "pool"), {}, [], {}
    real_trainer, real_wait = Trainer(), runlog.wait_unlocked

    def timed(key, fn):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
        return call

    def wait(rdir):  # the holder finishes WAIT_S after the pool starts waiting for it
        cfg, lock = holders[rdir]
        timers.append(threading.Timer(WAIT_S, lambda: (_write_run(rdir, cfg, pool.load_dataset(cfg)),
                                                       lock.release())))
        timers[-1].start()
        real_wait(rdir)

    monkeypatch.setattr(pool, "fit_group", timed("train", real_trainer))
    monkeypatch.setattr(runlog, "wait_unlocked", timed("wait", wait))
    for seeds, timing in (([0, 1], {}), ([2, 3], {"train_wall_s": 7.0, "wait_s": 5.0})):
        had, held_cfg = dict(timing), _seeded(_cfg(16), seeds[0])  # the first seed is another process's
        held = pool.run_dir(root, held_cfg)
        os.makedirs(held)
        holders[held] = (held_cfg, runlog.RunLock(held))
        spent.clear()
        try:
            _run_arms(tmp_path, {"a": _cfg(16)}, seeds, timing=timing)
        finally:
            for t in timers:
                t.join()
        assert [c.seeds for c in real_trainer.calls][-1] == seeds[1:] and spent["wait"] >= WAIT_S
        assert timing["train_wall_s"] - had.get("train_wall_s", 0.0) == pytest.approx(spent["train"], abs=0.25)
        assert timing["wait_s"] - had.get("wait_s", 0.0) == pytest.approx(spent["wait"], abs=0.25)


def test_a_run_made_on_another_validation_split_is_stale_and_says_why(tmp_path, trainer, capsys):
    root = str(tmp_path / "pool")
    rdir = _run_arms(tmp_path, {"a": _cfg(16)}, [0])["a"][0].workdir
    meta = runlog.read_json(os.path.join(rdir, "meta.json"))
    meta["split"]["val_indices_checksum"] = "another"
    runlog.write_json(os.path.join(rdir, "meta.json"), meta)
    assert pool.stale_runs({"a": _cfg(16)}, [0], root) == {rdir: ["validation split (its indices differ)"]}
    stored = runlog.read_json(os.path.join(rdir, "config.json"))
    stored["optim"]["learning_rate"] = 0.5
    runlog.write_json(os.path.join(rdir, "config.json"), stored)
    capsys.readouterr()
    trainer.calls.clear()
    _run_arms(tmp_path, {"a": _cfg(16)}, [0])
    out = capsys.readouterr().out
    assert f"stale run {rdir} (config (optim.learning_rate), validation split (its indices differ)): moved to " \
           f"{os.path.join(os.path.dirname(rdir), 'stale', 'seed_0-')}" in out and ", training it again" in out
    assert trainer.calls[0].dirs == [rdir]


def test_a_run_two_arms_share_does_not_stop_the_arms_after_them(tmp_path, trainer):
    out = _run_arms(tmp_path, {"a": _cfg(16), "same": _cfg(16), "w": _cfg(24)}, [0])
    assert [c.desc for c in trainer.calls] == ["[1/2] a seed 0", "[2/2] w seed 0"]
    assert out["w"][0].workdir == pool.run_dir(str(tmp_path / "pool"), _seeded(_cfg(24), 0))


def test_set_aside_puts_several_runs_of_one_config_under_one_stale_folder(tmp_path):
    for seed in (0, 1):
        rdir = tmp_path / "h" / f"seed_{seed}"
        rdir.mkdir(parents=True)
        dest = pool.set_aside(str(rdir))  # the second finds h/stale already there
        assert os.path.dirname(dest) == str(tmp_path / "h" / "stale") and not rdir.exists()
    assert sorted(n.split("-")[0] for n in os.listdir(tmp_path / "h" / "stale")) == ["seed_0", "seed_1"]


def test_a_run_started_but_unfinished_is_missing_and_named(tmp_path, trainer):
    root = str(tmp_path / "pool")
    _run_arms(tmp_path, {"a": _cfg(16)}, [0])
    unfinished = pool.run_dir(root, _seeded(_cfg(16), 1))
    runlog.prepare(unfinished, _seeded(_cfg(16), 1))  # its config written, no results: interrupted
    with pytest.raises(pool.MissingRunsError) as e:
        pool.read_runs({"a": _cfg(16)}, [0, 1], root)
    assert str(e.value) == ("1 run(s) are missing from the pool, so the report cannot be re-rendered without "
                            f"training:\n  a seed 1: {unfinished}")


def test_auto_trains_together_on_an_accelerator(monkeypatch):
    import jax

    for backend, mode in (("gpu", "together"), ("tpu", "together"), ("cpu", "sequential")):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert pool.resolve_runs("auto") == mode


def test_a_stale_run_another_process_took_first_is_waited_for_not_read_back(tmp_path, trainer, monkeypatch):
    """Between the staleness check and moving the run aside, another process took the run
    (to set it aside and train it again itself): its stale record, still there for a
    moment, is not read back as a result; the run is waited for and its new record read."""
    run = _run_arms(tmp_path, {"a": _cfg(16)}, [0])["a"][0]
    stored = runlog.read_json(os.path.join(run.workdir, "config.json"))
    stored["optim"]["learning_rate"] = 0.5
    runlog.write_json(os.path.join(run.workdir, "config.json"), stored)
    holder = {}

    def taken(rdir):  # the other process's lock comes first
        holder["lock"] = runlog.RunLock(rdir)
        raise runlog.RunLockedError(f"{rdir} is in use by another process")

    def retrained():  # the other process trains it again and lets go
        try:
            runlog.write_json(os.path.join(run.workdir, "config.json"), config_lib.to_dict(_cfg(16)))
            runlog.write_json(os.path.join(run.workdir, "results.json"), {"train_seconds": 9.0, "steps": 10})
        finally:
            holder["lock"].release()

    monkeypatch.setattr(pool, "set_aside", taken)
    timers = _release_when_waited_for(monkeypatch, retrained)
    trainer.calls.clear()
    try:
        out = _run_arms(tmp_path, {"a": _cfg(16)}, [0])
    finally:
        for t in timers:
            t.join()
    assert len(timers) == 1 and trainer.calls == []
    assert out["a"][0].summary == {"train_seconds": 9.0, "steps": 10}
