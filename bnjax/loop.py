"""The training driver: `fit` trains one config, `fit_group` K configs that share a compiled
program (`bnjax.programs`), from the start or from their checkpoints to the end.

One flat loop, as Flax's ``train_and_evaluate``, each setup step a helper call:

* the chunk of steps between two boundaries (evaluations, checkpoints) runs in one
  `lax.scan`, for one state or K stacked states; metrics stay on the device and the host
  syncs only at boundaries;
* a non-finite training loss stops that run (recorded with its step) while the others
  of its group go on; a diverged state is never evaluated or checkpointed;
* with run directories, each run writes config, versions, metrics and checkpoints, and
  the same call resumes where it stopped (bitwise on CPU); Ctrl-C saves checkpoints
  first. Per-run bookkeeping lives in `bnjax.record.RunRecord`.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from bnjax import config as config_lib
from bnjax import data as data_lib
from bnjax import parallel, runlog
from bnjax.config import TrainConfig
from bnjax.programs import RUN_AXES, Program, program_key
from bnjax.record import RunRecord, evaluation_record, population_stats, probe_inputs, summary, test_at_best
from bnjax.timing import Phases
from bnjax.train import TrainState


@dataclasses.dataclass
class RunResult:
    """What `fit` returns per run: the final state, the evaluation history and a summary."""

    config: TrainConfig
    state: TrainState
    history: list[dict]
    summary: dict


def fit(cfg: TrainConfig, workdir: str | None = None, **kwargs: Any) -> RunResult:
    """Train one run (`fit_group` of one config: the same code path).

    Args:
      cfg: a validated config.
      workdir: its run directory (resumed when it holds a checkpoint of this config);
        None trains in memory.
      kwargs: as for `fit_group`; ``mesh`` (a `bnjax.parallel.make_mesh` mesh) trains
        this run data-parallel over its devices, only process 0 writing the workdir.
    Returns:
      Its `RunResult` (final state, evaluation history, summary).
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"fit trains one TrainConfig, got {type(cfg).__name__}; for several runs in one "
                        "compiled program use bnjax.fit_group(cfgs, workdirs)")
    return fit_group([cfg], [workdir], **kwargs)[0]


def fit_group(cfgs: Sequence[TrainConfig], workdirs: Sequence[str | None] | None = None, *,
              dataset: data_lib.Dataset | None = None, device_data: dict | None = None, progress: bool = True,
              desc: str = "", mesh: Any = None, layout: str | None = None, share_data: bool = False,
              runs: str | None = None, phases: Phases | None = None) -> list[RunResult]:
    """Train several runs in one compiled program, each as it would train alone.

    Args:
      cfgs: validated configs that may differ only along `bnjax.programs.RUN_AXES` (seed,
        learning-rate multiplier, weight decay, initialiser): they train stacked.
      workdirs: one run directory per config (None entries, or None for all: in memory).
      dataset, device_data: an already loaded data set and its device copy, to share them.
      progress, desc: progress bar and its label.
      mesh: a `bnjax.parallel.make_mesh` mesh (one run only): data parallel over its devices;
        only process 0 writes the workdir.
      layout: one of `bnjax.many.LAYOUTS` for several runs (default `bnjax.many.layout_for`).
      share_data: every run trains on the first run's batches (`bnjax.many.train_chunk_many`).
      runs: how the caller trains runs ("together", "sequential"), recorded in meta.json.
      phases: a `bnjax.timing.Phases` that accumulates where this call's time goes.
    Returns:
      One `RunResult` per config, in order (`bnjax.many.stack` stacks their states).
    Raises:
      RunMismatchError, PermissionError: for a workdir that cannot be used.
      ValueError: configs that cannot share a program, or data that do not fit the model.
    """
    t0 = time.perf_counter()
    phases = phases if phases is not None else Phases()
    if isinstance(cfgs, TrainConfig):
        raise TypeError("fit_group takes a list of configs; for one config use bnjax.fit(cfg, workdir)")
    cfg_list = list(cfgs)
    dirs = _workdirs(workdirs, len(cfg_list))
    base = _check_group(cfg_list, mesh)
    with phases.of("data"):
        ds = dataset if dataset is not None else load_dataset(base)
        dev = device_data if device_data is not None else data_lib.to_device(ds)
    with phases.of("setup"):
        _check_data(base, ds, dev)
        records = _open(cfg_list, dirs)
    try:
        with phases.of("setup"):
            sharding = parallel.batch_sharding(mesh) if mesh is not None else None
            program = Program.build(base, len(cfg_list), layout=layout, share_data=share_data, sharding=sharding)
            states, pending = _restore(records, program,
                                       program.init(cfg_list, dev["x_train"][: base.data.batch_size]))
            _record_meta(records, ds, dev, runs, int(program.state(states, 0).step))
            if mesh is not None:
                states, dev = parallel.replicate(states, mesh), parallel.replicate(dev, mesh)
        bar = tqdm(total=base.steps, initial=int(program.state(states, 0).step), disable=not progress,
                   desc=desc or (base.model.arch if len(cfg_list) == 1 else f"{len(cfg_list)} runs"), unit="step", leave=False,
                   dynamic_ncols=True)
        clock = _Clock(records, t0, phases)
        try:
            states = _train(program, records, states, dev, probe_inputs(base, dev), bar, clock, pending)
        finally:
            bar.close()
        results = _finish(program, records, states, dev, clock)
    finally:
        for rec in records:
            rec.close()  # on any failure too: checkpoints released, lock released (no-op when finished)
    return results



def dataset_args(cfg: TrainConfig) -> dict[str, Any]:
    """The arguments of `bnjax.data.load` a config decides: the one source of what makes
    two configs share a data set (`load_dataset`, and the pool's cache of data sets)."""
    return {"source": cfg.data.source, "data_dir": cfg.data.data_dir, "image_size": cfg.data.image_size,
            "num_classes": cfg.model.num_classes, "val_fraction": cfg.data.val_fraction,
            "val_seed": cfg.data.val_seed}


def load_dataset(cfg: TrainConfig) -> data_lib.Dataset:
    """The data set a config names, checked against the model's class count."""
    args = dataset_args(cfg)
    return data_lib.load(args.pop("source"), **args)


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


# --------------------------------------------------------------------------- setup


def _workdirs(workdirs: Any, k: int) -> list[str | None]:
    if workdirs is None:
        dirs: list[str | None] = [None] * k
    elif isinstance(workdirs, str) or len(workdirs) != k:
        raise ValueError(f"one workdir per config: got {workdirs!r} for {k} configs")
    else:
        dirs = list(workdirs)
    if not parallel.is_writer():
        dirs = [None] * k  # multi-host: process 0 writes, the others compute
    return dirs


def _check_group(cfgs: list[TrainConfig], mesh: Any) -> TrainConfig:
    """The group's shared config; raises for configs that cannot share a program."""
    if not cfgs:
        raise ValueError("fit needs at least one config")
    base = cfgs[0]
    for c in cfgs[1:]:
        fields = config_lib.diff(program_key(base), program_key(c))
        if fields:
            raise ValueError(f"runs trained together may differ only in {', '.join(RUN_AXES)}; "
                             f"these differ too: {', '.join(fields)}")
    if mesh is not None:
        if len(cfgs) > 1:
            raise ValueError("data parallel training (mesh) takes one config at a time")
        parallel.check_batch(base.data.batch_size, mesh)
    return base


def _open(cfgs: list[TrainConfig], dirs: list[str | None]) -> list[RunRecord]:
    records: list[RunRecord] = []
    try:
        for c, w in zip(cfgs, dirs, strict=True):
            if w and w in [r.workdir for r in records]:
                raise ValueError(f"two runs of one group share the workdir {w}")
            records.append(RunRecord.open(c, w))
    except BaseException:
        for rec in records:
            rec.close()
        raise
    return records


def _check_data(cfg: TrainConfig, ds: data_lib.Dataset, dev: dict) -> None:
    if ds.num_classes > cfg.model.num_classes:
        raise data_lib.DataError(f"data set {ds.name} has {ds.num_classes} classes but model.num_classes is "
                         f"{cfg.model.num_classes}")
    n = dev["x_train"].shape[0]
    if cfg.data.batch_size > n:
        raise data_lib.DataError(f"data.batch_size {cfg.data.batch_size} exceeds the {n} training examples of {ds.name}")
    if cfg.population_stats_batches > n // cfg.data.batch_size:
        raise data_lib.DataError(f"population_stats_batches {cfg.population_stats_batches} exceeds the "
                         f"{n // cfg.data.batch_size} batches of {cfg.data.batch_size} in one epoch of {ds.name} "
                         "(Algorithm 2 draws its batches from one epoch)")


def _record_meta(records: list[RunRecord], ds: data_lib.Dataset, dev: dict, runs: str | None, step: int) -> None:
    """The data facts of each run (the same on every resume: the pool checks them) and a
    new segment: who trains it from ``step`` (`bnjax.runlog.begin_segment`)."""
    k = len(records)
    for rec in records:
        if rec.workdir:
            runlog.update_meta(rec.workdir, input_shape=list(dev["x_train"].shape[1:]), dataset=ds.name, split=ds.split,
                               data_fingerprint=ds.fingerprint)
            runlog.begin_segment(rec.workdir, from_step=step, code_version=runlog.code_version(),
                                 runs=runs or ("together" if k > 1 else "sequential"), group_size=k)


def _restore(records: list[RunRecord], program: Program, initial: list[TrainState]) -> tuple[Any, list[dict]]:
    """The newest step at which every run's checkpoint restores (a step that cannot be
    read is reported and an older one tried), or the initial states; every process of a
    multi-host run continues from process 0's states. Also the per-step training metrics
    since the last evaluation, when the step was a checkpoint between evaluations (so the
    next logged training loss averages the same steps as without the interruption)."""
    stores = [r.store for r in records]
    states, step = initial, 0
    if all(stores):
        common = sorted(set.intersection(*[set(s.steps()) for s in stores]), reverse=True)
        for s in common:
            try:
                states, step = [st.restore(s, init) for st, init in zip(stores, initial, strict=True)], s
                break
            except Exception as e:  # orbax raises many types for unreadable files
                warnings.warn(f"checkpoint at step {s} cannot be restored ({type(e).__name__}: {str(e)[:200]}); "
                              "trying an older one", stacklevel=3)
    partials = [rec.resume_at(step) for rec in records]
    for rec in records:
        if rec.store is not None:
            for path in rec.store.set_aside(step):
                warnings.warn(f"{rec.workdir}: unreadable or unmatched checkpoint moved to {path}", stacklevel=3)
    stacked = program.stack(states)
    if jax.process_count() > 1:
        stacked = parallel.broadcast_from_writer(stacked)
    if step and all(p is not None for p in partials):
        return stacked, [{k: np.stack([p[k] for p in partials]) for k in ("loss", "accuracy")}]
    return stacked, []


# --------------------------------------------------------------------------- the loop


def _train(program: Program, records: list[RunRecord], states: Any, dev: dict, probe_x: Any, bar: Any,
           clock: _Clock, pending: list[dict]) -> Any:
    """The chunk loop: train to each boundary, then evaluate / checkpoint the live runs.
    ``pending``: per-step metrics since the last evaluation, carried over a resume."""
    cfg = records[0].cfg
    step = int(program.state(states, 0).step)
    stop = _InterruptFlag()
    try:
        for mark in boundaries(cfg):
            if mark <= step:
                continue
            if stop.raised:
                raise KeyboardInterrupt
            with clock.phases.of("train"):  # the boundary syncs on these metrics anyway: wait for them here
                states, metrics = program.chunk(states, dev, mark - step)
                jax.block_until_ready(metrics)
            pending.append(metrics)
            bar.update(mark - step)
            step = mark
            is_eval, is_ckpt = due(cfg, mark)
            if is_eval or is_ckpt:
                _boundary(program, records, states, dev, probe_x, pending, step, is_eval, is_ckpt, clock)
                pending = [] if is_eval else pending
            if not any(r.live for r in records):
                break
        if stop.raised:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        _save_interrupted(program, records, states, step, pending)
        raise
    finally:
        stop.restore()
    return states


def _boundary(program, records, states, dev, probe_x, pending, step, is_eval, is_ckpt, clock) -> None:
    """Divergence check (the host syncs here), evaluation and checkpoint of each live run."""
    losses = np.concatenate([np.asarray(m["loss"]) for m in pending], axis=1)  # (runs, steps since eval)
    accs = np.concatenate([np.asarray(m["accuracy"]) for m in pending], axis=1)
    clock.tick()
    for i, rec in enumerate(records):
        if not rec.live:
            continue
        bad = np.flatnonzero(~np.isfinite(losses[i]))
        if bad.size:  # never evaluate or checkpoint a diverged state
            rec.diverge(step - losses.shape[1] + int(bad[0]), step)
            continue
        state = program.state(states, i)
        if is_eval:
            with clock.phases.of("eval"):
                rec.log(evaluation_record(rec.cfg, program.eval_model, state, dev, probe_x, step, losses[i], accs[i],
                                          rec.seconds))
                rec.track_best(rec.history[-1], state)
        if is_ckpt:
            with clock.phases.of("checkpoint"):
                rec.save(step, state, partial=None if is_eval else {"loss": losses[i], "accuracy": accs[i]})


def _save_interrupted(program: Program, records: list[RunRecord], states: Any, step: int,
                      pending: list[dict]) -> None:
    saved = [rec for rec in records if rec.live and rec.store is not None] if not _deleted(states) else []
    metrics = {k: np.concatenate([np.asarray(m[k]) for m in pending], axis=1) for k in ("loss", "accuracy")} \
        if pending else None
    for i, rec in enumerate(records):
        if rec in saved:
            partial = {k: v[i] for k, v in metrics.items()} if metrics else None
            rec.save(step, program.state(states, i), interrupted=True, partial=partial)
        rec.close()
    if saved:
        where = saved[0].workdir if len(saved) == 1 else f"{len(saved)} run directories"
        print(f"\ninterrupted: checkpoint saved at step {step} in {where}; run the same command to resume",
              flush=True)


def _finish(program: Program, records: list[RunRecord], states: Any, dev: dict, clock: _Clock) -> list[RunResult]:
    """The test accuracy of each run's validation-selected evaluation, population
    statistics, pending checkpoint writes, then each run's summary (its time covers the
    whole call: setup, training, evaluations and this)."""
    finals, pop = [], []
    for i, rec in enumerate(records):
        state, acc = program.state(states, i), None
        with clock.phases.of("eval"):
            rec.test_at_best = test_at_best(rec, program.eval_model, dev, state)
            if rec.best is not None:
                rec.best["variables"] = None  # free them
        with clock.phases.of("finish"):
            if rec.cfg.population_stats_batches and rec.live and state.batch_stats:
                state, acc = population_stats(rec.cfg, program.eval_model, state, dev)
        finals.append(state)
        pop.append(acc)
    with clock.phases.of("checkpoint"):
        for rec in records:
            rec.wait()
    clock.tick(everyone=True)
    out = []
    for rec, state, acc in zip(records, finals, pop, strict=True):
        summ = summary(rec, program.k)
        if acc is not None:
            summ["test_accuracy_running_stats"] = summ["final_test_accuracy"]
            summ["test_accuracy_population_stats"] = acc
        rec.close(summ)
        out.append(RunResult(rec.cfg, state, rec.history, summ))
    return out


class _Clock:
    """Divides the wall time between two ticks equally among the live runs (or, with
    ``everyone``, among all runs)."""

    def __init__(self, records: list[RunRecord], t0: float, phases: Phases):
        self.records, self.t, self.phases = records, t0, phases

    def tick(self, *, everyone: bool = False) -> None:
        now = time.perf_counter()
        live = [r for r in self.records if r.live or everyone]
        for r in live:
            r.seconds += (now - self.t) / len(live)
        self.t = now


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


def _deleted(states: Any) -> bool:
    return any(getattr(leaf, "is_deleted", lambda: False)() for leaf in jax.tree.leaves(states))
