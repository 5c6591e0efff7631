"""Typed, validated configuration: the one place where values are checked.

Every config is a frozen dataclass; ``__post_init__`` validates it, so an invalid value
fails when the config is built, before any compute, with a `ConfigError` naming the
field. `from_dict` refuses unknown keys; `replace` takes dotted names
(``{"model.norm": "batch"}``), which is how the entry points' flags reach a config.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from bnjax import augment, models, optim


class ConfigError(ValueError):
    """An invalid configuration value; ``field`` is the dotted name of the field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"config field '{field_name}': {message}")
        self.field = field_name


def _choice(name: str, value: str, choices: typing.Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(name, f"{value!r} is not one of {choices}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(name, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """The network. ``arch``: mlp | convnet (a 2x2 pool after every convolution) | vgg (the
    same ConvNet with a pool after every two convolutions: VGG-style); ``norm`` in
    `bnjax.models.NORMS`; ``placement`` "before" (variant A, BN paper) or "after" the
    nonlinearity (variant B)."""

    arch: str = "mlp"
    hidden: tuple[int, ...] = (100, 100, 100)  # MLP widths (BN paper section 4.1)
    channels: tuple[int, ...] = (24, 32)  # ConvNet / VGG conv widths
    kernels: tuple[int, ...] = (5, 3)  # ConvNet / VGG kernel sizes, one per conv
    dense: int = 256  # ConvNet hidden dense width
    conv_impl: str = "auto"  # ConvNet: auto (im2col on CPU, XLA conv elsewhere) | xla | im2col
    padding: str = "same"  # ConvNet convolutions: same | valid
    num_classes: int = 10
    norm: str = "none"
    placement: str = "before"
    activation: str = "sigmoid"
    init: str = "lecun_normal"
    init_std: float = 0.05  # only for init="normal": N(0, init_std^2)
    dropout: float = 0.0  # drop probability before the classifier
    bn_momentum: float = 0.99  # Flax convention: running = m * running + (1 - m) * batch
    bn_epsilon: float = 1e-5
    bn_variance: str = "two_pass"
    virtual_batch_size: int = 0  # Ghost BN only
    groups: int = 4  # GroupNorm only
    renorm_warmup: int = 500  # Batch Renorm: steps with r_max=1, d_max=0
    renorm_ramp: int = 2000  # Batch Renorm: steps to relax to r_max=3, d_max=5
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 (parameters, optimiser state, BN statistics: float32)

    def __post_init__(self):
        _choice("model.arch", self.arch, models.ARCHS)
        _choice("model.norm", self.norm, models.NORMS)
        _choice("model.placement", self.placement, models.PLACEMENTS)
        _choice("model.activation", self.activation, models.ACTIVATIONS)
        _choice("model.init", self.init, models.INITS)
        _choice("model.conv_impl", self.conv_impl, ("auto", "xla", "im2col"))
        _choice("model.padding", self.padding, ("same", "valid"))
        _choice("model.bn_variance", self.bn_variance, ("two_pass", "one_pass"))
        _choice("model.dtype", self.dtype, tuple(models.DTYPES))
        for name in ("hidden", "channels", "kernels"):
            values = getattr(self, name)
            if not values or any(int(v) <= 0 for v in values):
                raise ConfigError(f"model.{name}", f"needs positive integers, got {values}")
        if len(self.channels) != len(self.kernels):
            raise ConfigError("model.kernels", f"needs one size per channel entry {self.channels}")
        if self.arch == "vgg" and len(self.channels) % 2:
            raise ConfigError("model.channels", f"arch 'vgg' pools after every two convolutions: needs an even "
                                                f"number of widths, got {self.channels}")
        _positive("model.dense", self.dense)
        if self.num_classes < 2:
            raise ConfigError("model.num_classes", f"must be >= 2, got {self.num_classes}")
        _positive("model.init_std", self.init_std)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model.dropout", f"must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ConfigError("model.bn_momentum", f"must be in [0, 1) (Flax convention), got {self.bn_momentum}")
        _positive("model.bn_epsilon", self.bn_epsilon)
        if self.norm == "ghost" and self.virtual_batch_size < 2:
            raise ConfigError("model.virtual_batch_size", "norm='ghost' needs virtual_batch_size >= 2")
        _positive("model.groups", self.groups)
        _positive("model.renorm_warmup", self.renorm_warmup, allow_zero=True)
        _positive("model.renorm_ramp", self.renorm_ramp)


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule, see `bnjax.optim.make_optimizer`. The effective learning
    rate is ``learning_rate * lr_multiplier`` (the BN paper's "x5", "x30")."""

    name: str = "sgd"
    learning_rate: float = 0.1
    lr_multiplier: float = 1.0
    momentum: float = 0.9  # sgd-momentum / nesterov: velocity decay
    b1: float = 0.9  # adam(w)
    b2: float = 0.999
    schedule: str = "constant"
    decay_rate: float = 0.1  # exponential: lr * decay_rate ** (step / decay_steps)
    decay_steps: int = 1000
    warmup_steps: int = 0  # linear warm-up for cosine / exponential
    weight_decay: float = 0.0  # L2 on kernels only (decoupled for adamw)

    def __post_init__(self):
        _choice("optim.name", self.name, optim.OPTIMIZERS)
        _choice("optim.schedule", self.schedule, optim.SCHEDULES)
        _positive("optim.learning_rate", self.learning_rate)
        _positive("optim.lr_multiplier", self.lr_multiplier)
        for name in ("momentum", "b1", "b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"optim.{name}", f"must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.decay_rate <= 1.0:
            raise ConfigError("optim.decay_rate", f"must be in (0, 1], got {self.decay_rate}")
        _positive("optim.decay_steps", self.decay_steps)
        _positive("optim.warmup_steps", self.warmup_steps, allow_zero=True)
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)


@dataclass(frozen=True)
class DataConfig:
    """Data source (`bnjax.data.load`), batching and augmentation.

    ``source``: digits | mnist | fashion_mnist | cifar10 | cifar100 | npz:PATH | idx:DIR.
    ``augment``: pipeline spec such as ``"hflip,rotate:15"`` (`bnjax.augment`).
    ``image_size``: 0 keeps the native size; otherwise images are zero-padded to it."""

    source: str = "digits"
    data_dir: str = ""  # tfds data directory ("" = tfds default)
    batch_size: int = 60
    eval_batch_size: int = 1000
    augment: str = ""
    image_size: int = 0
    val_fraction: float = -1.0  # validation split: -1 auto (digits 20%, else 10%, >= min(1000, n/5)), 0 none
    val_seed: int = 0  # the split's seed (fixed: the same split for every run)

    def __post_init__(self):
        from bnjax import data

        try:
            data.parse_source(self.source)
        except ValueError as e:
            raise ConfigError("data.source", str(e)) from None
        _positive("data.batch_size", self.batch_size)
        _positive("data.eval_batch_size", self.eval_batch_size)
        _positive("data.image_size", self.image_size, allow_zero=True)
        if not (self.val_fraction == -1.0 or 0.0 <= self.val_fraction < 0.9):
            raise ConfigError("data.val_fraction", f"must be -1 (auto), 0 (no split) or in (0, 0.9), got {self.val_fraction}")
        _positive("data.val_seed", self.val_seed, allow_zero=True)
        try:
            augment.parse_pipeline(self.augment)
        except ValueError as e:
            raise ConfigError("data.augment", str(e)) from None


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``steps`` optimiser steps; evaluation every ``eval_every`` steps
    on the validation split (which selects), and on the test split where it is reported:
    at the end and at the validation-selected evaluation, or at every evaluation with
    ``test_curve`` (a test-accuracy curve, as the BN paper's Figure 1 plots; also when
    there is no validation split). Checkpoints every ``checkpoint_every`` steps (0: at
    each evaluation), the last ``keep_checkpoints`` kept plus the best by validation
    accuracy."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 1000
    eval_every: int = 100
    seed: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    probe_unit: int = 0  # which unit's pre-activation percentiles are recorded
    probe_examples: int = 0  # test examples the BN-paper probes run on at each evaluation (0: no probes)
    test_curve: bool = False  # evaluate the test split at every evaluation (else: at the end and the selected one)
    population_stats_batches: int = 0  # >0: recompute BN statistics at the end (Algorithm 2)

    def __post_init__(self):
        _positive("steps", self.steps)
        _positive("eval_every", self.eval_every)
        _positive("seed", self.seed, allow_zero=True)
        _positive("checkpoint_every", self.checkpoint_every, allow_zero=True)
        _positive("keep_checkpoints", self.keep_checkpoints)
        _positive("probe_unit", self.probe_unit, allow_zero=True)
        _positive("probe_examples", self.probe_examples, allow_zero=True)
        _positive("population_stats_batches", self.population_stats_batches, allow_zero=True)
        if self.model.norm == "ghost" and self.data.batch_size % self.model.virtual_batch_size:
            raise ConfigError("model.virtual_batch_size",
                              f"{self.model.virtual_batch_size} does not divide data.batch_size "
                              f"{self.data.batch_size}")


# --------------------------------------------------------------------------- dicts


def to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type, d: dict, *, prefix: str = "") -> Any:
    """Build ``cls`` from a dict, refusing unknown keys (named in the error)."""
    if not isinstance(d, dict):
        raise ConfigError(prefix.rstrip(".") or cls.__name__, f"expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(prefix + unknown[0], f"unknown key (valid keys: {sorted(names)})")
    kwargs = {}
    for key, value in d.items():
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = from_dict(typ, value, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(prefix + key, typ, value)
    return cls(**kwargs)


def _coerce(name: str, typ: Any, value: Any) -> Any:
    origin = typing.get_origin(typ)
    try:
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            return tuple(int(v) for v in value)
        if typ is bool:
            if isinstance(value, str):
                low = value.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return low in ("true", "1", "yes")
            return bool(value)
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if typ is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"cannot read {value!r} as {getattr(typ, '__name__', typ)}") from None


def diff(a: Any, b: Any) -> list[str]:
    """Dotted names of the fields whose values differ between two configs."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


def flatten(cfg: Any, prefix: str = "") -> dict:
    """``{"model.norm": "batch", ...}`` for every field of a config."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out


def replace(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """`dataclasses.replace` with dotted keys: ``replace(cfg, **{"model.norm": "batch"})``."""
    d = to_dict(cfg)
    for key, value in changes.items():
        *path, leaf = key.split(".")
        node = d
        for p in path:
            if p not in node:
                raise ConfigError(key, "unknown section")
            node = node[p]
        if leaf not in node:
            raise ConfigError(key, "unknown key")
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return from_dict(TrainConfig, d)
