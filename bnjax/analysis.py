"""Analysis of finished runs in a Python session: `load_run` and `evaluate`.

    >>> run = bnjax.load_run("runs/fig1/with_bn/seed_0")
    >>> bnjax.evaluate(run)                          # test split, running statistics
    >>> bnjax.evaluate(run, population_batches=50)   # Algorithm 2 statistics instead

The state is rebuilt from the run's ``config.json`` and filled from its orbax checkpoint
(arrays only; nothing from the checkpoint is executed).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp

from bnjax import config as config_lib
from bnjax import data as data_lib
from bnjax import runlog
from bnjax.checkpoint import Checkpoints
from bnjax.config import TrainConfig
from bnjax.evaluation import evaluate as evaluate_arrays
from bnjax.evaluation import recompute_batch_stats
from bnjax.loop import load_dataset
from bnjax.programs import eval_model_for, initial_state, optimizer_for
from bnjax.train import DATA, TrainState


@dataclasses.dataclass
class LoadedRun:
    """A run read back from its workdir."""

    workdir: str
    config: TrainConfig
    state: TrainState
    step: int
    history: list[dict]
    summary: dict | None

    @property
    def model(self) -> Any:
        """The Flax module (``run.model.apply(run.state.variables, x, False)``)."""
        return eval_model_for(self.config.model)


def load_run(workdir: str, *, step: int | str = "latest") -> LoadedRun:
    """Load a run: config, restored state and metrics history.

    Args:
      workdir: a run directory written by `bnjax.fit`.
      step: ``"latest"`` (newest readable checkpoint), ``"best"`` (best validation accuracy
        among the kept checkpoints) or a step number.
    Returns:
      A `LoadedRun`.
    """
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{workdir} is not a bnjax run directory (no config.json)")
    cfg = config_lib.from_dict(TrainConfig, runlog.read_json(cfg_path))
    meta = runlog.read_json(os.path.join(workdir, "meta.json"))
    if "input_shape" not in meta:
        raise ValueError(f"{workdir}/meta.json lacks input_shape: the run never started training")
    tx = optimizer_for(cfg.optim, cfg.steps)
    sample = jnp.zeros((cfg.data.batch_size, *meta["input_shape"]), jnp.float32)
    target = initial_state(cfg, tx, sample)
    store = Checkpoints(os.path.join(workdir, "checkpoints"), keep=cfg.keep_checkpoints, read_only=True)
    try:
        if step == "latest":
            restored = store.restore_latest(target)
            if restored is None:
                raise FileNotFoundError(f"no readable checkpoint in {workdir}/checkpoints")
            state, at = restored
        else:
            at = _best_step(workdir, store.steps()) if step == "best" else int(step)
            if at not in store.steps():
                raise FileNotFoundError(f"no checkpoint for step {at} in {workdir} (have {store.steps()})")
            state = store.restore(at, target)
    finally:
        store.close()
    results = os.path.join(workdir, "results.json")
    return LoadedRun(workdir, cfg, state, at, runlog.read_metrics(workdir),
                     runlog.read_json(results) if os.path.exists(results) else None)


def _best_step(workdir: str, steps: list[int]) -> int:
    accs = {r["step"]: r["val_accuracy"] for r in runlog.read_metrics(workdir) if "val_accuracy" in r}
    kept = [s for s in steps if s in accs]
    if not kept:
        raise FileNotFoundError(f"no kept checkpoint of {workdir} has a recorded validation accuracy "
                                "(trained without a validation split?)")
    return max(kept, key=lambda s: (accs[s], -s))


def evaluate(run: LoadedRun, x: Any = None, y: Any = None, *, split: str = "test",
             population_batches: int = 0, dataset: data_lib.Dataset | None = None) -> dict[str, float]:
    """Loss and accuracy of a loaded run (each batch a jitted call).

    Args:
      run: from `load_run`.
      x, y: arrays to evaluate on; by default the run's own data set, ``split``.
      split: "test", "val" (the validation split) or "train" when ``x`` is not given.
      population_batches: if > 0, replace the running BN statistics by Algorithm 2's
        population statistics over this many training batches first.
      dataset: the run's data set, if already loaded.
    Returns:
      ``{"loss", "accuracy"}`` as floats.
    """
    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be 'test', 'val' or 'train', got {split!r}")
    needs_data = x is None or population_batches
    ds = dataset if dataset is not None or not needs_data else load_dataset(run.config)
    if x is None:
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
    variables = run.state.variables
    if population_batches:
        if not run.state.batch_stats:
            raise ValueError("population statistics need a model with BatchNorm")
        stats = recompute_batch_stats(run.model, variables, jnp.asarray(ds.x_train), key=run.state.keys[DATA],
                                      batch_size=run.config.data.batch_size, num_batches=population_batches)
        variables = {**variables, "batch_stats": stats}
    out = evaluate_arrays(run.model, variables, jnp.asarray(x), jnp.asarray(y),
                          batch_size=run.config.data.eval_batch_size)
    return {k: float(v) for k, v in jax.device_get(out).items()}
