"""The pool's bookkeeping around training, with the trainer replaced by a recorder that
writes what a real run writes (config, meta, metrics, results): which groups are trained,
in which order and under which label; what is read back, waited for, left to another
process or retried; the times, the progress told to the tracker and the TensorBoard views.
The real trainer's numbers are tested elsewhere (tests/test_pool.py trains for real)."""

import dataclasses
import hashlib
import json
import os
import re
import threading
import time
from types import SimpleNamespace

import pytest

from bnjax import config as config_lib
from bnjax import events, pool, runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.stats import Run
from bnjax.timing import Phases

SLEEP_S = 0.05  # each recorded training call takes at least this long
WAIT_S = 0.4  # how long a held run's holder keeps it once waited for


def _cfg(hidden: int = 16, steps: int = 10) -> TrainConfig:
    return TrainConfig(model=ModelConfig(arch="mlp", hidden=(hidden,), norm="batch", activation="relu"),
                       optim=OptimConfig(name="momentum", learning_rate=0.05),
                       data=DataConfig(source="digits", batch_size=16), steps=steps, eval_every=5,
                       checkpoint_every=8)


def _summary(cfg: TrainConfig) -> dict:
    return {"train_seconds": 1.0 + cfg.seed, "final_test_accuracy": 0.5 + cfg.seed / 100, "steps": cfg.steps}


class Trainer:
    """Stands in for `bnjax.loop.fit_group`: records each call and writes each run as a
    real one is written (so the pool's staleness checks pass on the next call).

    Args:
      locked_once: run directories whose first training call raises RunLockedError, as
        when another process took the run between the check and the training.
    """

    def __init__(self, locked_once=()):
        self.calls, self.locked_once = [], set(locked_once)

    def __call__(self, cfgs, workdirs, *, dataset, device_data, progress, desc, runs, phases):
        self.calls.append(SimpleNamespace(seeds=[c.seed for c in cfgs], dirs=list(workdirs), desc=desc, runs=runs,
                                          progress=progress, dataset=dataset, device_data=device_data,
                                          phases=phases))
        taken = self.locked_once & set(workdirs)
        if taken:
            self.locked_once -= taken
            raise runlog.RunLockedError(f"{sorted(taken)[0]} is in use by another process")
        time.sleep(SLEEP_S)
        return [_write_run(d, cfg, dataset) for cfg, d in zip(cfgs, workdirs, strict=True)]


def _write_run(rdir: str, cfg: TrainConfig, dataset) -> SimpleNamespace:
    runlog.prepare(rdir, cfg)
    runlog.update_meta(rdir, split=dataset.split, data_fingerprint=dataset.fingerprint)
    runlog.begin_segment(rdir, from_step=0, code_version=runlog.code_version())
    history = [{"step": cfg.steps, "test_accuracy": 0.5 + cfg.seed / 100, "train_loss": 1.0}]
    for rec in history:
        runlog.append_metrics(rdir, rec)
    summary = _summary(cfg)
    runlog.write_json(os.path.join(rdir, "results.json"), summary)
    return SimpleNamespace(history=history, summary=summary)


class Tracker:
    """Records what `bnjax.progress.SuiteProgress.finished` is told."""

    def __init__(self):
        self.told = []

    def finished(self, key, label, seconds, *, trained, accuracy=None):
        self.told.append((key, label, seconds, trained, accuracy))


@pytest.fixture
def trainer(monkeypatch):
    t = Trainer()
    monkeypatch.setattr(pool, "fit_group", t)
    return t


def _run_arms(tmp_path, arms, seeds, **kw):
    return pool.run_arms(arms, seeds, str(tmp_path / "pool"), progress=False, **kw)


def test_each_run_is_trained_once_in_order_with_its_count_and_read_back_after(tmp_path, trainer):
    arms = {"b": _cfg(16), "a": _cfg(24)}
    tracker, timing = Tracker(), {}
    out = _run_arms(tmp_path, arms, [0, 1], tracker=tracker, timing=timing)
    assert [c.desc for c in trainer.calls] == ["[1/4] b seed 0", "[2/4] b seed 1", "[3/4] a seed 0",
                                               "[4/4] a seed 1"]
    assert all(c.runs == "sequential" and c.progress is False for c in trainer.calls)
    first = trainer.calls[0]
    assert first.dataset.name == "digits" and first.device_data is not None
    assert all(c.dataset is first.dataset for c in trainer.calls)  # one data set loaded for the arms that share it
    assert list(out) == ["b", "a"]
    for arm in arms:
        for seed, run in zip([0, 1], out[arm], strict=True):
            cfg = dataclasses.replace(arms[arm], seed=seed)
            assert run == Run(arm, seed, cfg, run.history, _summary(cfg), pool.run_dir(str(tmp_path / "pool"), cfg))
            assert run.history[0]["test_accuracy"] == 0.5 + seed / 100
    assert [t[1:] for t in tracker.told] == [(f"{arm} seed {s}", 1.0 + s, True, 0.5 + s / 100)
                                            for arm in ("b", "a") for s in (0, 1)]
    assert [t[0] for t in tracker.told] == [r.workdir for arm in ("b", "a") for r in out[arm]]
    assert 4 * SLEEP_S <= timing["train_wall_s"] < 4 * SLEEP_S + 30

    trainer.calls.clear()
    tracker = Tracker()
    again = _run_arms(tmp_path, arms, [0, 1], tracker=tracker, timing={})
    assert trainer.calls == [] and again == out  # read back from the records, nothing trained
    assert [t[1:] for t in tracker.told] == [(f"{arm} seed {s}", 0.0, False, None) for arm in ("b", "a")
                                            for s in (0, 1)]
    assert [t[0] for t in tracker.told] == [r.workdir for arm in ("b", "a") for r in out[arm]]  # counted by run


def test_together_groups_the_runs_of_one_program_and_counts_from_the_runs_already_done(tmp_path, trainer):
    arms = {"a": _cfg(16), "w": _cfg(24)}
    _run_arms(tmp_path, {"a": _cfg(16)}, [0], runs="together")
    assert [c.desc for c in trainer.calls] == ["[1/1] a seed 0"] and trainer.calls[0].runs == "together"
    trainer.calls.clear()
    out = _run_arms(tmp_path, arms, [0, 1, 2], runs="together")
    assert [(c.desc, c.seeds) for c in trainer.calls] == [("[2/6] a (2 runs)", [1, 2]), ("[4/6] w (3 runs)", [0, 1, 2])]
    assert [r.seed for r in out["a"]] == [0, 1, 2] and [r.seed for r in out["w"]] == [0, 1, 2]
    # two arms of one program train as one group, named both
    trainer.calls.clear()
    lr = dataclasses.replace(_cfg(16), optim=dataclasses.replace(_cfg(16).optim, lr_multiplier=5.0))
    _run_arms(tmp_path, {"x5": lr, "x1": _cfg(16)}, [7], runs="together")
    assert [c.desc for c in trainer.calls] == ["[1/2] x1, x5 (2 runs)"]


def _release_when_waited_for(monkeypatch, release) -> list:
    """The holder lets go 0.4 s after the pool starts waiting for it (the real wait blocks
    on the real lock until then); returns the timers started."""
    timers, real_wait = [], runlog.wait_unlocked

    def wait(rdir):
        timers.append(threading.Timer(WAIT_S, release))
        timers[-1].start()
        real_wait(rdir)

    monkeypatch.setattr(runlog, "wait_unlocked", wait)
    return timers


def test_a_held_group_is_trained_last_then_waited_for_and_read_back(tmp_path, trainer, capsys, monkeypatch):
    """The group another process holds goes to the back of the queue; when it is all that
    is left, this process waits for the lock and reads back what the holder wrote."""
    root = str(tmp_path / "pool")
    held_cfg = dataclasses.replace(_cfg(16), seed=0)
    held = pool.run_dir(root, held_cfg)
    os.makedirs(held)
    lock = runlog.RunLock(held)
    dataset = pool.load_dataset(held_cfg)

    def holder_finishes():
        _write_run(held, held_cfg, dataset)
        lock.release()

    timers = _release_when_waited_for(monkeypatch, holder_finishes)
    tracker, timing = Tracker(), {}
    try:
        out = _run_arms(tmp_path, {"a": _cfg(16)}, [0, 1], tracker=tracker, timing=timing)
    finally:
        for t in timers:
            t.join()
    assert len(timers) == 1
    assert [c.seeds for c in trainer.calls] == [[1]]  # seed 0 was the other process's
    assert f"waiting for 1 run(s) another process is training ({held} ...)" in capsys.readouterr().out
    assert WAIT_S <= timing["wait_s"] < WAIT_S + 30
    assert out["a"][0].summary == _summary(held_cfg) and out["a"][0].workdir == held
    assert [(t[1], t[3]) for t in tracker.told] == [("a seed 1", True), ("a seed 0", False)]


def test_a_group_whose_holder_died_unfinished_is_trained_after_the_wait(tmp_path, trainer, monkeypatch):
    root = str(tmp_path / "pool")
    held = pool.run_dir(root, dataclasses.replace(_cfg(16), seed=0))
    os.makedirs(held)
    lock = runlog.RunLock(held)
    timers = _release_when_waited_for(monkeypatch, lock.release)  # the holder dies: its lock goes, nothing written
    try:
        out = _run_arms(tmp_path, {"a": _cfg(16)}, [0, 1])
    finally:
        for t in timers:
            t.join()
    assert len(timers) == 1
    assert [c.seeds for c in trainer.calls] == [[1], [0]]
    assert [r.summary for r in out["a"]] == [_summary(dataclasses.replace(_cfg(16), seed=s)) for s in (0, 1)]


def test_a_group_taken_between_check_and_training_is_retried_or_left(tmp_path, monkeypatch):
    root = str(tmp_path / "pool")
    first = pool.run_dir(root, dataclasses.replace(_cfg(16), seed=0))
    trainer = Trainer(locked_once=[first])
    monkeypatch.setattr(pool, "fit_group", trainer)
    out = _run_arms(tmp_path, {"a": _cfg(16)}, [0, 1])
    assert [c.seeds for c in trainer.calls] == [[0], [1], [0]]  # retried after the rest
    assert [c.desc for c in trainer.calls] == ["[1/2] a seed 0", "[1/2] a seed 1", "[2/2] a seed 0"]
    assert [r.seed for r in out["a"]] == [0, 1]

    trainer = Trainer(locked_once=[pool.run_dir(root, dataclasses.replace(_cfg(16), seed=5))])
    monkeypatch.setattr(pool, "fit_group", trainer)
    n = pool.train_unheld({"a": _cfg(16)}, [5, 6], root)
    assert n == 1 and [c.seeds for c in trainer.calls] == [[5], [6]]  # left to whoever holds it
    assert not os.path.exists(os.path.join(pool.run_dir(root, dataclasses.replace(_cfg(16), seed=5)),
                                           "results.json"))


def test_train_unheld_starts_where_asked_leaves_held_runs_and_counts_what_it_trained(tmp_path, trainer):
    root = str(tmp_path / "pool")
    arms = {"a": _cfg(16)}
    with pytest.raises(ValueError, match=r"start must be in \[0, 1\), got 1.0"):
        pool.train_unheld(arms, [0, 1, 2, 3], root, start=1.0)
    with pytest.raises(ValueError, match="got -0.25"):
        pool.train_unheld(arms, [0, 1, 2, 3], root, start=-0.25)
    held = pool.run_dir(root, dataclasses.replace(_cfg(16), seed=1))
    os.makedirs(held)
    lock = runlog.RunLock(held)
    try:
        assert pool.train_unheld(arms, [0, 1, 2, 3], root, start=0.5) == 3
    finally:
        lock.release()
    assert [c.seeds for c in trainer.calls] == [[2], [3], [0]]  # from halfway round, seed 1 left to its holder
    trainer.calls.clear()
    assert pool.train_unheld(arms, [0, 1, 2, 3], root) == 1 and [c.seeds for c in trainer.calls] == [[1]]
    assert pool.train_unheld(arms, [0, 1, 2, 3], root) == 0


def test_views_point_trained_runs_and_copy_read_back_ones(tmp_path, trainer, monkeypatch):
    root, view1, view2 = str(tmp_path / "pool"), str(tmp_path / "v1"), str(tmp_path / "v2")
    rewritten = []
    real_rewrite = events.rewrite
    monkeypatch.setattr(events, "rewrite", lambda rdir, recs, logdir=None: rewritten.append((rdir, logdir))
                        or real_rewrite(rdir, recs, logdir=logdir))
    out = _run_arms(tmp_path, {"a/b": _cfg(16)}, [3], view=view1)
    rdir, vdir = out["a/b"][0].workdir, os.path.join(view1, "a-b", "seed_3")
    assert os.path.abspath(events.logdir_of(rdir)) == os.path.abspath(vdir)
    assert os.path.exists(os.path.join(vdir, events.EVENT_FILE))
    assert rewritten == []  # the run wrote its events into its view itself
    _run_arms(tmp_path, {"a/b": _cfg(16)}, [3], view=view2)
    vdir2 = os.path.join(view2, "a-b", "seed_3")
    assert rewritten == [(rdir, vdir2)] and os.path.exists(os.path.join(vdir2, events.EVENT_FILE))
    os.remove(os.path.join(vdir, events.EVENT_FILE))  # its own view lost its file: written again
    rewritten.clear()
    _run_arms(tmp_path, {"a/b": _cfg(16)}, [3], view=view1)
    assert rewritten == [(rdir, vdir)]
    rewritten.clear()
    pool.read_runs({"a/b": _cfg(16)}, [3], root, view=str(tmp_path / "v3"))
    assert rewritten == [(rdir, os.path.join(str(tmp_path / "v3"), "a-b", "seed_3"))]
    rewritten.clear()
    pool.read_runs({"a/b": _cfg(16)}, [3], root)  # no view: nothing written
    _run_arms(tmp_path, {"a/b": _cfg(16)}, [3])
    assert rewritten == []


def test_two_arms_of_one_config_share_one_run(tmp_path, trainer):
    out = _run_arms(tmp_path, {"a": _cfg(16), "same": _cfg(16)}, {"a": [0, 1], "same": [1]})
    assert [c.seeds for c in trainer.calls] == [[0], [1]]
    assert out["same"][0] == dataclasses.replace(out["a"][1], arm="same")
    root = str(tmp_path / "pool")
    labels = pool.run_labels({"a": _cfg(16), "same": _cfg(16)}, {"a": [0, 1], "same": [1]}, root)
    assert labels == {out["a"][0].workdir: "a seed 0", out["a"][1].workdir: "a seed 1"}
    assert pool.run_dirs({"a": _cfg(16), "same": _cfg(16)}, {"a": [0, 1], "same": [1]}, root) == sorted(labels)


def test_read_runs_names_every_missing_run_before_reading_any(tmp_path, trainer):
    root = str(tmp_path / "pool")
    _run_arms(tmp_path, {"a": _cfg(16)}, [0])
    with pytest.raises(pool.MissingRunsError) as e:
        pool.read_runs({"a": _cfg(16), "b": _cfg(24)}, [0, 1], root)
    missing = [f"{arm} seed {s}: {pool.run_dir(root, dataclasses.replace(_cfg(h), seed=s))}"
               for arm, h, s in (("a", 16, 1), ("b", 24, 0), ("b", 24, 1))]
    assert e.value.missing == missing
    assert str(e.value).startswith("3 run(s) are missing from the pool") and str(e.value).endswith(
        "\n".join(f"  {m}" for m in missing))
    got = pool.read_runs({"a": _cfg(16)}, [0], root)["a"][0]
    assert got.summary == _summary(dataclasses.replace(_cfg(16), seed=0)) and got.history[0]["step"] == 10


def test_steps_override_shortens_every_interval_that_would_exceed_it(tmp_path, trainer):
    out = _run_arms(tmp_path, {"a": _cfg(16, steps=10)}, [0], steps=6)
    cfg = out["a"][0].config
    assert (cfg.steps, cfg.eval_every, cfg.checkpoint_every) == (6, 5, 6)
    cfg = _run_arms(tmp_path, {"a": _cfg(16, steps=10)}, [0], steps=3)["a"][0].config
    assert (cfg.steps, cfg.eval_every, cfg.checkpoint_every) == (3, 3, 3)
    cfg = _run_arms(tmp_path, {"a": _cfg(16, steps=10)}, [0], steps=20)["a"][0].config
    assert (cfg.steps, cfg.eval_every, cfg.checkpoint_every) == (20, 5, 8)


def test_a_held_run_is_not_judged_stale_and_unknown_policies_are_refused(tmp_path, trainer):
    root = str(tmp_path / "pool")
    run = _run_arms(tmp_path, {"a": _cfg(16)}, [0])["a"][0]
    stored = runlog.read_json(f"{run.workdir}/config.json")
    stored["optim"]["learning_rate"] = 0.5
    runlog.write_json(f"{run.workdir}/config.json", stored)
    lock = runlog.RunLock(run.workdir)
    try:
        assert pool.stale_runs({"a": _cfg(16)}, [0], root) == {}  # another process's: waited for later
    finally:
        lock.release()
    assert pool.stale_runs({"a": _cfg(16)}, [0], root) == {run.workdir: ["config (optim.learning_rate)"]}
    with pytest.raises(ValueError, match=r"unknown stale policy 'keep'; choose from \('retrain', 'refuse'\)"):
        _run_arms(tmp_path, {"a": _cfg(16)}, [0], stale="keep")
    with pytest.raises(ValueError, match=r"unknown runs mode 'parallel'; choose from \('auto', 'together', "
                                         r"'sequential'\)"):
        _run_arms(tmp_path, {"a": _cfg(16)}, [0], runs="parallel")
    assert runlog.read_json(f"{run.workdir}/config.json") == stored  # refused before anything moved
    assert [pool.resolve_runs(m) for m in ("auto", "together", "sequential")] == ["sequential", "together",
                                                                                  "sequential"]


def test_a_stale_run_moved_by_another_process_first_is_trained_here_once(tmp_path, trainer, monkeypatch, capsys):
    run = _run_arms(tmp_path, {"a": _cfg(16)}, [0])["a"][0]
    stored = runlog.read_json(f"{run.workdir}/config.json")
    stored["steps"] = 99
    runlog.write_json(f"{run.workdir}/config.json", stored)

    real_set_aside = pool.set_aside

    def raced(rdir):
        real_set_aside(rdir)  # the other process's set_aside came first
        raise FileNotFoundError(rdir)

    monkeypatch.setattr(pool, "set_aside", raced)
    trainer.calls.clear()
    _run_arms(tmp_path, {"a": _cfg(16)}, [0])
    assert [c.seeds for c in trainer.calls] == [[0]] and "stale run" not in capsys.readouterr().out


def test_set_aside_keeps_the_run_under_stale_and_releases_its_lock(tmp_path):
    rdir = tmp_path / "h" / "seed_4"
    rdir.mkdir(parents=True)
    (rdir / "results.json").write_text("{}")
    lock = runlog.RunLock(str(rdir))
    with pytest.raises(runlog.RunLockedError):
        pool.set_aside(str(rdir))
    assert (rdir / "results.json").exists()  # a held run is never moved
    lock.release()
    before = time.strftime("%Y%m%dT%H%M%S")
    dest = pool.set_aside(str(rdir))
    assert re.fullmatch(re.escape(str(tmp_path / "h" / "stale" / "seed_4-")) + r"\d{8}T\d{6}", dest)
    assert dest.rsplit("-", 1)[1] >= before and not rdir.exists()
    assert json.loads(open(os.path.join(dest, "results.json")).read()) == {}
    runlog.RunLock(dest).release()  # set_aside let go of the lock it took
    assert not runlog.is_locked(dest)


def test_config_hash_is_twelve_hex_of_the_sorted_config_without_its_seed():
    cfg = dataclasses.replace(_cfg(16), seed=9)
    d = config_lib.to_dict(dataclasses.replace(cfg, seed=0))
    assert pool.config_hash(cfg) == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    assert pool.config_hash(cfg) == pool.config_hash(dataclasses.replace(cfg, seed=1))
    assert pool.run_dir("p", cfg) == os.path.join("p", pool.config_hash(cfg), "seed_9")


def test_stale_error_lists_each_run_and_what_differs():
    e = pool.StaleRunError({"p/h/seed_0": ["config (steps)", "data fingerprint"], "p/h/seed_1": ["backend cpu -> gpu"]})
    assert str(e) == ("2 run(s) in the pool differ from what is asked now (rerun with --stale retrain to set them "
                      "aside and train again):\n  p/h/seed_0: config (steps), data fingerprint\n"
                      "  p/h/seed_1: backend cpu -> gpu")
    assert e.stale == {"p/h/seed_0": ["config (steps)", "data fingerprint"], "p/h/seed_1": ["backend cpu -> gpu"]}


def test_differences_says_what_was_not_recorded_and_lists_every_difference_in_order(tmp_path):
    rdir = tmp_path / "run"
    rdir.mkdir()
    cfg = _cfg(16)
    (rdir / "config.json").write_text(json.dumps(config_lib.to_dict(cfg)))
    versions = {lib: "1.0" for lib in runlog.NUMBER_LIBRARIES}
    now, code = {"versions": versions, "backend": "cpu"}, {"package": "source", "sources": "s1"}
    (rdir / "meta.json").write_text("{}")  # a run recorded before any of these were
    assert pool.differences(str(rdir), cfg, {"checksum": "c"}, code, now, {"val_indices_checksum": "v"}) == \
        ["data fingerprint (not recorded)", "code version (sources of bnjax's number modules not recorded -> s1)",
         *[f"{lib} not recorded -> 1.0" for lib in runlog.NUMBER_LIBRARIES], "backend not recorded -> cpu",
         "validation split (its indices differ)"]
    os.remove(rdir / "meta.json")  # no meta at all: the same
    assert pool.differences(str(rdir), cfg, {"checksum": "c"}, code)[:2] == \
        ["data fingerprint (not recorded)", "code version (sources of bnjax's number modules not recorded -> s1)"]
    meta = {"data_fingerprint": {"checksum": "c"}, "code_version": code, "versions": versions, "backend": "cpu",
            "split": {"val_indices_checksum": "v"}}
    (rdir / "meta.json").write_text(json.dumps(meta))
    assert pool.differences(str(rdir), cfg, {"checksum": "c"}, code, None, None) == []
    assert pool.differences(str(rdir), cfg, {"checksum": "c"}, code, None, {"val_indices_checksum": "v",
                                                                           "n_val": 5}) == []
    both = pool.differences(str(rdir), dataclasses.replace(cfg, steps=3, eval_every=3), {"checksum": "d"},
                            {**code, "sources": "s2"}, {"versions": {**versions}, "backend": "tpu"},
                            {"val_indices_checksum": "w"})
    assert both == ["config (eval_every, steps)", "data fingerprint",
                    "code version (sources of bnjax's number modules s1 -> s2)", "backend cpu -> tpu",
                    "validation split (its indices differ)"]


def test_phases_count_the_data_loading_apart(tmp_path, trainer):
    phases = Phases()
    _run_arms(tmp_path, {"a": _cfg(16)}, [0], phases=phases)
    assert trainer.calls[0].phases is phases and phases.seconds.get("data", 0.0) > 0.0
