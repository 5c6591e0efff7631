"""K seeds in one program equal the same seeds trained alone."""

import dataclasses

import jax
import numpy as np
import pytest

from bnjax import fit, fit_group, runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.many import stack, unstack


@pytest.mark.parametrize("arch,layout", [("mlp", "vmap"), ("convnet", "vmap"), ("convnet", "map"),
                                         ("convnet", "matmul"), ("vgg", "matmul")])
def test_runs_in_one_program_equal_runs_alone(arch, layout):
    """Runs alone use the backend's convolution ("auto"); the "matmul" layout trains with
    bnjax's im2col matmuls under vmap: parameters, BN statistics and accuracy agree."""
    cfg = TrainConfig(model=ModelConfig(arch=arch, hidden=(32, 16), channels=(4, 6), kernels=(3, 3), dense=16,
                                        norm="batch", activation="relu", dropout=0.2),
                      optim=OptimConfig(name="momentum", learning_rate=0.05),
                      data=DataConfig(source="digits", batch_size=16, augment="hflip,rotate:10"),
                      steps=30, eval_every=15)
    if layout == "matmul":  # as on a GPU: alone with XLA's convolution, together with im2col matmuls
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, conv_impl="xla"))
    seeds = [3, 7]
    res = fit_group([dataclasses.replace(cfg, seed=s) for s in seeds], layout=layout, progress=False)
    states, histories = stack([r.state for r in res]), [r.history for r in res]
    for i, seed in enumerate(seeds):
        alone = fit(dataclasses.replace(cfg, seed=seed), progress=False)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
                     unstack(states, i).params, alone.state.params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
                     unstack(states, i).batch_stats, alone.state.batch_stats)
        assert [h["step"] for h in histories[i]] == [15, 30]
        # equal up to float reassociation: at most one of the 360 test images may flip
        assert abs(histories[i][-1]["test_accuracy"] - alone.summary["final_test_accuracy"]) <= 1 / 360 + 1e-9
    # different seeds really differ
    assert not np.allclose(unstack(states, 0).params["head"]["kernel"], unstack(states, 1).params["head"]["kernel"])


def test_learning_rate_multiplier_as_a_run_axis():
    cfg = TrainConfig(model=ModelConfig(arch="mlp", hidden=(32,), norm="batch", activation="relu"),
                      optim=OptimConfig(name="momentum", learning_rate=0.02, weight_decay=1e-3,
                                        schedule="exponential", decay_steps=10, decay_rate=0.5),
                      data=DataConfig(source="digits", batch_size=16), steps=20, eval_every=20)
    mults = [1.0, 5.0, 30.0]
    res = fit_group([dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_multiplier=m)) for m in mults],
                    progress=False)
    states = stack([r.state for r in res])
    for i, m in enumerate(mults):
        alone = fit(dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_multiplier=m)), progress=False)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                     unstack(states, i).params, alone.state.params)


@pytest.mark.parametrize("arch,layout", [("mlp", "vmap"), ("convnet", "map")])
def test_shared_batches_equal_runs_alone_with_the_first_runs_data_key(arch, layout):
    """share_data: run i == run i alone with its data key replaced by run 0's; its own init,
    dropout and augmentation keys still apply."""
    from bnjax import augment as aug
    from bnjax import data as data_lib
    from bnjax.many import init_many
    from bnjax.programs import compiled_chunk, compiled_chunk_many, model_for, optimizer_for
    from bnjax.train import DATA, create_state

    cfg = ModelConfig(arch=arch, hidden=(32, 16), channels=(4, 6), dense=16, norm="batch", activation="relu",
                      dropout=0.2)
    model, tx = model_for(cfg), optimizer_for(OptimConfig(name="momentum", learning_rate=0.05), 100)
    dev = data_lib.to_device(data_lib.load("digits"))
    x, y, pipeline = dev["x_train"], dev["y_train"], aug.parse_pipeline("hflip")
    seeds = [3, 7, 11]
    states, metrics = compiled_chunk_many(init_many(model, tx, x[:16], seeds), x, y, layout=layout, share_data=True,
                                  model=model, tx=tx, pipeline=pipeline, batch_size=16, n_steps=120)  # > 1 epoch
    assert metrics["loss"].shape == (3, 120)
    data_key = create_state(model, tx, x[:16], seeds[0]).keys[DATA]
    for i, seed in enumerate(seeds):
        alone = create_state(model, tx, x[:16], seed)
        alone = alone.replace(keys=alone.keys.at[DATA].set(data_key))
        alone, m = compiled_chunk(alone, x, y, model=model, tx=tx, pipeline=pipeline, batch_size=16, n_steps=120)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
                     unstack(states, i).params, alone.params)
        np.testing.assert_allclose(metrics["loss"][i], m["loss"], rtol=2e-4, atol=2e-5)
    assert not np.allclose(unstack(states, 1).params["head"]["kernel"], unstack(states, 2).params["head"]["kernel"])


def _group_cfg(**kw):
    return TrainConfig(model=ModelConfig(arch="mlp", hidden=(32, 16), norm="batch", activation="relu"),
                       optim=OptimConfig(name="momentum", learning_rate=0.05),
                       data=DataConfig(source="digits", batch_size=16), steps=40, eval_every=20,
                       population_stats_batches=4, probe_examples=100, **kw)


def test_fit_group_writes_each_run_as_fit_alone_and_isolates_a_diverging_run(tmp_path):

    base = _group_cfg()
    cfgs = [dataclasses.replace(base, seed=1),
            dataclasses.replace(base, seed=2, optim=dataclasses.replace(base.optim, lr_multiplier=3.0)),
            dataclasses.replace(base, seed=3, optim=dataclasses.replace(base.optim, lr_multiplier=1e6))]
    dirs = [str(tmp_path / f"run{i}") for i in range(3)]
    res = fit_group(cfgs, dirs, progress=False)
    assert res[2].summary["diverged_at"] is not None  # x1e6 blows up ...
    for i in (0, 1):  # ... while the others train exactly as alone
        alone = fit(cfgs[i], str(tmp_path / f"alone{i}"), progress=False)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
                     res[i].state.params, alone.state.params)
        assert res[i].summary["diverged_at"] is None
        for key in ("final_test_accuracy", "test_accuracy_population_stats", "final_step"):
            np.testing.assert_allclose(res[i].summary[key], alone.summary[key], atol=1e-3)
        got, want = runlog.read_metrics(dirs[i]), runlog.read_metrics(str(tmp_path / f"alone{i}"))
        assert [r["step"] for r in got] == [r["step"] for r in want] == [20, 40]
        np.testing.assert_allclose([r["probes"]["block1"] for r in got], [r["probes"]["block1"] for r in want],
                                   rtol=1e-3, atol=1e-4)
        assert runlog.read_json(f"{dirs[i]}/results.json")["final_step"] == 40
    assert "diverged_at" in runlog.read_metrics(dirs[2])[-1]


def test_fit_group_resumes_from_the_runs_checkpoints_and_refuses_mixed_configs(tmp_path):

    base = _group_cfg(checkpoint_every=20)
    cfgs = [dataclasses.replace(base, seed=s) for s in (4, 5)]
    dirs = [str(tmp_path / f"r{s}") for s in (4, 5)]
    # a group that stopped at step 20 (its checkpoints kept) continues to 40 == uninterrupted
    import shutil

    full = fit_group(cfgs, dirs, progress=False)
    for d in dirs:
        shutil.rmtree(f"{d}/checkpoints/40")
        (tmp_path / d / "results.json").unlink()
    resumed = fit_group(cfgs, dirs, progress=False)
    for a, b in zip(full, resumed, strict=True):
        jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a.state.params, b.state.params)
        assert [r["step"] for r in b.history] == [20, 40]
    with pytest.raises(ValueError, match="model.hidden"):
        fit_group([cfgs[0], dataclasses.replace(cfgs[1], model=dataclasses.replace(base.model, hidden=(8,)))],
                  progress=False)
    with pytest.raises(TypeError, match="fit_group"):
        fit(cfgs, dirs, progress=False)  # one way to train a list


def test_run_arms_together_compiles_one_program_for_arms_differing_in_multiplier(tmp_path):
    from bnjax import pool
    from bnjax.programs import compiled_chunk_many

    base = _group_cfg()
    arms = {"x1": base, "x2": dataclasses.replace(base, optim=dataclasses.replace(base.optim, lr_multiplier=2.0))}
    before = compiled_chunk_many._cache_size()
    together = pool.run_arms(arms, [0, 1], str(tmp_path / "pool"), runs="together", progress=False)
    assert compiled_chunk_many._cache_size() - before == 1  # 4 runs, 2 arms: one compiled chunk
    alone = pool.run_arms(arms, [0, 1], str(tmp_path / "pool2"), runs="sequential", progress=False)
    for arm in arms:
        for a, b in zip(together[arm], alone[arm], strict=True):
            np.testing.assert_allclose(a.summary["final_test_accuracy"], b.summary["final_test_accuracy"], atol=1e-3)
            assert runlog.read_json(f"{a.workdir}/meta.json")["runs"] == "together"
            assert runlog.read_json(f"{a.workdir}/meta.json")["group_size"] == 4
            assert runlog.read_json(f"{b.workdir}/meta.json")["runs"] == "sequential"
    with pytest.raises(ValueError, match="runs mode"):
        pool.run_arms(arms, [0], str(tmp_path / "pool3"), runs="parallel", progress=False)


def test_group_records_honest_training_time(tmp_path, monkeypatch):
    """Each run of a group records its share of the group's wall time: the shares add up
    to the time of the whole call (not K times it), equal while no run diverges. The
    driver's clock is replaced by one that advances 1 s per reading, so the sums are exact."""
    from types import SimpleNamespace

    from bnjax import loop

    readings = []
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: float(readings.append(0) or len(readings))))
    base = dataclasses.replace(_group_cfg(), steps=300, eval_every=100, population_stats_batches=0)
    cfgs = [dataclasses.replace(base, seed=s) for s in range(3)]
    res = fit_group(cfgs, [str(tmp_path / f"r{i}") for i in range(3)], progress=False)
    secs = [r.summary["train_seconds"] for r in res]
    assert secs == pytest.approx([secs[0]] * 3)
    assert sum(secs) == pytest.approx(len(readings) - 1, abs=0.002)  # first reading to last (1 ms rounding)
    assert [r.summary["group_size"] for r in res] == [3, 3, 3]
    elapsed = [rec["elapsed_s"] for rec in runlog.read_metrics(str(tmp_path / "r0"))]
    assert elapsed == sorted(elapsed) and elapsed[-1] <= secs[0]


def test_weight_decay_and_initialiser_are_run_axes(tmp_path):
    """Runs differing in weight decay, initialiser and its scale train in one program and
    equal the same runs trained alone."""
    from bnjax.programs import compiled_chunk_many

    base = _group_cfg()
    cfgs = [base,
            dataclasses.replace(base, optim=dataclasses.replace(base.optim, weight_decay=5e-3)),
            dataclasses.replace(base, model=dataclasses.replace(base.model, init="xavier_uniform")),
            dataclasses.replace(base, seed=9, model=dataclasses.replace(base.model, init="normal", init_std=0.2))]
    before = compiled_chunk_many._cache_size()
    res = fit_group(cfgs, progress=False)
    assert compiled_chunk_many._cache_size() - before <= 2  # chunks of eval_every steps (and one final size at most)
    for c, r in zip(cfgs, res, strict=True):
        alone = fit(c, progress=False)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), r.state.params,
                     alone.state.params)
    k0, k2 = res[0].state.params["block0"]["linear"]["kernel"], res[2].state.params["block0"]["linear"]["kernel"]
    assert not np.allclose(k0, k2)  # the initialiser did change the run


def test_sequential_runs_differing_along_run_axes_reuse_one_compiled_chunk():
    """No recompiles between arms that differ only in seed, multiplier, decay or init."""
    from bnjax.programs import compiled_chunk

    base = dataclasses.replace(_group_cfg(), steps=20, eval_every=20)
    variants = [base, dataclasses.replace(base, seed=5),
                dataclasses.replace(base, optim=dataclasses.replace(base.optim, lr_multiplier=5.0, weight_decay=1e-3)),
                dataclasses.replace(base, model=dataclasses.replace(base.model, init="xavier_uniform"))]
    fit(variants[0], progress=False)
    before = compiled_chunk._cache_size()
    for cfg in variants[1:]:
        fit(cfg, progress=False)
    assert compiled_chunk._cache_size() == before
    fit(dataclasses.replace(base, model=dataclasses.replace(base.model, hidden=(8,))), progress=False)
    assert compiled_chunk._cache_size() == before + 1  # a structural change does compile


def test_group_falls_back_past_an_unreadable_checkpoint_and_finishes_bitwise(tmp_path):
    """One run's newest checkpoint is garbage: the group restores the newest step every run
    can read, sets the newer checkpoints aside (kept) and ends equal to the uninterrupted group."""
    import os

    base = dataclasses.replace(_group_cfg(checkpoint_every=20, keep_checkpoints=5), steps=60,
                               population_stats_batches=0)
    cfgs = [dataclasses.replace(base, seed=s) for s in (1, 2)]
    dirs = [str(tmp_path / f"r{s}") for s in (1, 2)]
    full = fit_group(cfgs, dirs, progress=False)
    for root, _, names in os.walk(f"{dirs[1]}/checkpoints/60"):
        for name in names:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    for d in dirs:
        os.remove(f"{d}/results.json")
    with pytest.warns(UserWarning, match="step 60 cannot be restored"):
        again = fit_group(cfgs, dirs, progress=False)
    for a, b in zip(full, again, strict=True):
        jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a.state.params, b.state.params)
        assert [r["step"] for r in b.history] == [20, 40, 60]
    for d in dirs:
        assert len(os.listdir(f"{d}/checkpoints_aside")) == 1  # the step-60 checkpoints, kept
        assert os.path.exists(f"{d}/results.json")


def test_layout_rule_per_backend():
    from bnjax.many import layout_for, train_model
    from bnjax.programs import Program

    mlp, cnn = TrainConfig(), TrainConfig(model=ModelConfig(arch="convnet", conv_impl="xla"))
    assert [layout_for(c, b) for c in (mlp, cnn) for b in ("cpu", "gpu", "tpu")] == [
        "vmap", "vmap", "vmap", "map", "matmul", "matmul"]
    assert train_model(cnn.model, "matmul").conv_impl == "im2col" and train_model(cnn.model, "map").conv_impl == "xla"
    assert Program.build(cnn, 4, layout="matmul").model.conv_impl == "im2col"
    assert Program.build(cnn, 1, layout="matmul").model.conv_impl == "xla"  # one run: as configured
    with pytest.raises(ValueError, match="unknown layout 'grouped'"):
        Program.build(cnn, 4, layout="grouped")
