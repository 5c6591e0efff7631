"""Optimisers: weight-decay mask, schedules, learning-rate multiplier."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnjax.config import ModelConfig, OptimConfig
from bnjax.models import build_model
from bnjax.optim import decay_mask, make_optimizer, make_schedule


def test_decay_mask_excludes_bn_and_biases():
    model = build_model(ModelConfig(norm="batch", placement="after"))
    params = model.init(jax.random.PRNGKey(0), jnp.ones((2, 784)), False)["params"]
    flat = {"/".join(k.key for k in path): v for path, v in jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]}
    assert flat["block0/linear/kernel"] and flat["head/kernel"]
    assert not flat["block0/linear/bias"] and not flat["block0/norm/norm/scale"] and not flat["block0/norm/norm/bias"]


def test_sgd_weight_decay_touches_only_kernels():
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "bn": {"scale": jnp.ones(2)}}
    tx = make_optimizer(OptimConfig(name="sgd", learning_rate=0.5, weight_decay=0.1), 10)
    zero = jax.tree.map(jnp.zeros_like, params)
    upd, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(upd["dense"]["kernel"], -0.5 * 0.1 * np.ones((2, 2)))
    np.testing.assert_array_equal(upd["dense"]["bias"], 0)
    np.testing.assert_array_equal(upd["bn"]["scale"], 0)


def test_schedules_and_multiplier():
    cfg = OptimConfig(learning_rate=0.1, lr_multiplier=5.0, schedule="exponential", decay_rate=0.5, decay_steps=100)
    s = make_schedule(cfg, 1000)
    np.testing.assert_allclose([s(0), s(100), s(200)], [0.5, 0.25, 0.125], rtol=1e-6)
    c = make_schedule(OptimConfig(learning_rate=1.0, schedule="cosine"), 100)
    np.testing.assert_allclose([c(0), c(50), c(100)], [1.0, 0.5, 0.0], atol=1e-6)
    o = make_schedule(OptimConfig(learning_rate=1.0, schedule="onecycle"), 100)
    assert o(0) < 0.1 and abs(o(30) - 1.0) < 1e-6 and o(100) < 1e-3


def test_adam_matches_optax_reference():
    params = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([0.3, 0.1])}
    ours = make_optimizer(OptimConfig(name="adam", learning_rate=0.01, b1=0.7, b2=0.9), 10)
    ref = optax.adam(0.01, b1=0.7, b2=0.9)
    u1, _ = ours.update(g, ours.init(params), params)
    u2, _ = ref.update(g, ref.init(params), params)
    np.testing.assert_allclose(u1["w"], u2["w"])
