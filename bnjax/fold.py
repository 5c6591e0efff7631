"""Folding BatchNorm into the preceding layer for inference.

In eval mode BN is the per-feature affine map ``y = s * (z - mu) + beta`` with
``s = gamma / sqrt(var + eps)``. When BN follows a Dense or Conv layer ``z = W x (+ b)``
(placement "before", the BN paper's choice), it folds into that layer:
``W' = W * s`` (per output feature) and ``b' = s * (b - mu) + beta``. The result is the
same network built without BN, with equal outputs in eval mode.

Placement "after" (BN after the nonlinearity) is refused: there BN would have to fold
into the *next* layer, and a max-pool in between does not commute with a negative scale.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp


def fold_batchnorm(model_cfg: Any, variables: dict) -> tuple[Any, dict]:
    """Fold every BN layer of a bnjax MLP / ConvNet into its preceding layer.

    Args:
      model_cfg: the ModelConfig of the trained model (norm="batch", placement="before").
      variables: its ``{"params", "batch_stats"}``.
    Returns:
      ``(folded_cfg, folded_variables)``: a config with ``norm="none"`` and its params;
      ``build_model(folded_cfg).apply(folded_variables, x, False)`` equals the original
      model's eval-mode output.
    """
    if model_cfg.norm != "batch":
        raise ValueError(f"fold_batchnorm needs norm='batch', got norm={model_cfg.norm!r}")
    if model_cfg.placement != "before":
        raise ValueError("fold_batchnorm supports placement='before' only: after the nonlinearity BN would fold "
                         "into the next layer, which a max-pool in between prevents")
    eps = model_cfg.bn_epsilon
    params, stats = variables["params"], variables["batch_stats"]
    folded = {}
    for name, block in params.items():
        if "norm" not in block:
            folded[name] = block
            continue
        bn_p, bn_s = block["norm"]["norm"], stats[name]["norm"]["norm"]
        s = bn_p["scale"] / jnp.sqrt(bn_s["var"] + eps)
        kernel = block["linear"]["kernel"] * s  # broadcasts over the last (output) axis
        bias = bn_p["bias"] - s * bn_s["mean"] + s * block["linear"].get("bias", 0.0)
        folded[name] = {"linear": {"kernel": kernel, "bias": bias}}
    return dataclasses.replace(model_cfg, norm="none"), {"params": folded}
