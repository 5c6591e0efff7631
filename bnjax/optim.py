"""Optimisers and learning-rate schedules, built from optax.

Weight decay is L2 on *kernels* only: BN's scale and shift and every bias are left out
by `decay_mask`, since decaying them fights the normaliser (and gamma sets the scale
BN restores). For SGD/momentum/Adam the decay ``wd * w`` is added to the gradient
(coupled L2, as the BN paper's Inception uses); for AdamW it is decoupled
(Loshchilov & Hutter 2019).

The learning-rate multiplier (the BN paper's "x5", "x30") and the weight decay are not baked
into the program: the multiplier is an injected ``optax.scale`` at the end of the chain and the
decay an injected ``optax.add_decayed_weights``, both with their value in the optimiser
*state* (`set_hyperparams`). Updates are linear in the learning rate for all of these
optimisers, so the multiplier equals multiplying the rate. Runs that differ only in these
values share one compiled step and can be stacked along a run axis (`bnjax.many`).
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
    (`make_optimizer` applies the multiplier separately, as an injected ``scale``).

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
    """The optax transformation a `bnjax.config.OptimConfig` describes.

    sgd/momentum/nesterov/adam: ``chain(add_decayed_weights(wd), optimiser(schedule),
    scale(multiplier))``; adamw: ``chain(scale_by_adam, add_decayed_weights(wd),
    scale_by_learning_rate(schedule), scale(multiplier))``, which is ``optax.adamw``. The
    schedule is at multiplier 1; ``wd`` and ``multiplier`` are injected hyper-parameters.

    Args:
      cfg: validated OptimConfig.
      total_steps: length of the run (for cosine and one-cycle schedules).
    Returns:
      An optax GradientTransformation whose initial state carries the config's values.
    """
    lr = make_schedule(dataclasses.replace(cfg, lr_multiplier=1.0), total_steps)
    decay = optax.inject_hyperparams(optax.add_decayed_weights, static_args=("mask",))(
        weight_decay=cfg.weight_decay, mask=decay_mask)
    scale = optax.inject_hyperparams(optax.scale)(step_size=cfg.lr_multiplier)
    if cfg.name == "adamw":
        return optax.chain(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2), decay, optax.scale_by_learning_rate(lr), scale)
    if cfg.name == "sgd":
        core = optax.sgd(lr)
    elif cfg.name in ("momentum", "nesterov"):
        core = optax.sgd(lr, momentum=cfg.momentum, nesterov=cfg.name == "nesterov")
    elif cfg.name == "adam":
        core = optax.adam(lr, b1=cfg.b1, b2=cfg.b2)
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r}; choose from {OPTIMIZERS}")
    return optax.chain(decay, core, scale)


RUN_AXES = {"lr_multiplier": "step_size", "weight_decay": "weight_decay"}  # config field -> injected name


def set_hyperparams(opt_state: Any, **values: float) -> Any:
    """A `make_optimizer` state with injected hyper-parameters replaced, by config field
    name (``lr_multiplier=5.0``, ``weight_decay=5e-4``)."""
    unknown = set(values) - set(RUN_AXES)
    if unknown:
        raise ValueError(f"not injected hyper-parameters: {sorted(unknown)}; choose from {sorted(RUN_AXES)}")
    by_name = {RUN_AXES[k]: jnp.asarray(v, jnp.float32) for k, v in values.items()}
    found: set[str] = set()

    def injected(node: Any) -> bool:  # optax's Inject(Stateful)HyperparamsState
        return hasattr(node, "hyperparams") and hasattr(node, "_replace")

    def fix(node: Any) -> Any:
        if not injected(node):
            return node
        found.update(k for k in node.hyperparams if k in by_name)
        return node._replace(hyperparams={k: by_name.get(k, v) for k, v in node.hyperparams.items()})

    out = jax.tree.map(fix, opt_state, is_leaf=injected)
    if set(by_name) - found:
        raise ValueError(f"optimiser state has no injected {sorted(set(by_name) - found)}")
    return out
