"""Models: variable collections, placement, initialisers, shape errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnjax.config import ModelConfig
from bnjax.models import build_model


def _vars(cfg, shape=(4, 28, 28, 1)):
    """The model's variables, initialised by one jitted program (as training does)."""
    return jax.jit(lambda k: build_model(cfg).init(k, jnp.ones(shape), False))(jax.random.key(0))


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_batch_stats_exist_exactly_with_bn(arch, norm):
    v = _vars(ModelConfig(arch=arch, norm=norm))
    assert ("batch_stats" in v) == (norm == "batch")


def test_layer_before_bn_has_no_bias_and_after_keeps_it():
    before = _vars(ModelConfig(norm="batch", placement="before"))["params"]
    after = _vars(ModelConfig(norm="batch", placement="after"))["params"]
    plain = _vars(ModelConfig(norm="none"))["params"]
    assert "bias" not in before["block0"]["linear"] and "scale" in before["block0"]["norm"]["norm"]
    assert "bias" in after["block0"]["linear"]
    assert "bias" in plain["block0"]["linear"]


def test_mnist_mlp_shapes_match_the_paper():
    p = _vars(ModelConfig(arch="mlp"))["params"]
    shapes = [p[f"block{i}"]["linear"]["kernel"].shape for i in range(3)] + [p["head"]["kernel"].shape]
    assert shapes == [(784, 100), (100, 100), (100, 100), (100, 10)]


def test_placement_changes_what_the_sigmoid_sees():
    """Variant A normalises the sigmoid's input: its pre-activation has zero batch mean."""
    x = jax.random.normal(jax.random.key(1), (64, 20)) * 3 + 2
    for placement, centred in (("before", True), ("after", False)):
        model = build_model(ModelConfig(norm="batch", placement=placement, hidden=(30, 30)))
        v = jax.jit(lambda k, model=model: model.init(k, x, False))(jax.random.key(0))
        _, coll = jax.jit(lambda v, model=model: model.apply(v, x, True, mutable=["batch_stats", "intermediates"]))(v)
        pre = np.asarray(coll["intermediates"]["block0"]["preact"][0])
        assert (np.abs(pre.mean(0)).max() < 1e-4) == centred


@pytest.mark.parametrize("init,check", [
    ("normal", lambda w, fan_in: abs(w.std() - 0.05) < 0.005),
    ("torch", lambda w, fan_in: abs(w).max() <= 1 / np.sqrt(fan_in) and abs(w).max() > 0.9 / np.sqrt(fan_in)),
    ("xavier_uniform", lambda w, fan_in: abs(w).max() <= np.sqrt(6 / (784 + 100))),
    ("lecun_normal", lambda w, fan_in: abs(w.std() - 1 / np.sqrt(fan_in)) < 0.1 / np.sqrt(fan_in)),
])
def test_initialisers(init, check):
    w = np.asarray(_vars(ModelConfig(init=init, init_std=0.05))["params"]["block0"]["linear"]["kernel"])
    assert check(w, 784)


def test_convnet_handles_8_28_32_and_rejects_too_small():
    for size in (8, 28, 32):
        model = build_model(ModelConfig(arch="convnet", norm="batch"))
        x = jnp.ones((2, size, size, 1))
        assert jax.eval_shape(lambda k, x=x, model=model: model.apply(model.init(k, x, False), x, False),
                              jax.random.key(0)).shape == (2, 10)
    with pytest.raises(ValueError, match="needs larger images"):
        build_model(ModelConfig(arch="convnet")).init(jax.random.key(0), jnp.ones((2, 784)), False)


def test_valid_padding_shapes_match_the_speedrun_net():
    model = build_model(ModelConfig(arch="convnet", padding="valid"))
    p = jax.eval_shape(lambda k: model.init(k, jnp.ones((2, 28, 28, 1)), False), jax.random.key(0))["params"]
    assert p["fc"]["linear"]["kernel"].shape == (800, 256)  # 32 x 5 x 5, as tuomaso/train_mnist_fast
    with pytest.raises(ValueError, match="needs larger images"):
        model.init(jax.random.key(0), jnp.ones((2, 8, 8, 1)), False)


@pytest.mark.parametrize("impl", ["im2col", "xla"])
def test_vgg_pools_after_every_two_convolutions_against_lax(impl):
    """arch="vgg" against a reference written with lax.conv and lax.reduce_window: 3x3 SAME
    conv -> ReLU, twice, then a 2x2 max-pool, per stage; flatten, dense ReLU, head."""
    cfg = ModelConfig(arch="vgg", channels=(4, 4, 8, 8), kernels=(3, 3, 3, 3), dense=16, activation="relu",
                      conv_impl=impl)
    model = build_model(cfg)
    x = jax.random.normal(jax.random.key(1), (3, 12, 12, 3))
    p = jax.jit(lambda k: model.init(k, x, False))(jax.random.key(0))["params"]
    h = x
    for i in range(4):
        layer = p[f"conv{i}"]["linear"]
        h = jax.lax.conv_general_dilated(h, layer["kernel"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest")
        h = jax.nn.relu(h + layer["bias"])
        if i % 2 == 1:
            h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    assert h.shape == (3, 3, 3, 8)
    h = jax.nn.relu(h.reshape(3, -1) @ p["fc"]["linear"]["kernel"] + p["fc"]["linear"]["bias"])
    ref = h @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(jax.jit(lambda p: model.apply({"params": p}, x, False))(p), ref, rtol=1e-4, atol=1e-5)


def test_vgg_config_needs_pairs_of_convolutions():
    from bnjax.config import ConfigError

    with pytest.raises(ConfigError, match="model.channels.*even number"):
        ModelConfig(arch="vgg", channels=(8, 8, 16), kernels=(3, 3, 3))
