"""Batch Renormalization (Ioffe 2017, arXiv 1702.03275), Algorithm 1 of that paper.

Training output ``y = gamma * ((x - mu_B) / sigma_B * r + d) + beta`` with
``r = stop_gradient(clip(sigma_B / sigma, 1/r_max, r_max))`` and
``d = stop_gradient(clip((mu_B - mu) / sigma, -d_max, d_max))`` where ``mu`` and
``sigma`` are the moving averages. With r_max = 1 and d_max = 0 it is exactly BN. In
training mode it writes the batch moments it used to ``MOMENTS_COLLECTION`` when that
collection is mutable, so the BN paper's Algorithm 2 applies to it as to `BatchNorm`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from bnjax.norm import MOMENTS_COLLECTION, batch_moments, declare_variables, normalize, update_running

Array = jax.Array


def renorm_limits(step: Array, *, warmup_steps: int, ramp_steps: int,
                  r_max: float = 3.0, d_max: float = 5.0) -> tuple[Array, Array]:
    """The paper's schedule: r_max = 1 and d_max = 0 for ``warmup_steps``, then both
    relaxed linearly to ``r_max`` and ``d_max`` over ``ramp_steps``.

    Returns:
      ``(r_max(step), d_max(step))``.
    """
    frac = jnp.clip((step - warmup_steps) / max(ramp_steps, 1), 0.0, 1.0)
    return 1.0 + frac * (r_max - 1.0), frac * d_max


class BatchRenorm(nn.Module):
    """Batch Renormalization layer; variables as in `bnjax.BatchNorm` plus a step counter
    ``batch_stats/step`` that drives the r_max / d_max schedule.

    Attributes:
      r_max, d_max: final clipping limits (paper: 3 and 5).
      warmup_steps, ramp_steps: schedule of `renorm_limits`.
      fixed_limits: if set, ``(r_max, d_max)`` used at every step instead of the schedule.
    """

    use_running_average: bool | None = None
    axis: int = -1
    momentum: float = 0.99
    epsilon: float = 1e-5
    r_max: float = 3.0
    d_max: float = 5.0
    warmup_steps: int = 5000
    ramp_steps: int = 35000
    fixed_limits: tuple[float, float] | None = None
    scale_init: Callable[..., Array] = nn.initializers.ones
    bias_init: Callable[..., Array] = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: Array, use_running_average: bool | None = None) -> Array:
        use_ra = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        _, red, shape, ra_mean, ra_var, scale, bias = declare_variables(self, x, self.axis)
        step = self.variable("batch_stats", "step", lambda: jnp.zeros((), jnp.int32))
        if use_ra:
            return normalize(x, ra_mean.value, ra_var.value, scale, bias, epsilon=self.epsilon, feature_shape=shape)
        mean, var, count = batch_moments(x, red)
        sigma_b = jnp.sqrt(var + self.epsilon)
        sigma = jnp.sqrt(ra_var.value + self.epsilon)
        if self.fixed_limits is not None:
            r_max, d_max = self.fixed_limits
        else:
            r_max, d_max = renorm_limits(step.value, warmup_steps=self.warmup_steps, ramp_steps=self.ramp_steps,
                                         r_max=self.r_max, d_max=self.d_max)
        r = jax.lax.stop_gradient(jnp.clip(sigma_b / sigma, 1.0 / r_max, r_max))
        d = jax.lax.stop_gradient(jnp.clip((mean - ra_mean.value) / sigma, -d_max, d_max))
        xhat = (x - mean.reshape(shape)) / sigma_b.reshape(shape) * r.reshape(shape) + d.reshape(shape)
        y = xhat * scale.reshape(shape) + bias.reshape(shape)
        if not self.is_initializing():
            ra_mean.value, ra_var.value = update_running(
                ra_mean.value, ra_var.value, mean, var, count, momentum=self.momentum)
            step.value = step.value + 1
            if self.is_mutable_collection(MOMENTS_COLLECTION):  # Algorithm 2 (population statistics) reads these
                self.put_variable(MOMENTS_COLLECTION, "moments", {"mean": mean, "var": var, "count": count})
        return y.astype(jnp.result_type(x, scale))

