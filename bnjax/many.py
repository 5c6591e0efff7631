"""Many runs in one compiled program: the stacked-state primitives. Runs of one config
that differ only along the run axes (`bnjax.programs.RUN_AXES`: seed, learning-rate
multiplier, weight decay, initialiser and its scale) train together through `bnjax.fit`
given a list of configs (run directories as for one run), one result per config (`stack` stacks their states).

The states of the K runs are stacked along a leading axis and the *same* pure
`train_chunk` runs over them, either vectorised (``jax.vmap``: one wide program, best
for matmul models everywhere and for the im2col ConvNet on CPU) or sequentially inside
the program (``lax.map``: for native convolutions on GPU, where vmap turns convolutions
into slow grouped convolutions, jax-ml/jax#13800). `layout_for` chooses per model and
backend. Each run draws exactly the randomness it draws alone (its keys come from its
own seed), so a run in a group equals the run alone up to floating-point reassociation.

The learning-rate multiplier (the BN paper's "x5", "x30") and the weight decay change no
shape: every bnjax optimiser carries them as injected hyper-parameters in each run's
optimiser state (`bnjax.optim`). The initialiser only acts when the state is created.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from bnjax import augment as aug
from bnjax.config import TrainConfig
from bnjax.train import DATA, TrainState, chunk_batch, chunk_orders, create_state, train_chunk, train_step

#: How K runs share one program: "vmap" (the step vmapped over the run axis), "map"
#: (``lax.map``: one run after another inside the program) or "matmul" ("vmap" with the
#: ConvNet's convolutions as bnjax's im2col matmuls, `bnjax.conv`, so that K models'
#: convolutions become batched matmuls instead of one grouped convolution).
LAYOUTS = ("vmap", "map", "matmul")


def layout_for(cfg: TrainConfig, backend: str | None = None) -> str:
    """The layout for K runs of ``cfg`` on ``backend`` (default: JAX's default backend).

    The rule: the MLP is vmapped everywhere (its layers are matmuls). ConvNets are
    "matmul" on GPU/TPU, because vmapped native convolutions become grouped convolutions
    (0.09x per model on an H200, jax-ml/jax#13800), and "map" on CPU, where the vmapped
    im2col ConvNet ran at 0.79x per model on 2 cores (experiments/bench/seeds.py)."""
    if cfg.model.arch == "mlp":
        return "vmap"
    return "map" if (backend or jax.default_backend()) == "cpu" else "matmul"


def train_model(model_cfg: Any, layout: str) -> Any:
    """The model config a layout trains with: "matmul" forces the im2col convolution."""
    if layout == "matmul" and model_cfg.arch != "mlp":
        return dataclasses.replace(model_cfg, conv_impl="im2col")
    return model_cfg


def stack(states: list[Any]) -> Any:
    """States (or any equal-structured trees) stacked along a new leading run axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def init_many(model: Any, tx: Any, sample_x: jax.Array, seeds: list[int]) -> TrainState:
    """The stacked initial states of ``seeds`` (each as `create_state` makes it alone)."""
    return stack([create_state(model, tx, sample_x, s) for s in seeds])


def _over_runs(fn: Any, states: Any, layout: str) -> Any:
    if layout in ("vmap", "matmul"):
        return jax.vmap(fn)(states)
    if layout == "map":
        return jax.lax.map(fn, states)
    raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")


def train_chunk_many(states: TrainState, train_x: jax.Array, train_y: jax.Array, *, layout: str,
                     share_data: bool = False, model: Any, tx: Any, pipeline: aug.Pipeline, batch_size: int,
                     n_steps: int):
    """`train_chunk` over the leading run axis of ``states`` (static keywords as there).

    With ``share_data`` every run trains on run 0's batches (run 0's data key; the runs must
    be at the same step): the batch is gathered once per step and, under vmap, enters every
    run's first layer unbatched, so K first layers become one matmul K times wider (for the
    MLP on CPU the first layer is 2/3 of the step's multiply-adds). Each run still draws its
    own initialisation, dropout and augmentation. Run i then equals run i alone with its
    data key replaced by run 0's (tests).
    """
    if not share_data:
        one = partial(train_chunk, train_x=train_x, train_y=train_y, model=model, tx=tx, pipeline=pipeline,
                      batch_size=batch_size, n_steps=n_steps)
        return _over_runs(one, states, layout)
    orders = chunk_orders(states.keys[0, DATA], states.step[0], train_x.shape[0], batch_size, n_steps)

    def body(sts, t):
        xb, yb = chunk_batch(train_x, train_y, orders, t)
        return _over_runs(lambda s: train_step(s, xb, yb, model=model, tx=tx, pipeline=pipeline), sts, layout)

    states, metrics = jax.lax.scan(body, states, jnp.arange(n_steps))
    return states, jax.tree.map(lambda m: jnp.moveaxis(m, 0, 1), metrics)  # (K, n_steps), as unshared


def unstack(states: TrainState, i: int) -> TrainState:
    """Run ``i`` of a stacked state."""
    return jax.tree.map(lambda a: a[i], states)
