"""Optimisers and learning-rate schedules, built from optax.

Weight decay is L2 on *kernels* only: BN's scale and shift and every bias are left out
by `decay_mask`, since decaying them fights the normaliser (and gamma sets the scale
BN restores). For SGD/momentum/Adam the decay ``wd * w`` is added to the gradient
(coupled L2, as the BN paper's Inception uses); for AdamW it is decoupled
(Loshchilov & Hutter 2019).

The learning-rate multiplier (the BN paper's "x5", "x30") is not folded into the schedule:
every optimiser ends with an injected ``optax.scale`` whose factor lives in the optimiser
*state* (`with_multiplier`). Updates are linear in the learning rate for all of these
optimisers, so this equals multiplying the rate; and runs that differ only in the multiplier
share one compiled step (and can be stacked along a run axis, `bnjax.many`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "exponential", "cosine", "onecycle")


def decay_mask(params: Any) -> Any:
    """A tree of bools, True exactly for weight matrices / conv kernels (leaves named
    ``kernel``), False for biases and normaliser scale/bias."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params
    )


def make_schedule(cfg: Any, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step, ``base = learning_rate * lr_multiplier``
    (`make_optimizer` applies the multiplier separately, through `with_multiplier`).

    * constant: ``base``.
    * exponential: ``base * decay_rate ** (step / decay_steps)`` after ``warmup_steps`` of
      linear warm-up.
    * cosine: linear warm-up then cosine decay to 0 at ``total_steps``.
    * onecycle: optax's one-cycle (peak ``base`` at 30% of ``total_steps``).
    """
    base = cfg.learning_rate * cfg.lr_multiplier
    if cfg.schedule == "constant":
        return optax.constant_schedule(base)
    if cfg.schedule == "exponential":
        decay = optax.exponential_decay(base, cfg.decay_steps, cfg.decay_rate)
        if not cfg.warmup_steps:
            return decay
        return optax.join_schedules([optax.linear_schedule(0.0, base, cfg.warmup_steps), decay],
                                    [cfg.warmup_steps])
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, base, cfg.warmup_steps, max(total_steps, cfg.warmup_steps + 1))
    if cfg.schedule == "onecycle":
        return optax.cosine_onecycle_schedule(total_steps, base)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose from {SCHEDULES}")


def make_optimizer(cfg: Any, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation a `bnjax.config.OptimConfig` describes: the optimiser at
    multiplier 1, then ``optax.scale(lr_multiplier)`` injected into the state.

    Args:
      cfg: validated OptimConfig.
      total_steps: length of the run (for cosine and one-cycle schedules).
    Returns:
      An optax GradientTransformation; its initial state carries ``cfg.lr_multiplier``.
    """
    base = _base_optimizer(dataclasses.replace(cfg, lr_multiplier=1.0), total_steps)
    return optax.chain(base, optax.inject_hyperparams(optax.scale)(step_size=cfg.lr_multiplier))


def with_multiplier(opt_state: Any, multiplier: float | jax.Array) -> Any:
    """A `make_optimizer` state with its learning-rate multiplier replaced."""
    inner, injected = opt_state
    hyper = {**injected.hyperparams, "step_size": jnp.asarray(multiplier, jnp.float32)}
    return (inner, injected._replace(hyperparams=hyper))


def _base_optimizer(cfg: Any, total_steps: int) -> optax.GradientTransformation:
    lr = make_schedule(cfg, total_steps)
    if cfg.name == "adamw":
        return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask)
    if cfg.name == "sgd":
        core = optax.sgd(lr)
    elif cfg.name in ("momentum", "nesterov"):
        core = optax.sgd(lr, momentum=cfg.momentum, nesterov=cfg.name == "nesterov")
    elif cfg.name == "adam":
        core = optax.adam(lr, b1=cfg.b1, b2=cfg.b2)
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r}; choose from {OPTIMIZERS}")
    if cfg.weight_decay:
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask), core)
    return core
