"""K seeds in one program equal the same seeds trained alone."""

import dataclasses

import jax
import numpy as np
import pytest

from bnjax import fit
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.many import fit_many, unstack

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.mark.parametrize("arch,layout", [("mlp", "vmap"), ("convnet", "vmap"), ("convnet", "map")])
def test_runs_in_one_program_equal_runs_alone(arch, layout):
    cfg = TrainConfig(model=ModelConfig(arch=arch, hidden=(32, 16), channels=(4, 6), dense=16, norm="batch",
                                        activation="relu", dropout=0.2),
                      optim=OptimConfig(name="momentum", learning_rate=0.05),
                      data=DataConfig(source="digits", batch_size=16, augment="hflip,rotate:10"),
                      steps=30, eval_every=15)
    seeds = [3, 7]
    states, histories, _ = fit_many(cfg, seeds, layout=layout)
    for i, seed in enumerate(seeds):
        alone = fit(dataclasses.replace(cfg, seed=seed), progress=False)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
                     unstack(states, i).params, alone.state.params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
                     unstack(states, i).batch_stats, alone.state.batch_stats)
        assert [h["step"] for h in histories[i]] == [15, 30]
        np.testing.assert_allclose(histories[i][-1]["test_accuracy"], alone.summary["final_test_accuracy"], atol=1e-2)
    # different seeds really differ
    assert not np.allclose(unstack(states, 0).params["head"]["kernel"], unstack(states, 1).params["head"]["kernel"])


def test_learning_rate_multiplier_as_a_run_axis():
    cfg = TrainConfig(model=ModelConfig(arch="mlp", hidden=(32,), norm="batch", activation="relu"),
                      optim=OptimConfig(name="momentum", learning_rate=0.02, weight_decay=1e-3,
                                        schedule="exponential", decay_steps=10, decay_rate=0.5),
                      data=DataConfig(source="digits", batch_size=16), steps=20, eval_every=20)
    mults = [1.0, 5.0, 30.0]
    states, _, _ = fit_many(cfg, [0, 0, 0], lr_multipliers=mults)
    for i, m in enumerate(mults):
        alone = fit(dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_multiplier=m)), progress=False)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                     unstack(states, i).params, alone.state.params)
