"""What BN costs: a BN ConvNet train step versus the same step without BN, and BN's
two-pass versus one-pass variance, each timed as a lax.scan of steps (batch 256).

    python -m experiments.bench.bn_cost [--steps 50]
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.programs import compiled_chunk, model_for, optimizer_for
from experiments import _cli
from experiments.bench._state import compiled_init
from experiments.bench._timing import median_seconds, table

BASE = TrainConfig(model=ModelConfig(arch="convnet", activation="relu", norm="batch"),
                   optim=OptimConfig(name="adam", learning_rate=1e-3), data=DataConfig(batch_size=256))


def step_seconds(model_cfg: ModelConfig, x, y, steps: int, repeats: int, *, batch: int = 256) -> float:
    """Seconds per train step of ``model_cfg`` (Adam, a lax.scan of ``steps`` steps)."""
    model, tx = model_for(model_cfg), optimizer_for(BASE.optim, steps)
    holder = [compiled_init(model, tx, x[:batch], 0)]

    def run():
        holder[0], m = compiled_chunk(holder[0], x, y, model=model, tx=tx, pipeline=(), batch_size=batch,
                                      n_steps=steps)
        jax.block_until_ready(m)

    return median_seconds(run, repeats=repeats) / steps


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    args = _cli.parse(p, argv)
    rng = np.random.default_rng(0)
    x = jax.numpy.asarray(rng.standard_normal((20_000, 28, 28, 1), np.float32))
    y = jax.numpy.asarray(rng.integers(0, 10, 20_000).astype(np.int32))
    arms = {"no BN": dataclasses.replace(BASE.model, norm="none"), "BN, two-pass variance": BASE.model,
            "BN, one-pass variance": dataclasses.replace(BASE.model, bn_variance="one_pass")}
    t = {name: step_seconds(cfg, x, y, args.steps, args.repeats) for name, cfg in arms.items()}
    base = t["no BN"]
    rows = [[name, f"{s * 1e3:.2f}", f"{256 / s:,.0f}", f"{s / base:.2f}x"] for name, s in t.items()]
    print(f"ConvNet train step, batch 256, backend {jax.default_backend()}")
    print(table(["variant", "ms / step", "images / s", "time relative to no BN"], rows))


if __name__ == "__main__":
    main()
