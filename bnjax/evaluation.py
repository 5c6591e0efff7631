"""Evaluation: loss and accuracy over a data set, BN probes, and Algorithm 2.

All functions keep their results on the device; the caller decides when to fetch.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from bnjax import data as data_lib
from bnjax.models import PROBES
from bnjax.norm import population_statistics
from bnjax.train import eval_step, moments_step

Array = jax.Array

_eval_step = jax.jit(eval_step, static_argnames="model")
_moments_step = jax.jit(moments_step, static_argnames="model")


def evaluate(model: nn.Module, variables: dict, x: Array, y: Array, *, batch_size: int = 1000) -> dict[str, Array]:
    """Mean loss and accuracy of ``model`` on ``(x, y)`` in inference mode (running BN
    statistics). Batches are padded to one size and masked, so one compiled step serves
    every batch. Each batch is a separate jitted call rather than a loop inside one
    program: XLA:CPU runs convolutions inside loops far slower (see docs/speed.md).

    Returns:
      ``{"loss": scalar, "accuracy": scalar}`` as device arrays.
    """
    n = x.shape[0]
    bs = min(batch_size, n)
    totals = None
    for start in range(0, n, bs):
        xb, yb = x[start:start + bs], y[start:start + bs]
        valid = xb.shape[0]
        if valid < bs:
            pad = bs - valid
            xb = jnp.concatenate([xb, jnp.zeros((pad,) + xb.shape[1:], xb.dtype)])
            yb = jnp.concatenate([yb, jnp.zeros((pad,), yb.dtype)])
        mask = jnp.arange(bs) < valid
        sums = _eval_step(variables, xb, yb, mask, model=model)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return {"loss": totals["loss"] / totals["count"], "accuracy": totals["correct"] / totals["count"]}


@partial(jax.jit, static_argnames=("model", "unit", "qs"))
def probe_percentiles(model: nn.Module, variables: dict, x: Array, *, unit: int = 0,
                      qs: Sequence[float] = (15.0, 50.0, 85.0)) -> dict[str, Array]:
    """Percentiles of every layer's pre-activations (the input of each nonlinearity),
    read from the ``intermediates`` collection the models ``sow`` into.

    For Figure 1 of the BN paper: the distribution over examples of one unit's input
    (``unit``; for conv layers, that channel over all positions) as the network sees it
    *in training*: normalisers use the statistics of the probe batch ``x`` (nothing is
    stored), so the probe shows what the sigmoid receives, not the lag of the running
    averages.

    Returns:
      ``{layer_path: (len(qs),) percentiles}``; layer paths are like ``block2``.
    """
    _, coll = model.apply(variables, x, True, mutable=[PROBES, "batch_stats"],
                          rngs={"dropout": jax.random.key(0)})  # dropout comes after every probe
    out = {}
    flat = jax.tree_util.tree_flatten_with_path(coll[PROBES])[0]
    for path, value in flat:
        name = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path[:-2])
        out[name] = jnp.percentile(value[..., unit].reshape(-1).astype(jnp.float32), jnp.asarray(qs))
    return out


def recompute_batch_stats(model: nn.Module, variables: dict, train_x: Array, *, key: Array,
                          batch_size: int, num_batches: int) -> Any:
    """Algorithm 2 over ``num_batches`` training batches drawn without replacement.

    Returns:
      New ``batch_stats`` with the population statistics.
    """
    # A reserved epoch number: an order of the training set no training epoch uses.
    idx = data_lib.epoch_batches(key, 2**31 - 1, train_x.shape[0], batch_size)
    if num_batches > idx.shape[0]:
        raise ValueError(f"population statistics: {num_batches} batches asked, one epoch has {idx.shape[0]}")
    batches = (train_x[idx[i]] for i in range(num_batches))
    return population_statistics(lambda xb: _moments_step(variables, xb, model=model),
                                 variables["batch_stats"], batches)


def fetch(tree: Any) -> Any:
    """Bring a tree of device scalars/arrays to the host as Python floats / lists."""
    return jax.tree.map(lambda a: np.asarray(a).tolist(), tree)

