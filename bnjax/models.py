"""Models of the lecture: the BN paper's MNIST MLP and a small ConvNet.

Every knob the experiments turn is chosen from a registry that raises on unknown names:
the normaliser (`NORMS`), its placement relative to the nonlinearity (the lecture's
variant A "before" and B "after"), the activation (`ACTIVATIONS`) and the kernel
initialiser (`INITS`). A layer followed by a normaliser that has its own shift (BN, LN,
GN) has no bias: the normaliser's beta makes it redundant (BN paper, section 3.2).

Each pre-activation (the input of a nonlinearity) is written with ``sow`` into the
``intermediates`` collection, so internal-covariate-shift probes can read it without changing
the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from bnjax.conv import Conv, max_pool, pool_fusable, resolve_impl, window_max
from bnjax.norm import BatchNorm

Array = jax.Array
PROBES = "intermediates"  # Flax's conventional name: init does not keep it

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
}


def _init(name: str, std: float) -> Callable[..., Array]:
    table = {
        "lecun_normal": nn.initializers.lecun_normal(),  # Flax default: N(0, 1/fan_in), truncated
        "xavier_uniform": nn.initializers.xavier_uniform(),  # Glorot & Bengio 2010
        "normal": nn.initializers.normal(stddev=std),
        # PyTorch's nn.Linear/nn.Conv default, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        "torch": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
    }
    return table[name]


INITS = ("lecun_normal", "xavier_uniform", "normal", "torch")
NORMS = ("none", "batch", "ghost", "renorm", "layer", "group")
PLACEMENTS = ("before", "after")
ARCHS = ("mlp", "convnet", "vgg")
#: Compute dtypes (``ModelConfig.dtype``): activations and matmuls; parameters, optimiser
#: state and BN statistics are float32 either way.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # vgg: the ConvNet with a pool after every two convolutions


def make_norm(
    name: str,
    *,
    momentum: float = 0.99,
    epsilon: float = 1e-5,
    variance: str = "two_pass",
    virtual_batch_size: int = 0,
    groups: int = 4,
    axis_name: str | None = None,
    renorm_warmup: int = 0,
    renorm_ramp: int = 1,
) -> Callable[..., nn.Module] | None:
    """A factory ``(name=...) -> module`` for the named normaliser, or None for "none".

    Every returned module is called as ``norm(x, train)``.
    """
    if name == "none":
        return None
    if name in ("batch", "ghost"):
        if name == "ghost" and virtual_batch_size < 2:
            raise ValueError("norm='ghost' needs virtual_batch_size >= 2")
        return partial(
            _TrainFlag, inner=partial(
                BatchNorm, momentum=momentum, epsilon=epsilon, variance=variance, axis_name=axis_name,
                virtual_batch_size=virtual_batch_size if name == "ghost" else None,
            ), flag="use_running_average")
    if name == "renorm":
        from bnjax.renorm import BatchRenorm

        return partial(_TrainFlag, inner=partial(
            BatchRenorm, momentum=momentum, epsilon=epsilon, warmup_steps=renorm_warmup,
            ramp_steps=renorm_ramp), flag="use_running_average")
    if name == "layer":
        return partial(_TrainFlag, inner=partial(nn.LayerNorm, epsilon=epsilon), flag=None)
    if name == "group":
        return partial(_TrainFlag, inner=partial(nn.GroupNorm, num_groups=groups, epsilon=epsilon), flag=None)
    raise ValueError(f"unknown norm {name!r}; choose from {NORMS}")


class _TrainFlag(nn.Module):
    """Gives every normaliser the call signature ``norm(x, train)``."""

    inner: Callable[..., nn.Module]
    flag: str | None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        if self.flag is None:
            return self.inner(name="norm")(x)
        return self.inner(name="norm", **{self.flag: not train})(x)


class _Block(nn.Module):
    """linear -> [norm] -> act (placement "before", variant A) or
    linear -> act -> [norm] (placement "after", variant B)."""

    layer: Callable[..., nn.Module]
    norm: Callable[..., nn.Module] | None
    placement: str
    activation: Callable[[Array], Array]

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        before = self.norm is not None and self.placement == "before"
        h = self.layer(use_bias=not before, name="linear")(x)
        if before:  # normalisers compute their statistics in float32; keep the block's dtype
            h = self.norm(name="norm")(h, train).astype(h.dtype)
        self.sow(PROBES, "preact", h)
        h = self.activation(h)
        if self.norm is not None and self.placement == "after":
            h = self.norm(name="norm")(h, train).astype(h.dtype)
        return h


class MLP(nn.Module):
    """Fully connected classifier; the BN paper's MNIST net is hidden=(100, 100, 100)
    with sigmoid units (section 4.1)."""

    hidden: Sequence[int] = (100, 100, 100)
    num_classes: int = 10
    activation: str = "sigmoid"
    norm: Callable[..., nn.Module] | None = None
    placement: str = "before"
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
    dropout: float = 0.0
    dtype: Any = jnp.float32  # activations and matmuls; parameters stay float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        """Args: x: (N, ...) images or features; train: batch statistics and dropout on.
        Returns: (N, num_classes) float32 logits."""
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        for i, width in enumerate(self.hidden):
            dense = partial(nn.Dense, width, kernel_init=self.kernel_init, dtype=self.dtype)
            x = _Block(dense, self.norm, self.placement, ACTIVATIONS[self.activation], name=f"block{i}")(x, train)
        x = nn.Dropout(self.dropout, deterministic=not train)(x) if self.dropout else x
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, dtype=self.dtype, name="head")(x).astype(
            jnp.float32)


class ConvNet(nn.Module):
    """ConvNet for 8x8, 28x28 and 32x32 images: stages of conv(k x k) -> block, with a
    2x2 max-pool after every ``pool_every`` convolutions, then a dense block and the
    classifier. With channels=(24, 32), kernels=(5, 3), dense=256, pool_every=1 this is the
    MNIST speedrun net; with 3x3 kernels and pool_every=2 it is VGG-style (Simonyan &
    Zisserman 2015: stacks of 3x3 conv-(norm)-act, a pool after each pair), the kind of
    network Santurkar et al. 2018 (Figure 1) train with and without BN."""

    channels: Sequence[int] = (24, 32)
    kernels: Sequence[int] = (5, 3)
    dense: int = 256
    num_classes: int = 10
    activation: str = "relu"
    norm: Callable[..., nn.Module] | None = None
    placement: str = "before"
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
    dropout: float = 0.0
    conv_impl: str = "auto"  # bnjax.conv: im2col on CPU, XLA's convolution elsewhere
    padding: str = "SAME"  # "VALID" as in the MNIST speedrun recipe
    pool_every: int = 1  # convolutions per 2x2 max-pool (2: VGG-style)
    dtype: Any = jnp.float32  # activations, convolutions and matmuls; parameters stay float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        """Args: x: (N, H, W, C) or (N, H, W) images; train: batch statistics and dropout
        on. Returns: (N, num_classes) float32 logits."""
        x = x.astype(self.dtype)  # bnjax.conv.Conv computes in its input's dtype
        if x.ndim == 3:
            x = x[..., None]
        self._check_size(x.shape)
        act = ACTIVATIONS[self.activation]
        for i, (ch, k) in enumerate(zip(self.channels, self.kernels, strict=True)):
            pool = (i + 1) % self.pool_every == 0
            # On the im2col path a pooled conv's output comes grouped by pooling window
            # (bnjax.conv.conv2d_pool_s2d); the block's normaliser and activation are
            # layout-agnostic, and the pool is a max over the window axis.
            grouped = (pool and resolve_impl(self.conv_impl) == "im2col"
                       and pool_fusable(x.shape, (k, k), self.padding))
            conv = partial(Conv, ch, (k, k), kernel_init=self.kernel_init, impl=self.conv_impl, padding=self.padding,
                           pool_layout=grouped)
            x = _Block(conv, self.norm, self.placement, act, name=f"conv{i}")(x, train)
            if pool:
                x = window_max(x, 3) if grouped else max_pool(x, self.conv_impl)
        x = x.reshape((x.shape[0], -1))
        dense = partial(nn.Dense, self.dense, kernel_init=self.kernel_init, dtype=self.dtype)
        x = _Block(dense, self.norm, self.placement, act, name="fc")(x, train)
        x = nn.Dropout(self.dropout, deterministic=not train)(x) if self.dropout else x
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, dtype=self.dtype, name="head")(x).astype(
            jnp.float32)

    def _check_size(self, shape: tuple[int, ...]) -> None:
        """Raise a ValueError naming the input shape if the stages shrink it below 1 pixel."""
        side = min(shape[1:3]) if len(shape) == 4 else 0
        for i, k in enumerate(self.kernels):
            side -= k - 1 if self.padding == "VALID" else 0
            side = (side + 1) // 2 if (i + 1) % self.pool_every == 0 else side
        if len(shape) != 4 or side < 1:
            raise ValueError(
                f"ConvNet with kernels {tuple(self.kernels)}, {self.padding} padding and a 2x2 pool after every "
                f"{self.pool_every} convolution(s) needs larger images (N, H, W[, C]); got input of shape {shape}"
            )


def build_model(cfg: Any, *, axis_name: str | None = None) -> nn.Module:
    """Build the model a `bnjax.config.ModelConfig` describes.

    Args:
      cfg: a validated ModelConfig.
      axis_name: named device axis over which BN reduces its statistics (data parallel).
    Returns:
      An unbound Flax module called as ``model.apply(variables, x, train)``.
    """
    norm = make_norm(
        cfg.norm, momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon, variance=cfg.bn_variance,
        virtual_batch_size=cfg.virtual_batch_size, groups=cfg.groups, axis_name=axis_name,
        renorm_warmup=cfg.renorm_warmup, renorm_ramp=cfg.renorm_ramp,
    )
    common = dict(
        num_classes=cfg.num_classes, activation=cfg.activation, norm=norm, placement=cfg.placement,
        kernel_init=_init(cfg.init, cfg.init_std), dropout=cfg.dropout, dtype=DTYPES[cfg.dtype],
    )
    if cfg.arch == "mlp":
        return MLP(hidden=tuple(cfg.hidden), **common)
    if cfg.arch in ("convnet", "vgg"):
        return ConvNet(channels=tuple(cfg.channels), kernels=tuple(cfg.kernels), dense=cfg.dense,
                       conv_impl=cfg.conv_impl, padding=cfg.padding.upper(), pool_every=2 if cfg.arch == "vgg" else 1,
                       **common)
    raise ValueError(f"unknown arch {cfg.arch!r}; choose from {ARCHS}")
