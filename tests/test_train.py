"""The training driver end to end on digits: learning, divergence, exact resume,
checkpoint fallback, workdir checks, compile once per config."""

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest

from bnjax import fit, programs, runlog
from bnjax.checkpoint import Checkpoints
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

TINY = TrainConfig(
    model=ModelConfig(arch="mlp", hidden=(32, 32), norm="batch", activation="relu"),
    optim=OptimConfig(name="momentum", learning_rate=0.05),
    data=DataConfig(source="digits", batch_size=32, augment=""),
    steps=60, eval_every=20,
)


def _params_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_fit_learns_and_writes_a_self_describing_run(tmp_path):
    cfg = dataclasses.replace(TINY, steps=200, eval_every=100)
    res = fit(cfg, str(tmp_path), progress=False)
    assert res.summary["final_test_accuracy"] > 0.85  # 10 classes: chance is 0.1
    assert res.summary["diverged_at"] is None
    files = set(os.listdir(tmp_path))
    assert {"config.json", "meta.json", "metrics.jsonl", "results.json", "checkpoints"} <= files
    meta = runlog.read_json(tmp_path / "meta.json")
    assert meta["versions"]["jax"] == jax.__version__ and meta["seed"] == 0
    assert [r["step"] for r in runlog.read_metrics(str(tmp_path))] == [100, 200]


def test_divergence_is_recorded_not_raised():
    cfg = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, norm="none"),
                              optim=OptimConfig(name="sgd", learning_rate=1e12), steps=40, eval_every=20)
    res = fit(cfg, progress=False)
    assert res.summary["diverged_at"] is not None and res.summary["diverged_at"] < 20
    assert all("test_accuracy" not in r for r in res.history)


def test_resume_from_checkpoint_is_bitwise_identical(tmp_path):
    full = fit(TINY, str(tmp_path / "a"), progress=False)
    b = str(tmp_path / "b")
    fit(TINY, b, progress=False)
    # Simulate an interruption after step 20: drop later checkpoints and results.
    for step in os.listdir(os.path.join(b, "checkpoints")):
        if step.isdigit() and int(step) > 20:
            shutil.rmtree(os.path.join(b, "checkpoints", step))
    os.remove(os.path.join(b, "results.json"))
    resumed = fit(TINY, b, progress=False)
    assert int(resumed.state.step) == 60
    assert _params_equal(full.state.params, resumed.state.params)
    assert _params_equal(full.state.batch_stats, resumed.state.batch_stats)
    assert [r["step"] for r in runlog.read_metrics(b)] == [20, 40, 60]


def test_corrupt_latest_checkpoint_falls_back_with_warning(tmp_path):
    fit(TINY, str(tmp_path), progress=False)
    ckpt = Checkpoints(str(tmp_path / "checkpoints"), keep=2)
    latest = ckpt.steps()[-1]
    for root, _, names in os.walk(tmp_path / "checkpoints" / str(latest)):
        for name in names:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    target = fit(dataclasses.replace(TINY), None, progress=False).state
    with pytest.warns(UserWarning, match=f"step {latest}"):
        state, step = ckpt.restore_latest(target)
    assert step < latest and int(state.step) == step
    ckpt.close()


def test_workdir_with_other_config_is_refused(tmp_path):
    fit(dataclasses.replace(TINY, steps=20), str(tmp_path), progress=False)
    other = dataclasses.replace(TINY, steps=20, optim=OptimConfig(name="adam", learning_rate=0.01))
    with pytest.raises(runlog.RunMismatchError, match="optim.learning_rate, optim.name"):
        fit(other, str(tmp_path), progress=False)


def test_unwritable_workdir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write to workdir"):
        fit(TINY, str(blocker / "run"), progress=False)


def test_seeds_share_one_compiled_program():
    fit(dataclasses.replace(TINY, seed=1), progress=False)
    size = programs.compiled_chunk._cache_size()
    fit(dataclasses.replace(TINY, seed=2), progress=False)
    assert programs.compiled_chunk._cache_size() == size


def test_population_statistics_option_records_both_accuracies():
    """Algorithm 2 at the end of training against numpy: the first BN layer's statistics over
    the same 10 batches of x @ W (no bias before BN), and the recorded accuracy is that of
    the model with the population statistics, not the running ones."""
    from bnjax import data as data_lib
    from bnjax.evaluation import evaluate
    from bnjax.programs import eval_model_for
    from bnjax.train import DATA

    res = fit(dataclasses.replace(TINY, population_stats_batches=10), progress=False)
    running = fit(TINY, progress=False).state.batch_stats
    ds = data_lib.load("digits")
    x = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float64)
    idx = np.asarray(data_lib.epoch_batches(res.state.keys[DATA], 2**31 - 1, len(x), 32))[:10]
    h = [x[i] @ np.asarray(res.state.params["block0"]["linear"]["kernel"], np.float64) for i in idx]
    got = res.state.batch_stats["block0"]["norm"]["norm"]
    np.testing.assert_allclose(got["mean"], np.mean([b.mean(0) for b in h], 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["var"], 32 / 31 * np.mean([b.var(0) for b in h], 0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(got["var"], running["block0"]["norm"]["norm"]["var"], rtol=1e-2)
    acc = evaluate(eval_model_for(TINY.model), res.state.variables, ds.x_test, ds.y_test)["accuracy"]
    assert res.summary["test_accuracy_population_stats"] == pytest.approx(float(acc), abs=1e-6)
    assert res.summary["test_accuracy_running_stats"] == res.history[-1]["test_accuracy"]


def test_checkpoints_follow_checkpoint_every(tmp_path):
    cfg = dataclasses.replace(TINY, checkpoint_every=30, keep_checkpoints=10)
    res = fit(cfg, str(tmp_path), progress=False)
    store = Checkpoints(str(tmp_path / "checkpoints"), keep=10)
    assert store.steps() == [30, 60]
    store.close()
    assert [r["step"] for r in res.history] == [20, 40, 60]
