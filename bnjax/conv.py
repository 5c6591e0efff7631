"""Convolution and pooling with a CPU-friendly formulation.

Why: on XLA:CPU, ``lax.conv_general_dilated`` and ``reduce_window`` max-pooling inside a
``lax.scan`` (how bnjax runs chunks of steps) ran the speedrun CNN at 504 ms per step
(batch 256, 2 cores), against 120 ms jitted alone; written as im2col (shifted slices
concatenated, then one matmul) with a reshape-max pool the same step took 34 ms in scan
(experiments/bench). The slices and the matmul have cheap, fusable gradients; the
result equals ``lax.conv_general_dilated`` with SAME padding (tests).

On GPU/TPU the native convolution is faster, so ``impl="auto"`` picks im2col only on CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array
IMPLS = ("auto", "xla", "im2col")


def resolve_impl(impl: str) -> str:
    """"auto" -> "im2col" on CPU, "xla" elsewhere."""
    if impl not in IMPLS:
        raise ValueError(f"unknown conv impl {impl!r}; choose from {IMPLS}")
    if impl == "auto":
        return "im2col" if jax.default_backend() == "cpu" else "xla"
    return impl


def conv2d_im2col(x: Array, kernel: Array, padding: str = "SAME") -> Array:
    """Stride-1 2-D convolution (cross-correlation, as XLA's) by im2col + matmul.

    Args:
      x: (N, H, W, C) input.
      kernel: (kh, kw, C, O) weights (HWIO).
      padding: "SAME" (output H x W) or "VALID" (output (H-kh+1) x (W-kw+1)).
    Returns:
      (N, H', W', O).
    """
    kh, kw, _, o = kernel.shape
    if padding == "SAME":
        # XLA's SAME padding: total k - 1, the extra pixel (even k) after.
        ph, pw = (kh - 1) // 2, (kw - 1) // 2
        x = jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    elif padding != "VALID":
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    xp = x
    n, h, w = x.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
    return (cols.reshape(n * h * w, -1) @ kernel.reshape(-1, o)).reshape(n, h, w, o)


def max_pool_2x2(x: Array) -> Array:
    """2x2 max-pooling with stride 2 and SAME padding, by reshape + max (odd sides are
    padded with -inf first, as ``nn.max_pool(..., padding="SAME")`` does)."""
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
        h, w = h + h % 2, w + w % 2
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class Conv(nn.Module):
    """Stride-1 SAME or VALID convolution with the parameters of ``nn.Conv`` (``kernel`` HWIO,
    ``bias``), so the implementations are interchangeable on the same checkpoint."""

    features: int
    kernel_size: tuple[int, int]
    use_bias: bool = True
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Array] = nn.initializers.zeros
    impl: str = "auto"
    padding: str = "SAME"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        if resolve_impl(self.impl) == "im2col":
            y = conv2d_im2col(x, kernel.astype(x.dtype), self.padding)
        else:
            y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), self.padding,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(y.dtype)
        return y


def max_pool(x: Array, impl: str = "auto") -> Array:
    """2x2/2 max-pooling, by reshape on CPU ("im2col" family) or ``nn.max_pool``."""
    if resolve_impl(impl) == "im2col":
        return max_pool_2x2(x)
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
