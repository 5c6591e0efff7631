"""Ghost BN, Batch Renorm, BN folding, probes, LayerNorm/GroupNorm arms."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnjax import BatchNorm, BatchRenorm, fit
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.evaluation import probe_percentiles
from bnjax.fold import fold_batchnorm
from bnjax.models import build_model
from bnjax.renorm import renorm_limits

X = jax.random.normal(jax.random.key(0), (32, 6)) * 2.0 + 1.0


def _train_apply(module, x, variables=None):
    """Init and a training-mode apply, each one jitted program (as training runs them)."""
    v = variables or jax.jit(module.init)(jax.random.key(1), x)
    return jax.jit(lambda v, x: module.apply(v, x, mutable=["batch_stats"]))(v, x)


def test_ghost_bn_with_whole_batch_equals_bn():
    (y1, s1), (y2, s2) = (_train_apply(BatchNorm(use_running_average=False, virtual_batch_size=32), X),
                          _train_apply(BatchNorm(use_running_average=False), X))
    np.testing.assert_allclose(y1, y2, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), s1, s2)


def test_ghost_bn_normalises_each_virtual_batch_separately():
    y, s = _train_apply(BatchNorm(use_running_average=False, virtual_batch_size=8, momentum=0.0), X)
    x = np.asarray(X, np.float64).reshape(4, 8, 6)
    ref = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, ref.reshape(32, 6), atol=1e-5)
    np.testing.assert_allclose(s["batch_stats"]["mean"], x.mean(1).mean(0), atol=1e-5)


def test_batch_renorm_with_unit_limits_equals_bn_in_training():
    v = BatchNorm(use_running_average=False).init(jax.random.key(1), X)
    stats = {"mean": jnp.full(6, 0.7), "var": jnp.full(6, 3.0)}  # running stats far from the batch's
    bn_y, bn_s = BatchNorm(use_running_average=False).apply({**v, "batch_stats": stats}, X, mutable=["batch_stats"])
    rn = BatchRenorm(use_running_average=False, fixed_limits=(1.0, 0.0))
    rv = rn.init(jax.random.key(1), X)
    rn_y, rn_s = rn.apply({"params": rv["params"], "batch_stats": {**stats, "step": jnp.int32(0)}}, X,
                          mutable=["batch_stats"])
    np.testing.assert_allclose(rn_y, bn_y, atol=1e-5)
    np.testing.assert_allclose(rn_s["batch_stats"]["mean"], bn_s["batch_stats"]["mean"], atol=1e-6)
    # the same through the schedule during warm-up
    sched = BatchRenorm(use_running_average=False, warmup_steps=10, ramp_steps=10)
    y_w, _ = sched.apply({"params": rv["params"], "batch_stats": {**stats, "step": jnp.int32(3)}}, X,
                         mutable=["batch_stats"])
    np.testing.assert_allclose(y_w, bn_y, atol=1e-5)


def test_batch_renorm_corrects_towards_running_statistics():
    stats = {"mean": jnp.full(6, 0.7), "var": jnp.full(6, 3.0), "step": jnp.int32(0)}
    rn = BatchRenorm(use_running_average=False, fixed_limits=(3.0, 5.0))
    v = rn.init(jax.random.key(1), X)
    y, _ = rn.apply({"params": v["params"], "batch_stats": stats}, X, mutable=["batch_stats"])
    x = np.asarray(X, np.float64)
    mu_b, sig_b = x.mean(0), np.sqrt(x.var(0) + 1e-5)
    sig = np.sqrt(3.0 + 1e-5)
    r = np.clip(sig_b / sig, 1 / 3, 3)
    d = np.clip((mu_b - 0.7) / sig, -5, 5)
    np.testing.assert_allclose(y, (x - mu_b) / sig_b * r + d, atol=1e-5)
    # with r, d unclipped, training output equals normalising with the running statistics
    np.testing.assert_allclose(y, (x - 0.7) / sig, atol=1e-5)
    r_max, d_max = renorm_limits(jnp.array([0, 10, 15, 20, 40]), warmup_steps=10, ramp_steps=10)
    np.testing.assert_allclose(r_max, [1, 1, 2, 3, 3])
    np.testing.assert_allclose(d_max, [0, 0, 2.5, 5, 5])


@pytest.mark.parametrize("arch,shape", [("mlp", (8, 28, 28, 1)), ("convnet", (8, 12, 12, 1))])
def test_folded_model_equals_original_in_eval(arch, shape):
    cfg = ModelConfig(arch=arch, norm="batch", activation="relu", channels=(6, 8), dense=16, hidden=(20, 12))
    model = build_model(cfg)
    x = jax.random.normal(jax.random.key(2), shape)
    v = jax.jit(lambda k: model.init(k, x, False))(jax.random.key(3))  # jitted: one program each
    # make the statistics and affine parameters non-trivial
    _, upd = jax.jit(lambda v: model.apply(v, x * 3 + 1, True, mutable=["batch_stats"]))(v)
    leaves, tree = jax.tree.flatten(v["params"])
    keys = jax.random.split(jax.random.key(4), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    v = {"params": params, "batch_stats": upd["batch_stats"]}
    fcfg, fv = fold_batchnorm(cfg, v)
    folded = build_model(fcfg)
    assert "batch_stats" not in jax.eval_shape(lambda k: folded.init(k, x, False), jax.random.key(0))
    np.testing.assert_allclose(jax.jit(lambda v: folded.apply(v, x, False))(fv),
                               jax.jit(lambda v: model.apply(v, x, False))(v), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="placement='before'"):
        fold_batchnorm(dataclasses.replace(cfg, placement="after"), v)


def test_probes_match_numpy_percentiles_of_the_same_activations():
    cfg = ModelConfig(arch="mlp", hidden=(10, 7), norm="batch", activation="sigmoid")
    model = build_model(cfg)
    x = jax.random.normal(jax.random.key(5), (50, 28, 28))
    v = jax.jit(lambda k: model.init(k, x, False))(jax.random.key(6))
    got = probe_percentiles(model, v, x, unit=3, qs=(15.0, 50.0, 85.0))
    _, coll = jax.jit(lambda v: model.apply(v, x, True, mutable=["intermediates", "batch_stats"]))(v)
    for layer in ("block0", "block1"):
        acts = np.asarray(coll["intermediates"][layer]["preact"][0])[:, 3]
        np.testing.assert_allclose(got[layer], np.percentile(acts, [15, 50, 85]), rtol=1e-5, atol=1e-6)
    # independent check of what the probe sees: layer 0's input of unit 3, batch-normalised
    h = np.asarray(x.reshape(50, -1) @ v["params"]["block0"]["linear"]["kernel"])[:, 3]
    np.testing.assert_allclose(got["block0"][1], np.percentile((h - h.mean()) / np.sqrt(h.var() + 1e-5), 50),
                               atol=1e-4)


@pytest.mark.parametrize("norm", ["layer", "group", "ghost", "renorm"])
def test_other_normalisers_train_as_arms(norm):
    """Each normaliser, plugged into the ConvNet by config, normalises what it should at
    initialisation (checked in numpy on its captured output: per example for LayerNorm,
    per example and group of 4 channels for GroupNorm, per virtual batch of 8 and channel
    for Ghost BN, per batch and channel for Batch Renorm in its warm-up), and trains."""
    cfg = TrainConfig(model=ModelConfig(arch="convnet", channels=(8, 8), dense=32, norm=norm, activation="relu",
                                        virtual_batch_size=8, groups=2),
                      optim=OptimConfig(name="adam", learning_rate=3e-3),
                      data=DataConfig(source="digits", batch_size=32), steps=150, eval_every=150)
    model = build_model(dataclasses.replace(cfg.model, conv_impl="xla"))
    x = jax.random.normal(jax.random.key(0), (32, 8, 8, 1)) * 2 + 1
    v = jax.jit(lambda k: model.init(k, x, False))(jax.random.key(1))  # jitted: one program each
    captured = lambda mdl, method: method == "__call__" and mdl.name == "norm" and mdl.parent.name == "norm"  # noqa: E731
    _, st = jax.jit(lambda v: model.apply(v, x, True, mutable=["batch_stats", "intermediates"],
                                          capture_intermediates=captured))(v)
    y = np.asarray(jax.tree.leaves(st["intermediates"])[0], np.float64)  # the first block's normaliser, (32, 8, 8, 8)
    groups = {"layer": y.reshape(32, -1)[:, None], "group": y.reshape(32, -1, 2, 4).transpose(0, 2, 1, 3)
              .reshape(32, 2, -1), "ghost": y.reshape(4, 8, -1, 8).transpose(0, 3, 1, 2).reshape(4, 8, -1),
              "renorm": y.reshape(-1, 8).T[None]}[norm]
    np.testing.assert_allclose(groups.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(groups.var(-1), 1.0, atol=2e-3)
    res = fit(cfg, progress=False)
    assert res.summary["final_test_accuracy"] > 0.75  # chance is 0.10; seeds 0-1 reached 0.79-0.90
    assert ("batch_stats" in res.state.variables) == (norm in ("ghost", "renorm"))


def test_batch_renorm_population_statistics_match_numpy_algorithm_2():
    """`population_stats_batches` on a Batch Renorm run: Algorithm 2 over the same K
    training batches computed in numpy from the first layer's pre-normalisation
    activations (x @ W; no bias before a normaliser), and the recorded accuracy is that
    of the model with these statistics."""
    from bnjax import data as data_lib
    from bnjax.evaluation import evaluate
    from bnjax.programs import eval_model_for
    from bnjax.train import DATA

    cfg = TrainConfig(model=ModelConfig(arch="mlp", hidden=(16,), norm="renorm", activation="relu",
                                        renorm_warmup=3, renorm_ramp=10),
                      optim=OptimConfig(name="momentum", learning_rate=0.05),
                      data=DataConfig(source="digits", batch_size=32), steps=30, eval_every=30,
                      population_stats_batches=5)
    res = fit(cfg, progress=False)
    ds = data_lib.load("digits")
    x = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float64)
    idx = np.asarray(data_lib.epoch_batches(res.state.keys[DATA], 2**31 - 1, len(x), 32))[:5]
    w = np.asarray(res.state.params["block0"]["linear"]["kernel"], np.float64)
    h = [x[i] @ w for i in idx]
    mean = np.mean([b.mean(0) for b in h], axis=0)
    var = 32 / 31 * np.mean([b.var(0) for b in h], axis=0)
    got = res.state.batch_stats["block0"]["norm"]["norm"]
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["var"], var, rtol=1e-4, atol=1e-5)
    assert int(got["step"]) == 30  # the schedule's counter is kept, not replaced
    stats = {"block0": {"norm": {"norm": {"mean": jnp.asarray(mean, jnp.float32),
                                          "var": jnp.asarray(var, jnp.float32), "step": got["step"]}}}}
    acc = evaluate(eval_model_for(cfg.model), {"params": res.state.params, "batch_stats": stats},
                   jnp.asarray(ds.x_test), jnp.asarray(ds.y_test))["accuracy"]
    assert res.summary["test_accuracy_population_stats"] == pytest.approx(float(acc), abs=1e-6)
