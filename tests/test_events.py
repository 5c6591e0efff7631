"""TensorBoard event files (`bnjax.events`), read back with TensorBoard's own reader."""

import dataclasses
import math
import os
import shutil

import jax
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bnjax import events, fit, pool, record, runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

TINY = TrainConfig(model=ModelConfig(arch="mlp", hidden=(32,), norm="batch", activation="sigmoid"),
                   optim=OptimConfig(name="momentum", learning_rate=0.05),
                   data=DataConfig(source="digits", batch_size=32), steps=60, eval_every=20)


def read(logdir):
    """tag -> [(step, value)] as TensorBoard loads them."""
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_scalars_equal_metrics_jsonl_with_probes_and_a_cosine_rate(tmp_path):
    cfg = dataclasses.replace(TINY, optim=dataclasses.replace(TINY.optim, schedule="cosine", lr_multiplier=2.0),
                              probe_examples=64, test_curve=True)
    fit(cfg, str(tmp_path), progress=False)
    recs = runlog.read_metrics(str(tmp_path))
    got = read(tmp_path)
    assert [f for f in os.listdir(tmp_path) if "tfevents" in f] == [events.EVENT_FILE]
    for key, tag in [("train_loss", "train/loss"), ("train_accuracy", "train/accuracy"), ("val_loss", "val/loss"),
                     ("val_accuracy", "val/accuracy"), ("test_loss", "test/loss"),
                     ("test_accuracy", "test/accuracy"), ("elapsed_s", "time/elapsed_s")]:
        assert got[tag] == [(r["step"], np.float32(r[key])) for r in recs], tag
    for layer in recs[0]["probes"]:
        for i, q in enumerate((15, 50, 85)):
            assert got[f"probes/{layer}/p{q}"] == [(r["step"], np.float32(r["probes"][layer][i])) for r in recs]
    # the rate of the last update before each evaluation: 0.05 * 2 * (1 + cos(pi * t / T)) / 2, written out here
    want = [0.1 * 0.5 * (1 + math.cos(math.pi * (r["step"] - 1) / cfg.steps)) for r in recs]
    assert [s for s, _ in got["optim/learning_rate"]] == [r["step"] for r in recs]
    np.testing.assert_allclose([v for _, v in got["optim/learning_rate"]], want, rtol=1e-6, atol=1e-7)  # float32


def test_writing_events_adds_no_device_transfer(tmp_path, monkeypatch):
    """The writer gets host values only, and a run makes as many host transfers with it as without."""
    counts = {"fetch": 0, "device_get": 0}
    real_fetch, real_get = record.fetch, jax.device_get

    def counting_fetch(tree):
        counts["fetch"] += 1
        return real_fetch(tree)

    def counting_get(tree):
        counts["device_get"] += 1
        return real_get(tree)

    monkeypatch.setattr(record, "fetch", counting_fetch)
    monkeypatch.setattr(jax, "device_get", counting_get)
    seen = []
    real_append = events.append

    def checking_append(workdir, rec):
        leaves = jax.tree.leaves(rec)
        seen.extend(type(v) for v in leaves)
        assert all(isinstance(v, (int, float, str)) for v in leaves), "the writer was given a device value"
        real_append(workdir, rec)

    monkeypatch.setattr(events, "append", checking_append)
    fit(TINY, str(tmp_path / "with"), progress=False)
    with_events = dict(counts)
    counts.update(fetch=0, device_get=0)
    monkeypatch.setattr(events, "append", lambda workdir, rec: None)
    monkeypatch.setattr(events, "rewrite", lambda workdir, recs, logdir=None: None)
    fit(TINY, str(tmp_path / "without"), progress=False)
    assert seen and with_events == counts, (with_events, counts)
    assert with_events["fetch"] > 0


def test_a_resumed_run_has_each_evaluation_once(tmp_path):
    cfg = dataclasses.replace(TINY, steps=80, eval_every=20, checkpoint_every=40, keep_checkpoints=5)
    fit(cfg, str(tmp_path), progress=False)
    shutil.rmtree(tmp_path / "checkpoints" / "80")
    (tmp_path / "results.json").unlink()
    fit(cfg, str(tmp_path), progress=False)  # resumes at 40: the records of 60 and 80 are made again
    recs = runlog.read_metrics(str(tmp_path))
    assert read(tmp_path)["val/accuracy"] == [(r["step"], np.float32(r["val_accuracy"])) for r in recs]
    assert [r["step"] for r in recs] == [20, 40, 60, 80]


def test_a_suite_view_names_runs_by_experiment_arm_and_seed(tmp_path):
    arms = {"plain": dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, norm="none")), "BN": TINY}
    runs_dir = str(tmp_path / "runs")
    view_a, view_b = str(tmp_path / "exp_a" / "tensorboard"), str(tmp_path / "exp_b" / "tensorboard")
    runs = pool.run_arms(arms, [0, 1], runs_dir, progress=False, view=view_a)
    # a second experiment reusing the BN runs reads them back and gets its own copy
    pool.run_arms({"BN (reused)": TINY}, [0, 1], runs_dir, progress=False, view=view_b)
    for arm in arms:
        for seed, run in zip((0, 1), runs[arm], strict=True):
            want = [(r["step"], np.float32(r["val_accuracy"])) for r in runlog.read_metrics(run.workdir)]
            assert read(os.path.join(view_a, arm, f"seed_{seed}"))["val/accuracy"] == want
            assert not [f for f in os.listdir(run.workdir) if "tfevents" in f]  # one file per run, in the view
            if arm == "BN":
                assert read(os.path.join(view_b, "BN (reused)", f"seed_{seed}"))["val/accuracy"] == want
    listed = sorted(os.path.relpath(d, tmp_path) for d, _, files in os.walk(tmp_path)
                    if any("tfevents" in f for f in files))
    assert listed == sorted([f"exp_a/tensorboard/{a}/seed_{s}" for a in arms for s in (0, 1)]
                            + [f"exp_b/tensorboard/BN (reused)/seed_{s}" for s in (0, 1)])


def test_a_divergence_record_is_written_as_its_step(tmp_path):
    events.append(str(tmp_path), {"step": 5, "diverged_at": 3})
    assert read(tmp_path) == {"diverged_at": [(5, 3.0)]}
