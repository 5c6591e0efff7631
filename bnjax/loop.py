"""The training driver: `fit` runs one config from start (or from its last checkpoint)
to the end.

* The train chunk is jitted once per (model, optimiser, shapes) and reused by every seed
  of an experiment; the state is donated.
* Steps run in chunks between evaluations; metrics stay on the device and the host
  syncs only at evaluation points.
* A non-finite training loss stops the run and records the step where it diverged.
* With a workdir, the run writes config, versions, metrics and checkpoints, and the same
  call on the same workdir resumes where it stopped (bitwise on CPU). Ctrl-C saves a
  checkpoint first.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import signal
import threading
import time
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from bnjax import augment as aug
from bnjax import data as data_lib
from bnjax import parallel, runlog
from bnjax.checkpoint import BEST_METRIC, Checkpoints
from bnjax.config import TrainConfig
from bnjax.evaluation import evaluate, fetch, probe_percentiles, recompute_batch_stats
from bnjax.models import build_model
from bnjax.optim import make_optimizer, set_hyperparams
from bnjax.train import DATA, TrainState, create_state, train_chunk

PROBE_QS = (15.0, 50.0, 85.0)

_train_chunk = jax.jit(
    train_chunk, static_argnames=("model", "tx", "pipeline", "batch_size", "n_steps", "sharding"), donate_argnums=0
)


def model_for(model_cfg: Any) -> Any:
    """The model a run of this config trains and evaluates with, cached so equal configs
    share compiled steps. The initialiser only matters at `initial_state`, so configs that
    differ only in ``init``/``init_std`` share one model (and one compiled step)."""
    default = type(model_cfg)()
    return _init_model(dataclasses.replace(model_cfg, init=default.init, init_std=default.init_std))


@functools.lru_cache(maxsize=64)
def _init_model(model_cfg: Any) -> Any:
    return build_model(model_cfg)


def eval_model_for(model_cfg: Any) -> Any:
    """The model used by evaluation calls, which run at the top level of a jitted
    function rather than inside a loop: there XLA:CPU's native convolution is fast (10k
    MNIST images in 0.22 s versus 1.8 s for im2col; inside ``lax.scan`` the ranking
    reverses), so "auto" means XLA's convolution here. Same parameters either way."""
    if getattr(model_cfg, "conv_impl", None) == "auto":
        model_cfg = dataclasses.replace(model_cfg, conv_impl="xla")
    return model_for(model_cfg)


def optimizer_for(optim_cfg: Any, total_steps: int) -> Any:
    """The optimiser of a config, cached so equal configs share compiled steps.

    The learning-rate multiplier and the weight decay live in the optimiser state
    (`bnjax.optim`), so configs that differ only in them share one optimiser (and one
    compiled step): its initial state has multiplier 1 and no decay, and `initial_state`
    sets the config's values.
    """
    return _optimizer(dataclasses.replace(optim_cfg, lr_multiplier=1.0, weight_decay=0.0), total_steps)


@functools.lru_cache(maxsize=64)
def _optimizer(optim_cfg: Any, total_steps: int) -> Any:
    return make_optimizer(optim_cfg, total_steps)


def initial_state(cfg: TrainConfig, tx: Any, sample_x: Any) -> TrainState:
    """The state a run of ``cfg`` starts from: `create_state` with the config's seed and
    initialiser, and the config's injected optimiser values (``tx`` from `optimizer_for`)."""
    state = create_state(_init_model(cfg.model), tx, sample_x, cfg.seed)
    return state.replace(opt_state=set_hyperparams(state.opt_state, lr_multiplier=cfg.optim.lr_multiplier,
                                                   weight_decay=cfg.optim.weight_decay))


@dataclasses.dataclass
class RunResult:
    """What `fit` returns: the final state, the evaluation history and a summary."""

    config: TrainConfig
    state: TrainState
    history: list[dict]
    summary: dict


def load_dataset(cfg: TrainConfig) -> data_lib.Dataset:
    """The data set a config names, checked against the model's class count."""
    return data_lib.load(cfg.data.source, data_dir=cfg.data.data_dir, image_size=cfg.data.image_size,
                         num_classes=cfg.model.num_classes)


def boundaries(cfg: TrainConfig) -> list[int]:
    """Steps after which the driver stops to evaluate or checkpoint: multiples of
    ``eval_every`` and ``checkpoint_every``, and the last step. Resuming from any of
    them reproduces the same chunks as the uninterrupted run."""
    marks = set(range(cfg.eval_every, cfg.steps, cfg.eval_every)) | {cfg.steps}
    if cfg.checkpoint_every:
        marks |= set(range(cfg.checkpoint_every, cfg.steps, cfg.checkpoint_every))
    return sorted(marks)


def due(cfg: TrainConfig, mark: int) -> tuple[bool, bool]:
    """Whether the driver evaluates, and checkpoints, after step ``mark``."""
    is_eval = mark % cfg.eval_every == 0 or mark == cfg.steps
    is_ckpt = mark == cfg.steps or bool(cfg.checkpoint_every and mark % cfg.checkpoint_every == 0) or (
        not cfg.checkpoint_every and is_eval)
    return is_eval, is_ckpt


def probe_inputs(cfg: TrainConfig, dev: dict) -> Any:
    """The test images the internal-covariate-shift probes run on."""
    n_probe = min(cfg.probe_examples, dev["x_test"].shape[0])
    if cfg.model.norm == "ghost":  # the probe runs the normaliser in training mode: whole virtual batches
        n_probe = max(n_probe // cfg.model.virtual_batch_size, 1) * cfg.model.virtual_batch_size
    return dev["x_test"][:n_probe]


def fit(cfg: TrainConfig, workdir: str | None = None, *, dataset: data_lib.Dataset | None = None,
        device_data: dict | None = None, progress: bool = True, desc: str = "", mesh: Any = None) -> RunResult:
    """Train one run.

    Args:
      cfg: validated config.
      workdir: run directory (config, metrics, checkpoints); None trains in memory.
      dataset: an already loaded data set (saves reloading it for every seed).
      device_data: ``data.to_device(dataset)``, to share device copies between runs.
      progress: show a progress bar.
      desc: progress-bar label.
      mesh: a `bnjax.parallel.make_mesh` mesh: train data parallel over its devices (the
        batch sharded, everything else replicated). Only process 0 writes the workdir.
    Returns:
      A `RunResult`.
    Raises:
      RunMismatchError, PermissionError: for a workdir that cannot be used.
      ValueError: for data that do not fit the model.
    """
    if workdir and not parallel.is_writer():
        workdir = None  # multi-host: process 0 writes, the others compute
    if workdir:
        runlog.prepare(workdir, cfg)
    ds = dataset if dataset is not None else load_dataset(cfg)
    if ds.num_classes > cfg.model.num_classes:
        raise ValueError(f"data set {ds.name} has {ds.num_classes} classes but model.num_classes is "
                         f"{cfg.model.num_classes}")
    dev = device_data if device_data is not None else data_lib.to_device(ds)
    if cfg.data.batch_size > dev["x_train"].shape[0]:
        raise ValueError(f"data.batch_size {cfg.data.batch_size} exceeds the {dev['x_train'].shape[0]} "
                         f"training examples of {ds.name}")
    if workdir:
        runlog.update_meta(workdir, input_shape=list(dev["x_train"].shape[1:]), dataset=ds.name)
    model, eval_model = model_for(cfg.model), eval_model_for(cfg.model)
    tx = optimizer_for(cfg.optim, cfg.steps)
    pipeline = aug.parse_pipeline(cfg.data.augment)
    state = initial_state(cfg, tx, dev["x_train"][: cfg.data.batch_size])
    sharding = None
    if mesh is not None:
        parallel.check_batch(cfg.data.batch_size, mesh)
        sharding = parallel.batch_sharding(mesh)
        dev = parallel.replicate(dev, mesh)

    history: list[dict] = []
    store = Checkpoints(os.path.join(workdir, "checkpoints"), keep=cfg.keep_checkpoints) if workdir else None
    if store is not None:
        restored = store.restore_latest(state)
        if restored is not None:
            state, step0 = restored
            history = runlog.read_metrics(workdir, up_to_step=step0)
            runlog.rewrite_metrics(workdir, history)
        elif os.path.exists(os.path.join(workdir, "metrics.jsonl")):
            runlog.rewrite_metrics(workdir, [])
    if jax.process_count() > 1:  # process 0 restored (or not): every process continues from its state
        from jax.experimental import multihost_utils

        state = multihost_utils.broadcast_one_to_all(state)

    probe_x = probe_inputs(cfg, dev)
    if mesh is not None:
        state = parallel.replicate(state, mesh)
    step = int(state.step)
    diverged_at = None
    pending: list[dict] = []
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc=desc or cfg.model.arch,
               unit="step", leave=False, dynamic_ncols=True)
    t0 = time.perf_counter() - (history[-1].get("elapsed_s", 0.0) if history else 0.0)
    stop = _InterruptFlag()
    try:
        for mark in boundaries(cfg):
            if mark <= step:
                continue
            if stop.raised:
                raise KeyboardInterrupt
            state, metrics = _train_chunk(state, dev["x_train"], dev["y_train"], model=model, tx=tx,
                                          pipeline=pipeline, batch_size=cfg.data.batch_size, n_steps=mark - step,
                                          sharding=sharding)
            pending.append(metrics)
            chunk_start, step = step, mark
            is_eval, is_ckpt = due(cfg, mark)
            if not (is_eval or is_ckpt):
                continue
            losses = np.concatenate([np.asarray(m["loss"]) for m in pending])  # the host syncs here only
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:  # never evaluate or checkpoint a diverged state
                diverged_at = int(step - len(losses) + bad[0])
                history.append({"step": step, "diverged_at": diverged_at})
                if workdir:
                    runlog.append_metrics(workdir, history[-1])
                break
            if is_eval:
                accs = np.concatenate([np.asarray(m["accuracy"]) for m in pending])
                pending = []
                rec = _evaluation(cfg, eval_model, state, dev, probe_x, step, losses, accs,
                                  time.perf_counter() - t0)
                history.append(rec)
                if workdir:
                    runlog.append_metrics(workdir, rec)
                bar.set_postfix(loss=f"{rec['train_loss']:.3f}", test_acc=f"{rec['test_accuracy']:.4f}")
            if workdir and is_ckpt:
                last = [r for r in history if "test_accuracy" in r]
                store.save(step, state, {BEST_METRIC: last[-1]["test_accuracy"] if last else -1.0})
            bar.update(step - chunk_start)
        if stop.raised:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        if store is not None and not _deleted(state):
            if int(state.step) not in store.steps():
                store.save(int(state.step), state, {BEST_METRIC: -1.0})
            store.close()
            print(f"\ninterrupted: checkpoint saved at step {int(state.step)} in {workdir}; "
                  "run the same command to resume", flush=True)
        raise
    finally:
        stop.restore()
        bar.close()

    summary = _summary(cfg, history, diverged_at, time.perf_counter() - t0)
    if cfg.population_stats_batches and diverged_at is None and state.batch_stats:
        state = _with_population_stats(cfg, eval_model, state, dev, summary)
    if workdir:
        store.close()
        runlog.write_json(os.path.join(workdir, "results.json"), summary)
    return RunResult(cfg, state, history, summary)


class _InterruptFlag:
    """Turns the first Ctrl-C into a flag the loop checks between chunks, so the
    checkpoint is written from a consistent state and never from inside orbax or a
    dispatch; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.raised = False
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        self.raised = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _deleted(state: TrainState) -> bool:
    return any(getattr(leaf, "is_deleted", lambda: False)() for leaf in jax.tree.leaves(state))


def _evaluation(cfg, model, state, dev, probe_x, step, losses, accs, elapsed) -> dict:
    test = evaluate(model, state.variables, dev["x_test"], dev["y_test"], batch_size=cfg.data.eval_batch_size)
    probes = probe_percentiles(model, state.variables, probe_x, unit=cfg.probe_unit, qs=PROBE_QS)
    out = fetch({"test": test, "probes": probes})
    return {
        "step": step,
        "train_loss": float(losses.mean()),
        "train_accuracy": float(accs.mean()),
        "test_loss": out["test"]["loss"],
        "test_accuracy": out["test"]["accuracy"],
        "probes": out["probes"],
        "probe_qs": list(PROBE_QS),
        "elapsed_s": round(elapsed, 3),
    }


def _summary(cfg, history, diverged_at, elapsed) -> dict:
    evals = [r for r in history if "test_accuracy" in r]
    best = max(evals, key=lambda r: r["test_accuracy"]) if evals else None
    return {
        "steps": cfg.steps,
        "seed": cfg.seed,
        "diverged_at": diverged_at,
        "final_step": evals[-1]["step"] if evals else 0,
        "final_test_accuracy": evals[-1]["test_accuracy"] if evals else math.nan,
        "final_train_loss": evals[-1]["train_loss"] if evals else math.nan,
        "best_test_accuracy": best["test_accuracy"] if best else math.nan,
        "best_step": best["step"] if best else None,
        "train_seconds": round(elapsed, 3),
    }


def _with_population_stats(cfg, model, state, dev, summary) -> TrainState:
    """Algorithm 2 at the end of training; records both accuracies in ``summary``."""
    stats = recompute_batch_stats(model, state.variables, dev["x_train"], key=state.keys[DATA],
                                  batch_size=cfg.data.batch_size, num_batches=cfg.population_stats_batches)
    new = state.replace(batch_stats=stats)
    acc = evaluate(model, new.variables, dev["x_test"], dev["y_test"], batch_size=cfg.data.eval_batch_size)
    summary["test_accuracy_running_stats"] = summary["final_test_accuracy"]
    summary["test_accuracy_population_stats"] = float(acc["accuracy"])
    return new


def first_step_reaching(history: list[dict], threshold: float) -> int | None:
    """The first evaluated step with test accuracy >= threshold, or None."""
    for rec in history:
        if rec.get("test_accuracy", -1.0) >= threshold:
            return rec["step"]
    return None

