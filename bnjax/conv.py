"""Convolution and pooling with a CPU-friendly formulation.

Why: on XLA:CPU, ``lax.conv_general_dilated`` and ``reduce_window`` max-pooling inside a
``lax.scan`` (how bnjax runs chunks of steps) ran the speedrun CNN at 504 ms per step
(batch 256, 2 cores), against 120 ms jitted alone; written as im2col (shifted slices
concatenated, then one matmul) with a reshape-max pool the same step took 34 ms in scan
(experiments/bench). The slices and the matmul have cheap, fusable gradients; the
result equals ``lax.conv_general_dilated`` with SAME or VALID padding (tests).

A convolution followed by 2x2/2 max-pooling (every ConvNet stage) goes one step further:
``conv2d_pool_s2d`` rearranges the input space-to-depth (2x2 pixel blocks become channels)
and computes, per pooled position, the four conv outputs of its pooling window with one
matmul, returning them grouped as (N, H/2, W/2, 4, O). Pooling is then a max over axis 3,
and normalisers/activations apply unchanged to the grouped tensor (it holds every conv output
exactly once). The im2col matrix is 2.8x smaller for the 5x5 speedrun conv (the matmul does
36/25 of the multiply-adds on better shapes). With ``window_max`` (the pool's gradient to the
first maximum, without jnp.max's tie-splitting pass) one epoch of the speedrun recipe went
from 5.05 s to 3.4 s on the 2-core CPU (experiments/bench/RESULTS.md).

On GPU/TPU the native convolution is faster, so ``impl="auto"`` picks im2col only on CPU.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
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
        x = _same_pad(x, kh, kw)
    elif padding != "VALID":
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    xp = x
    n, h, w = x.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
    return (cols.reshape(n * h * w, -1) @ kernel.reshape(-1, o)).reshape(n, h, w, o)


def _same_pad(x: Array, kh: int, kw: int) -> Array:
    """XLA's SAME padding for a stride-1 conv: total k - 1, the extra pixel (even k) after."""
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    return jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))


def pool_fusable(shape: tuple[int, ...], kernel_size: tuple[int, int], padding: str = "SAME") -> bool:
    """Whether ``conv2d_pool_s2d`` applies: the conv output of an (N, H, W, C) input has
    even sides (so 2x2 pooling needs no -inf padding)."""
    if len(shape) != 4:
        return False
    (kh, kw), (h, w) = kernel_size, shape[1:3]
    if padding == "VALID":
        h, w = h - kh + 1, w - kw + 1
    return h > 0 and w > 0 and h % 2 == 0 and w % 2 == 0


@functools.lru_cache(maxsize=None)
def _s2d_selection(kh: int, kw: int) -> np.ndarray:
    """0/1 tensor S[u, v, ry, rx, di, dj, a, b] = 1 iff kernel tap (a, b) of the conv output at
    offset (di, dj) in its pooling window reads pixel (ry, rx) of 2x2 block (u, v) of its
    window: 2u + ry = di + a and 2v + rx = dj + b."""
    uh, uw = kh // 2 + 1, kw // 2 + 1
    sel = np.zeros((uh, uw, 2, 2, 2, 2, kh, kw), np.float32)
    for di, dj, a, b in itertools.product(range(2), range(2), range(kh), range(kw)):
        sel[(di + a) // 2, (dj + b) // 2, (di + a) % 2, (dj + b) % 2, di, dj, a, b] = 1.0
    return sel


def conv2d_pool_s2d(x: Array, kernel: Array, padding: str = "SAME") -> Array:
    """Stride-1 2-D convolution laid out by 2x2 pooling window, by space-to-depth + matmul.

    With y = conv(x, kernel) of shape (N, H', W', O) (H', W' even), returns z of shape
    (N, H'/2, W'/2, 4, O) with z[n, p, q, 2*di + dj, o] = y[n, 2p + di, 2q + dj, o], so
    ``z.max(axis=3)`` is 2x2/2 max-pooling of y. Every output of the window at (p, q) reads
    the (kh//2 + 1) x (kw//2 + 1) blocks of 2x2 pixels starting at block (p, q): one row of
    the im2col matrix of the space-to-depth input, times a (blocks * 4 * C, 4 * O) kernel
    built from ``kernel`` by the fixed selection ``_s2d_selection`` (so gradients reach
    ``kernel`` through a small einsum).

    Args:
      x: (N, H, W, C) input.
      kernel: (kh, kw, C, O) weights (HWIO).
      padding: "SAME" or "VALID" (see ``pool_fusable`` for the shapes that apply).
    Returns:
      (N, H'/2, W'/2, 4, O).
    """
    kh, kw, c, o = kernel.shape
    if not pool_fusable(x.shape, (kh, kw), padding):
        raise ValueError(f"conv2d_pool_s2d needs an even {padding} conv output; input {x.shape}, kernel {kh}x{kw}")
    if padding == "SAME":
        x = _same_pad(x, kh, kw)
    n, h, w, _ = x.shape
    p, q = (h - kh + 1) // 2, (w - kw + 1) // 2
    uh, uw = kh // 2 + 1, kw // 2 + 1
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))  # even k: one unused row/column
    xs = x.reshape(n, (h + 1) // 2, 2, (w + 1) // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    xs = xs.reshape(n, (h + 1) // 2, (w + 1) // 2, 4 * c)
    k = jnp.einsum("uvrsdeab,abco->uvrscdeo", jnp.asarray(_s2d_selection(kh, kw), kernel.dtype), kernel,
                   precision=jax.lax.Precision.HIGHEST).reshape(uh * uw * 4 * c, 4 * o)
    cols = jnp.concatenate([xs[:, i:i + p, j:j + q, :] for i in range(uh) for j in range(uw)], axis=-1)
    return (cols.reshape(n * p * q, -1) @ k).reshape(n, p, q, 4, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def window_max(z: Array, axis: int) -> Array:
    """``z.max(axis)`` whose gradient goes to the first maximum only, as XLA's max-pool
    (select-and-scatter) and PyTorch's do; ``jnp.max``'s gradient splits ties evenly, which
    costs an extra count-and-divide pass over z (measured: 0.8 ms of a 9 ms ConvNet step)."""
    return z.max(axis)


def _window_max_fwd(z: Array, axis: int) -> tuple[Array, tuple[Array, Array]]:
    m = z.max(axis)
    return m, (z, m)


def _window_max_bwd(axis: int, res: tuple[Array, Array], g: Array) -> tuple[Array]:
    z, m = res
    shape = [1] * z.ndim
    shape[axis] = z.shape[axis]
    idx = jnp.arange(z.shape[axis], dtype=jnp.int32).reshape(shape)
    first = jnp.min(jnp.where(z == jnp.expand_dims(m, axis), idx, z.shape[axis]), axis=axis, keepdims=True)
    return (jnp.where(idx == first, jnp.expand_dims(g, axis), jnp.zeros((), g.dtype)),)


window_max.defvjp(_window_max_fwd, _window_max_bwd)


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
    ``bias``), so the implementations are interchangeable on the same checkpoint.

    With ``pool_layout=True`` (im2col family only) the output is ``conv2d_pool_s2d``'s
    (N, H'/2, W'/2, 4, O) grouping, for a 2x2 max-pool that follows (a max over axis 3)."""

    features: int
    kernel_size: tuple[int, int]
    use_bias: bool = True
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Array] = nn.initializers.zeros
    impl: str = "auto"
    padding: str = "SAME"
    pool_layout: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        if self.pool_layout:
            if resolve_impl(self.impl) != "im2col":
                raise ValueError("pool_layout needs the im2col convolution")
            y = conv2d_pool_s2d(x, kernel.astype(x.dtype), self.padding)
        elif resolve_impl(self.impl) == "im2col":
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
