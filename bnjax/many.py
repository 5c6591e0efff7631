"""Many runs in one compiled program: runs of one config that differ only along the run
axes (seed, learning-rate multiplier, weight decay, initialiser and its scale) trained
together, by `fit_group` (with run directories, as `bnjax.fit` would write them) or
`fit_many` (in memory).

The states of the K runs are stacked along a leading axis and the *same* pure
`train_chunk` runs over them, either vectorised (``jax.vmap``: one wide program, best
for matmul models everywhere and for the im2col ConvNet on CPU) or sequentially inside
the program (``lax.map``: for native convolutions on GPU, where vmap turns convolutions
into slow grouped convolutions, jax-ml/jax#13800). `layout_for` chooses per model and
backend. Each run draws exactly the randomness it draws alone (its keys come from its
own seed), so a run in a group equals the run alone up to floating-point reassociation.

The learning-rate multiplier (the BN paper's "x5", "x30") and the weight decay change no
shape: every bnjax optimiser carries them as injected hyper-parameters in each run's
optimiser state (`bnjax.optim`). The initialiser only acts when the state is created.
"""

from __future__ import annotations

import dataclasses
import os
import time
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tqdm.auto import tqdm

from bnjax import augment as aug
from bnjax import config as config_lib
from bnjax import data as data_lib
from bnjax import parallel, runlog
from bnjax.checkpoint import BEST_METRIC, Checkpoints
from bnjax.config import TrainConfig
from bnjax.loop import (RunResult, _deleted, _evaluation, _InterruptFlag, _summary, _with_population_stats,
                        boundaries, due, eval_model_for, initial_state, load_dataset, model_for, optimizer_for,
                        probe_inputs)
from bnjax.train import (DATA, TrainState, chunk_batch, chunk_orders, create_state, train_chunk,
                         train_step)

LAYOUTS = ("vmap", "map")


def layout_for(cfg: TrainConfig) -> str:
    """"vmap" for the MLP, "map" for the ConvNet: vmapped native convolutions become
    grouped convolutions (0.09x per model on an H200, jax-ml/jax#13800) and the vmapped
    im2col ConvNet ran at 0.79x per model on 2 CPU cores (experiments/bench/seeds.py)."""
    return "map" if cfg.model.arch == "convnet" else "vmap"


def stack(states: list[Any]) -> Any:
    """States (or any equal-structured trees) stacked along a new leading run axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def init_many(model: Any, tx: Any, sample_x: jax.Array, seeds: list[int]) -> TrainState:
    """The stacked initial states of ``seeds`` (each as `create_state` makes it alone)."""
    return stack([create_state(model, tx, sample_x, s) for s in seeds])


def _over_runs(fn: Any, states: Any, layout: str) -> Any:
    if layout == "vmap":
        return jax.vmap(fn)(states)
    if layout == "map":
        return jax.lax.map(fn, states)
    raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")


def train_chunk_many(states: TrainState, train_x: jax.Array, train_y: jax.Array, *, layout: str,
                     share_data: bool = False, model: Any, tx: Any, pipeline: aug.Pipeline, batch_size: int,
                     n_steps: int):
    """`train_chunk` over the leading run axis of ``states`` (static keywords as there).

    With ``share_data`` every run trains on run 0's batches (run 0's data key; the runs must
    be at the same step): the batch is gathered once per step and, under vmap, enters every
    run's first layer unbatched, so K first layers become one matmul K times wider (for the
    MLP on CPU the first layer is 2/3 of the step's multiply-adds). Each run still draws its
    own initialisation, dropout and augmentation. Run i then equals run i alone with its
    data key replaced by run 0's (tests).
    """
    if not share_data:
        one = partial(train_chunk, train_x=train_x, train_y=train_y, model=model, tx=tx, pipeline=pipeline,
                      batch_size=batch_size, n_steps=n_steps)
        return _over_runs(one, states, layout)
    orders = chunk_orders(states.keys[0, DATA], states.step[0], train_x.shape[0], batch_size, n_steps)

    def body(sts, t):
        xb, yb = chunk_batch(train_x, train_y, orders, t)
        return _over_runs(lambda s: train_step(s, xb, yb, model=model, tx=tx, pipeline=pipeline), sts, layout)

    states, metrics = jax.lax.scan(body, states, jnp.arange(n_steps))
    return states, jax.tree.map(lambda m: jnp.moveaxis(m, 0, 1), metrics)  # (K, n_steps), as unshared


_chunk_many = jax.jit(train_chunk_many, static_argnames=("layout", "share_data", "model", "tx", "pipeline",
                                                         "batch_size", "n_steps"), donate_argnums=0)


def unstack(states: TrainState, i: int) -> TrainState:
    """Run ``i`` of a stacked state."""
    return jax.tree.map(lambda a: a[i], states)


RUN_AXES = ("seed", "optim.lr_multiplier", "optim.weight_decay", "model.init", "model.init_std")


def group_key(cfg: TrainConfig) -> TrainConfig:
    """What runs trained in one program must share: the config up to the run axes
    (`RUN_AXES`: values that change no shape and live in the state, or only matter at
    initialisation)."""
    d = TrainConfig()
    return dataclasses.replace(cfg, seed=d.seed,
                               optim=dataclasses.replace(cfg.optim, lr_multiplier=d.optim.lr_multiplier,
                                                         weight_decay=d.optim.weight_decay),
                               model=dataclasses.replace(cfg.model, init=d.model.init, init_std=d.model.init_std))


def fit_group(cfgs: list[TrainConfig], workdirs: list[str] | None = None, *,
              dataset: data_lib.Dataset | None = None, device_data: dict | None = None,
              layout: str | None = None, share_data: bool = False, progress: bool = True,
              desc: str = "") -> list[RunResult]:
    """Train several runs in one compiled program, each as `bnjax.fit` would alone: the same
    chunks, evaluations (test accuracy, probes), divergence records, checkpoints, summaries
    and run directories; a run that diverges is recorded and dropped from the records while
    the others go on.

    Args:
      cfgs: the runs' configs; they may differ only in the `RUN_AXES` (seed, learning-rate
        multiplier, weight decay, initialiser and its scale).
      workdirs: one run directory per config (or None: in memory). Resuming restores the
        latest step every run has a checkpoint of; otherwise the group starts over.
      layout: "vmap" or "map" (default `layout_for`).
      share_data: every run trains on the first run's batches (see `train_chunk_many`).
    Returns:
      One `bnjax.loop.RunResult` per config.
    Raises:
      ValueError: configs that differ in anything else (named).
    """
    base = cfgs[0]
    for c in cfgs[1:]:
        fields = config_lib.diff(group_key(base), group_key(c))
        if fields:
            raise ValueError(f"runs trained together may differ only in {', '.join(RUN_AXES)}; "
                             f"these differ too: {', '.join(fields)}")
    if workdirs is not None and len(workdirs) != len(cfgs):
        raise ValueError(f"{len(workdirs)} workdirs for {len(cfgs)} configs")
    dirs = list(workdirs) if workdirs is not None and parallel.is_writer() else [None] * len(cfgs)
    for w, c in zip(dirs, cfgs, strict=True):
        if w:
            runlog.prepare(w, c)
    ds = dataset if dataset is not None else load_dataset(base)
    dev = device_data if device_data is not None else data_lib.to_device(ds)
    for w in dirs:
        if w:
            runlog.update_meta(w, input_shape=list(dev["x_train"].shape[1:]), dataset=ds.name, trained_with=len(cfgs))
    model, eval_model, tx = model_for(base.model), eval_model_for(base.model), optimizer_for(base.optim, base.steps)
    layout = layout or layout_for(base)
    pipeline = aug.parse_pipeline(base.data.augment)
    sample = dev["x_train"][: base.data.batch_size]
    runs = [initial_state(c, tx, sample) for c in cfgs]
    stores = [Checkpoints(os.path.join(w, "checkpoints"), keep=c.keep_checkpoints) if w else None
              for w, c in zip(dirs, cfgs, strict=True)]
    histories: list[list[dict]] = [[] for _ in cfgs]
    common = set.intersection(*[set(st.steps()) for st in stores]) if all(stores) else set()
    if common:
        step0 = max(common)
        runs = [st.restore(step0, r) for st, r in zip(stores, runs, strict=True)]
        histories = [runlog.read_metrics(w, up_to_step=step0) for w in dirs]
    for w, h in zip(dirs, histories, strict=True):
        if w:
            runlog.rewrite_metrics(w, h)
    states = stack(runs)
    probe_x = probe_inputs(base, dev)
    step = int(runs[0].step)
    diverged: list[int | None] = [None] * len(cfgs)
    pending: list[dict] = []
    bar = tqdm(total=base.steps, initial=step, disable=not progress, desc=desc or f"{len(cfgs)} runs",
               unit="step", leave=False, dynamic_ncols=True)
    t0 = time.perf_counter() - max((h[-1].get("elapsed_s", 0.0) for h in histories if h), default=0.0)
    stop = _InterruptFlag()
    try:
        for mark in boundaries(base):
            if mark <= step:
                continue
            if stop.raised:
                raise KeyboardInterrupt
            states, metrics = _chunk_many(states, dev["x_train"], dev["y_train"], layout=layout, share_data=share_data,
                                          model=model, tx=tx, pipeline=pipeline, batch_size=base.data.batch_size,
                                          n_steps=mark - step)
            pending.append(metrics)
            chunk_start, step = step, mark
            is_eval, is_ckpt = due(base, mark)
            if is_eval or is_ckpt:
                losses = np.concatenate([np.asarray(m["loss"]) for m in pending], axis=1)  # (runs, steps)
                accs = np.concatenate([np.asarray(m["accuracy"]) for m in pending], axis=1)
                pending = []
                for i, (c, w) in enumerate(zip(cfgs, dirs, strict=True)):
                    if diverged[i] is not None:
                        continue
                    bad = np.flatnonzero(~np.isfinite(losses[i]))
                    if bad.size:  # never evaluate or checkpoint a diverged state
                        diverged[i] = int(step - losses.shape[1] + bad[0])
                        histories[i].append({"step": step, "diverged_at": diverged[i]})
                    elif is_eval:
                        histories[i].append(_evaluation(c, eval_model, unstack(states, i), dev, probe_x, step,
                                                        losses[i], accs[i], time.perf_counter() - t0))
                    if w:
                        if histories[i] and histories[i][-1]["step"] == step:
                            runlog.append_metrics(w, histories[i][-1])
                        if is_ckpt and diverged[i] is None:
                            last = [r for r in histories[i] if "test_accuracy" in r]
                            stores[i].save(step, unstack(states, i), {BEST_METRIC: last[-1]["test_accuracy"] if last
                                                                      else -1.0})
            bar.update(step - chunk_start)
            if all(d is not None for d in diverged):
                break
        if stop.raised:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        for i, st in enumerate(stores):
            if st is not None and diverged[i] is None and not _deleted(states):
                if step not in st.steps():
                    st.save(step, unstack(states, i), {BEST_METRIC: -1.0})
                st.close()
        if any(stores):
            print(f"\ninterrupted: checkpoints saved at step {step}; run the same command to resume", flush=True)
        raise
    finally:
        stop.restore()
        bar.close()
    elapsed = time.perf_counter() - t0
    results = []
    for i, (c, w) in enumerate(zip(cfgs, dirs, strict=True)):
        state = unstack(states, i)
        summary = _summary(c, histories[i], diverged[i], elapsed)
        if c.population_stats_batches and diverged[i] is None and state.batch_stats:
            state = _with_population_stats(c, eval_model, state, dev, summary)
        if w:
            stores[i].close()
            runlog.write_json(os.path.join(w, "results.json"), summary)
        results.append(RunResult(c, state, histories[i], summary))
    return results


def fit_many(cfg: TrainConfig, seeds: list[int], *, dataset: data_lib.Dataset | None = None,
             device_data: dict | None = None, layout: str | None = None,
             lr_multipliers: list[float] | None = None, share_data: bool = False,
             ) -> tuple[TrainState, list[list[dict]], float]:
    """Train ``cfg`` for every seed in one program, in memory (`fit_group` without run
    directories; for sweeps and benchmarks).

    Args:
      lr_multipliers: optional, one per seed: run i uses ``cfg`` with
        ``optim.lr_multiplier = lr_multipliers[i]`` (replacing the config's multiplier).
      share_data: every run sees the first seed's batch order (see `train_chunk_many`);
        the seeds then differ in initialisation, dropout and augmentation only.
    Returns:
      ``(stacked final states, per-run evaluation histories, training seconds)``.
    """
    if lr_multipliers is not None and len(lr_multipliers) != len(seeds):
        raise ValueError(f"{len(lr_multipliers)} learning-rate multipliers for {len(seeds)} seeds")
    mults = lr_multipliers if lr_multipliers is not None else [cfg.optim.lr_multiplier] * len(seeds)
    cfgs = [dataclasses.replace(cfg, seed=s, optim=dataclasses.replace(cfg.optim, lr_multiplier=m))
            for s, m in zip(seeds, mults, strict=True)]
    t0 = time.perf_counter()
    res = fit_group(cfgs, dataset=dataset, device_data=device_data, layout=layout, share_data=share_data,
                    progress=False)
    return stack([r.state for r in res]), [r.history for r in res], time.perf_counter() - t0
