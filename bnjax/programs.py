"""What is compiled and what varies per run: the one place that splits a config into a
*program key* (everything that changes the compiled train chunk) and *run values* (the
seed, learning-rate multiplier, weight decay and initialiser, which live in the state
or only act at initialisation).

Runs with equal program keys share one model, one optimiser and one compiled chunk, one
after another or stacked in one program (`bnjax.many`). The model and optimiser caches
below are keyed by the program key's parts, so equal configs get the *same* objects and
jit's cache hits.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax

from bnjax import augment as aug
from bnjax import many
from bnjax.config import TrainConfig
from bnjax.models import build_model
from bnjax.optim import make_optimizer, set_hyperparams
from bnjax.train import TrainState, create_state, train_chunk

#: Config fields that vary per run inside one compiled program (dotted names).
RUN_AXES = ("seed", "optim.lr_multiplier", "optim.weight_decay", "model.init", "model.init_std")

_DEFAULTS = TrainConfig()


def program_key(cfg: TrainConfig) -> TrainConfig:
    """The config with every run axis reset to its default: configs with equal keys
    share a compiled program (and may train stacked in one)."""
    return dataclasses.replace(cfg, seed=_DEFAULTS.seed, optim=_optim_key(cfg.optim), model=_model_key(cfg.model))


def _model_key(model_cfg: Any) -> Any:
    d = _DEFAULTS.model
    return dataclasses.replace(model_cfg, init=d.init, init_std=d.init_std)


def _optim_key(optim_cfg: Any) -> Any:
    d = _DEFAULTS.optim
    return dataclasses.replace(optim_cfg, lr_multiplier=d.lr_multiplier, weight_decay=d.weight_decay)


def run_values(cfg: TrainConfig) -> dict[str, Any]:
    """The values of the run axes of ``cfg`` (``{"seed": 0, "optim.lr_multiplier": 1.0, ...}``)."""
    return {"seed": cfg.seed, "optim.lr_multiplier": cfg.optim.lr_multiplier,
            "optim.weight_decay": cfg.optim.weight_decay, "model.init": cfg.model.init,
            "model.init_std": cfg.model.init_std}


def model_for(model_cfg: Any) -> Any:
    """The model a run trains with: the same object for configs that differ only in the
    initialiser (which only matters in `initial_state`)."""
    return _model(_model_key(model_cfg))


def eval_model_for(model_cfg: Any) -> Any:
    """The model used by evaluation calls, which run at the top level of a jitted
    function rather than inside a loop: there XLA:CPU's native convolution is fast (10k
    MNIST images in 0.22 s versus 1.8 s for im2col; inside ``lax.scan`` the ranking
    reverses), so "auto" means XLA's convolution here. Same parameters either way."""
    if getattr(model_cfg, "conv_impl", None) == "auto":
        model_cfg = dataclasses.replace(model_cfg, conv_impl="xla")
    return model_for(model_cfg)


def optimizer_for(optim_cfg: Any, total_steps: int) -> Any:
    """The optimiser of a config: its initial state has multiplier 1 and no decay (both
    injected hyper-parameters, see `bnjax.optim`), and `initial_state` sets the config's
    values, so configs differing only in them share one optimiser."""
    return _optimizer(_optim_key(optim_cfg), total_steps)


@functools.lru_cache(maxsize=64)
def _model(model_cfg: Any) -> Any:
    return build_model(model_cfg)


@functools.lru_cache(maxsize=64)
def _optimizer(optim_cfg: Any, total_steps: int) -> Any:
    return make_optimizer(optim_cfg, total_steps)


def initial_state(cfg: TrainConfig, tx: Any, sample_x: Any) -> TrainState:
    """The state a run of ``cfg`` starts from: `create_state` with the config's seed and
    initialiser, and the config's injected optimiser values (``tx`` from `optimizer_for`)."""
    state = create_state(_model(cfg.model), tx, sample_x, cfg.seed)
    return state.replace(opt_state=set_hyperparams(state.opt_state, lr_multiplier=cfg.optim.lr_multiplier,
                                                   weight_decay=cfg.optim.weight_decay))


#: `bnjax.train.train_chunk`, jitted with the state donated: one run's steps.
compiled_chunk = jax.jit(
    train_chunk, static_argnames=("model", "tx", "pipeline", "batch_size", "n_steps", "sharding"), donate_argnums=0)

#: `bnjax.many.train_chunk_many`, jitted with the stacked states donated: K runs' steps.
compiled_chunk_many = jax.jit(
    many.train_chunk_many, static_argnames=("layout", "share_data", "model", "tx", "pipeline", "batch_size",
                                            "n_steps"), donate_argnums=0)


@dataclasses.dataclass(frozen=True)
class Program:
    """The compiled program of K runs sharing a program key: one run's state as is
    (K = 1, optionally data parallel over a mesh), or K states stacked along a leading
    axis (`bnjax.many`). Per-step metrics always come back with a leading run axis."""

    model: Any
    eval_model: Any
    tx: Any
    pipeline: Any
    batch_size: int
    k: int = 1
    layout: str = "vmap"
    share_data: bool = False
    sharding: Any = None

    @classmethod
    def build(cls, cfg: TrainConfig, k: int, *, layout: str | None = None, share_data: bool = False,
              sharding: Any = None) -> Program:
        layout = layout or many.layout_for(cfg)
        if layout not in many.LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose from {many.LAYOUTS}")
        train = model_for(many.train_model(cfg.model, layout) if k > 1 else cfg.model)
        return cls(train, eval_model_for(cfg.model), optimizer_for(cfg.optim, cfg.steps),
                   aug.parse_pipeline(cfg.data.augment), cfg.data.batch_size, k, layout, share_data, sharding)

    def init(self, cfgs: list[TrainConfig], sample_x: Any) -> list[TrainState]:
        """Each run's initial state (`initial_state`)."""
        return [initial_state(c, self.tx, sample_x) for c in cfgs]

    def stack(self, states: list[TrainState]) -> Any:
        return states[0] if self.k == 1 else many.stack(states)

    def state(self, states: Any, i: int) -> TrainState:
        """Run ``i``'s state."""
        return states if self.k == 1 else many.unstack(states, i)

    def chunk(self, states: Any, dev: dict, n_steps: int) -> tuple[Any, dict]:
        """``n_steps`` steps of every run; metrics ``(K, n_steps)`` (device arrays)."""
        kw = dict(model=self.model, tx=self.tx, pipeline=self.pipeline, batch_size=self.batch_size, n_steps=n_steps)
        if self.k == 1:
            states, m = compiled_chunk(states, dev["x_train"], dev["y_train"], sharding=self.sharding, **kw)
            return states, {k: v[None] for k, v in m.items()}
        return compiled_chunk_many(states, dev["x_train"], dev["y_train"], layout=self.layout,
                                   share_data=self.share_data, **kw)
