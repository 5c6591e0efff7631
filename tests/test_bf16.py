"""bfloat16 compute (``model.dtype``): activations and matmuls in bf16; parameters,
optimiser state and BN statistics float32; a short training tracks the float32 run."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnjax import fit
from bnjax.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.models import build_model


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_bf16_computes_in_bf16_and_keeps_float32_state(arch):
    model = build_model(ModelConfig(arch=arch, norm="batch", activation="relu", dtype="bfloat16"))
    x = jnp.ones((4, 8, 8, 1))
    v = jax.eval_shape(lambda k: model.init(k, x, False), jax.random.key(0))  # dtypes are known at tracing
    logits, upd = jax.eval_shape(lambda v: model.apply(v, x, True, mutable=["batch_stats", "intermediates"]), v)
    assert logits.dtype == jnp.float32  # the loss is taken in float32
    assert {a.dtype for a in jax.tree.leaves(v)} == {jnp.dtype("float32")}
    assert {a.dtype for a in jax.tree.leaves(upd["batch_stats"])} == {jnp.dtype("float32")}
    assert {a.dtype for a in jax.tree.leaves(upd["intermediates"])} == {jnp.dtype("bfloat16")}  # pre-activations
    with pytest.raises(ConfigError, match="model.dtype"):
        ModelConfig(dtype="float16")


def test_bf16_training_tracks_float32():
    """Same seed, 300 steps of the BN ConvNet on digits: the bf16 run's losses stay within
    10% of the float32 run's at every evaluation and its final test accuracy within 3
    points; the optimiser state and BN statistics stay float32 (bf16 has an 8-bit mantissa:
    relative rounding 2^-8 per operation, so the runs drift apart but train alike)."""
    cfg = TrainConfig(model=ModelConfig(arch="convnet", norm="batch", activation="relu", channels=(8, 16), dense=32),
                      optim=OptimConfig(name="momentum", learning_rate=0.02),
                      data=DataConfig(source="digits", batch_size=32), steps=300, eval_every=100)
    f32 = fit(cfg, progress=False)
    bf16 = fit(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype="bfloat16")), progress=False)
    for state in (bf16.state,):
        assert {a.dtype for a in jax.tree.leaves((state.params, state.batch_stats, state.opt_state))
                if jnp.issubdtype(a.dtype, jnp.floating)} == {jnp.dtype("float32")}
    a = [h["train_loss"] for h in f32.history]
    b = [h["train_loss"] for h in bf16.history]
    np.testing.assert_allclose(b, a, rtol=0.10)
    assert abs(bf16.summary["final_test_accuracy"] - f32.summary["final_test_accuracy"]) <= 0.03
    assert f32.summary["final_test_accuracy"] > 0.85  # both really trained
    # and they are not the same computation: bf16 rounding changes the parameters
    assert not np.allclose(bf16.state.params["head"]["kernel"], f32.state.params["head"]["kernel"], atol=1e-6)
