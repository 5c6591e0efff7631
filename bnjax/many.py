"""Many runs in one compiled program: K seeds (and learning-rate multipliers) of one
config trained together.

The states of the K runs are stacked along a leading axis and the *same* pure
`train_chunk` runs over them, either vectorised (``jax.vmap``: one wide program, best
for matmul models everywhere and for the im2col ConvNet on CPU) or sequentially inside
the program (``lax.map``: for native convolutions on GPU, where vmap turns convolutions
into slow grouped convolutions, jax-ml/jax#13800). `layout_for` chooses per model and
backend. Each run draws exactly the randomness it draws alone (its keys come from its
own seed), so a run in a group equals the run alone up to floating-point reassociation.

The learning-rate multiplier (the BN paper's "x5", "x30") changes no shape, so it too
can differ between the runs of a group: the optimiser ends with an injected
``optax.scale`` whose factor lives in each run's optimiser state.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnjax import augment as aug
from bnjax import data as data_lib
from bnjax.config import TrainConfig
from bnjax.evaluation import evaluate
from bnjax.loop import eval_model_for, load_dataset, model_for, optimizer_for
from bnjax.train import TrainState, create_state, train_chunk

LAYOUTS = ("vmap", "map")


def layout_for(cfg: TrainConfig) -> str:
    """"vmap" for the MLP, "map" for the ConvNet: vmapped native convolutions become
    grouped convolutions (0.09x per model on an H200, jax-ml/jax#13800) and the vmapped
    im2col ConvNet ran at 0.79x per model on 2 CPU cores (experiments/bench/seeds.py)."""
    return "map" if cfg.model.arch == "convnet" else "vmap"


def init_many(model: Any, tx: Any, sample_x: jax.Array, seeds: list[int]) -> TrainState:
    """The stacked initial states of ``seeds`` (each as `create_state` makes it alone)."""
    states = [create_state(model, tx, sample_x, s) for s in seeds]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def train_chunk_many(states: TrainState, train_x: jax.Array, train_y: jax.Array, *, layout: str, **kw: Any):
    """`train_chunk` over the leading run axis of ``states`` (static keywords as there)."""
    one = partial(train_chunk, train_x=train_x, train_y=train_y, **kw)
    if layout == "vmap":
        return jax.vmap(lambda s: one(s))(states)
    if layout == "map":
        return jax.lax.map(lambda s: one(s), states)
    raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")


_chunk_many = jax.jit(train_chunk_many, static_argnames=("layout", "model", "tx", "pipeline", "batch_size",
                                                         "n_steps"), donate_argnums=0)


def scaled_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """The config's optimiser at multiplier 1, followed by an injected ``scale`` whose
    ``step_size`` (the multiplier) is part of the optimiser state."""
    base = optimizer_for(dataclasses.replace(cfg.optim, lr_multiplier=1.0), cfg.steps)
    return optax.chain(base, optax.inject_hyperparams(optax.scale)(step_size=1.0))


def with_multiplier(state: TrainState, multiplier: float) -> TrainState:
    """Set the injected learning-rate multiplier of a `scaled_optimizer` state."""
    inner, injected = state.opt_state
    hyper = {**injected.hyperparams, "step_size": jnp.asarray(multiplier, jnp.float32)}
    return state.replace(opt_state=(inner, injected._replace(hyperparams=hyper)))


_scaled_optimizer = functools.lru_cache(maxsize=16)(scaled_optimizer)


def unstack(states: TrainState, i: int) -> TrainState:
    """Run ``i`` of a stacked state."""
    return jax.tree.map(lambda a: a[i], states)


def fit_many(cfg: TrainConfig, seeds: list[int], *, dataset: data_lib.Dataset | None = None,
             device_data: dict | None = None, layout: str | None = None,
             lr_multipliers: list[float] | None = None) -> tuple[TrainState, list[list[dict]], float]:
    """Train ``cfg`` for every seed in one program (no workdir; for sweeps and benchmarks).

    Args:
      lr_multipliers: optional, one per seed: run i uses ``cfg`` with
        ``optim.lr_multiplier = lr_multipliers[i]`` (replacing the config's multiplier).
    Returns:
      ``(stacked final states, per-run evaluation histories, training seconds)``.
    """
    ds = dataset if dataset is not None else load_dataset(cfg)
    dev = device_data if device_data is not None else data_lib.to_device(ds)
    model, eval_model = model_for(cfg.model), eval_model_for(cfg.model)
    layout = layout or layout_for(cfg)
    if lr_multipliers is None:
        tx = optimizer_for(cfg.optim, cfg.steps)
        states = init_many(model, tx, dev["x_train"][: cfg.data.batch_size], list(seeds))
    else:
        if len(lr_multipliers) != len(seeds):
            raise ValueError(f"{len(lr_multipliers)} learning-rate multipliers for {len(seeds)} seeds")
        tx = _scaled_optimizer(cfg)
        states = [with_multiplier(create_state(model, tx, dev["x_train"][: cfg.data.batch_size], s), m)
                  for s, m in zip(seeds, lr_multipliers, strict=True)]
        states = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    pipeline = aug.parse_pipeline(cfg.data.augment)
    histories: list[list[dict]] = [[] for _ in seeds]
    step, t0 = 0, time.perf_counter()
    while step < cfg.steps:
        n = min(cfg.eval_every, cfg.steps - step)
        states, metrics = _chunk_many(states, dev["x_train"], dev["y_train"], layout=layout, model=model, tx=tx,
                                      pipeline=pipeline, batch_size=cfg.data.batch_size, n_steps=n)
        step += n
        losses = np.asarray(metrics["loss"])  # (K, n): the host syncs at evaluation points only
        for i in range(len(seeds)):
            test = evaluate(eval_model, unstack(states, i).variables, dev["x_test"], dev["y_test"],
                            batch_size=cfg.data.eval_batch_size)
            histories[i].append({"step": step, "train_loss": float(losses[i].mean()),
                                 "test_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"])})
    return states, histories, time.perf_counter() - t0
