"""Optimisers: weight-decay mask, schedules, learning-rate multiplier."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnjax.config import ModelConfig, OptimConfig
from bnjax.models import build_model
from bnjax.optim import decay_mask, make_optimizer, make_schedule


def test_decay_mask_excludes_bn_and_biases():
    model = build_model(ModelConfig(norm="batch", placement="after"))
    params = model.init(jax.random.key(0), jnp.ones((2, 784)), False)["params"]
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


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_injected_multiplier_and_decay_equal_optax_built_directly(name):
    """make_optimizer with the multiplier and weight decay injected (set in the state by
    set_hyperparams, as bnjax.programs.initial_state does) == optax's own composition."""
    from bnjax.optim import decay_mask, set_hyperparams

    params = {"dense": {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([0.2, -0.1])}}
    grads = [jax.tree.map(lambda p, i=i: jnp.sin(p * (i + 1)), params) for i in range(5)]
    lr, mult, wd = 0.05, 3.0, 0.1
    if name == "adamw":
        ref = optax.adamw(lr * mult, b1=0.8, b2=0.95, weight_decay=wd, mask=decay_mask)
    else:
        core = {"sgd": optax.sgd(lr * mult), "momentum": optax.sgd(lr * mult, momentum=0.9),
                "adam": optax.adam(lr * mult, b1=0.8, b2=0.95)}[name]
        ref = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask), core)
    ours = make_optimizer(OptimConfig(name=name, learning_rate=lr, b1=0.8, b2=0.95), 10)
    s_ours = set_hyperparams(ours.init(params), lr_multiplier=mult, weight_decay=wd)
    s_ref, p_ours, p_ref = ref.init(params), params, params
    for g in grads:
        u, s_ours = ours.update(g, s_ours, p_ours)
        p_ours = optax.apply_updates(p_ours, u)
        u, s_ref = ref.update(g, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p_ours, p_ref)
    with pytest.raises(ValueError, match="momentum"):
        set_hyperparams(s_ours, momentum=0.5)
