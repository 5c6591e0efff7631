"""Experiments as arms x seeds of `fit`, with results that survive interruption.

Each run lives in ``POOL/<config hash>/seed_S`` (the hash covers every field but the
seed), so experiments that share an arm (the reproduction suite's placement and
with/without-BN experiments, say) train it once. A run whose ``results.json`` exists is
read back, not retrained; an interrupted run resumes from its checkpoint. Data are loaded
once per distinct data config and shared (on the device) by all runs that use it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bnjax import data as data_lib
from bnjax import config as config_lib
from bnjax import runlog
from bnjax.config import TrainConfig
from bnjax.loop import fit, load_dataset


@dataclass
class Run:
    """One finished run: its config, evaluation history and summary."""

    arm: str
    seed: int
    config: TrainConfig
    history: list[dict]
    summary: dict


def config_hash(cfg: TrainConfig) -> str:
    """A short hash of the fields that differ from `TrainConfig`'s defaults (the seed
    excluded), so adding a config field with a default keeps existing runs' hashes."""
    defaults = config_lib.flatten(TrainConfig())
    changed = {k: v for k, v in config_lib.flatten(cfg).items() if k != "seed" and v != defaults.get(k)}
    return hashlib.sha256(json.dumps(changed, sort_keys=True, default=list).encode()).hexdigest()[:12]


def run_dir(pool: str, cfg: TrainConfig, seed: int) -> str:
    """Where the run of ``cfg`` with ``seed`` lives inside a run pool."""
    return os.path.join(pool, config_hash(cfg), f"seed_{seed}")


GROUPINGS = ("auto", "together", "sequential")
_grouping = ["auto"]


def set_grouping(mode: str) -> None:
    """How `run_arms` trains the runs it has to train (the experiment scripts' ``--runs``):
    "together": runs that differ only along `bnjax.many.RUN_AXES` (seed, learning-rate
    multiplier, weight decay, initialiser) train in one
    compiled program (`bnjax.many.fit_group`); "sequential": one after another (`fit`);
    "auto" (default): together on GPU/TPU, sequential on CPU, where one run already keeps
    the cores busy (experiments/bench/RESULTS.md)."""
    if mode not in GROUPINGS:
        raise ValueError(f"unknown grouping {mode!r}; choose from {GROUPINGS}")
    _grouping[0] = mode


def _together() -> bool:
    import jax

    return _grouping[0] == "together" or (_grouping[0] == "auto" and jax.default_backend() != "cpu")


def run_arms(arms: Mapping[str, TrainConfig], seeds: Sequence[int], pool: str, *,
             progress: bool = True, steps: int | None = None) -> dict[str, list[Run]]:
    """Train every arm with every seed (``dataclasses.replace(cfg, seed=s)``); runs already
    finished in the pool are read back (see `set_grouping` for how the others train).

    Args:
      arms: arm name -> config (its ``seed`` is replaced by each of ``seeds``).
      seeds: the seeds.
      pool: directory of runs, shared between experiments.
      progress: show progress bars.
      steps: if given, every arm runs this many steps (smoke tests, short trials).
    Returns:
      arm -> list of `Run`, one per seed.
    """
    from dataclasses import replace

    from bnjax.many import fit_group, group_key

    cells = []  # (arm, seed, cfg, run dir)
    for arm, base in arms.items():
        for seed in seeds:
            cfg = replace(base, seed=seed)
            if steps is not None:
                cfg = replace(cfg, steps=steps, eval_every=min(cfg.eval_every, steps),
                              checkpoint_every=min(cfg.checkpoint_every, steps))
            cells.append((arm, seed, cfg, run_dir(pool, cfg, seed)))
    done: dict[str, Run] = {}
    todo = []
    for arm, seed, cfg, rdir in cells:
        if os.path.exists(os.path.join(rdir, "results.json")):
            done[rdir] = Run(arm, seed, cfg, runlog.read_metrics(rdir),
                             runlog.read_json(os.path.join(rdir, "results.json")))
        else:
            todo.append((arm, seed, cfg, rdir))
    groups: dict = {}
    for cell in todo:  # one program per group when training together, else one per run
        groups.setdefault(group_key(cell[2]) if _together() else cell[3], []).append(cell)
    cache: dict = {}
    k = len(done)
    for group in groups.values():
        cfg0 = group[0][2]
        key = (cfg0.data.source, cfg0.data.data_dir, cfg0.data.image_size, cfg0.model.num_classes)
        if key not in cache:
            ds = load_dataset(cfg0)
            cache.clear()  # keep one data set on the device at a time
            cache[key] = (ds, data_lib.to_device(ds))
        ds, dev = cache[key]
        names = ", ".join(sorted({f"{a}" for a, _, _, _ in group}))
        desc = f"[{k + 1}-{k + len(group)}/{len(cells)}] {names}" if len(group) > 1 else \
            f"[{k + 1}/{len(cells)}] {group[0][0]} seed {group[0][1]}"
        if len(group) > 1:
            results = fit_group([c[2] for c in group], [c[3] for c in group], dataset=ds, device_data=dev,
                                progress=progress, desc=desc)
        else:
            results = [fit(group[0][2], group[0][3], dataset=ds, device_data=dev, progress=progress, desc=desc)]
        for (arm, seed, cfg, rdir), res in zip(group, results, strict=True):
            done[rdir] = Run(arm, seed, cfg, res.history, res.summary)
        k += len(group)
    out: dict[str, list[Run]] = {}
    for arm, _, _, rdir in cells:
        out.setdefault(arm, []).append(done[rdir])
    return out


def curve(runs: Sequence[Run], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over seeds of a metric against steps, on the steps all seeds share
    (a diverged seed stops its curve; the mean then covers the seeds still running).

    Returns:
      ``(steps, mean, std)``.
    """
    series = [{r["step"]: r[metric] for r in run.history if metric in r} for run in runs]
    steps = sorted(set().union(*series)) if series else []
    mean, std = [], []
    for s in steps:
        vals = [d[s] for d in series if s in d]
        mean.append(np.mean(vals))
        std.append(np.std(vals))
    return np.asarray(steps), np.asarray(mean), np.asarray(std)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation, ignoring NaN; (nan, nan) if empty."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def fmt(mean: float, std: float, *, pct: bool = True) -> str:
    """``"98.21 ± 0.05"`` (percent by default; otherwise 3 significant digits)."""
    if not np.isfinite(mean):
        return "—"
    if not pct:
        return f"{mean:.3g} ± {std:.2g}"
    return f"{mean * 100:.2f} ± {std * 100:.2f}"


def summarize(runs: Mapping[str, Sequence[Run]]) -> dict:
    """Per-arm statistics over seeds, JSON-ready: final and best test accuracy, final
    training loss (mean, std), divergence steps, and the mean/std curves."""
    out = {}
    for arm, rs in runs.items():
        acc_steps, acc_mean, acc_std = curve(rs, "test_accuracy")
        loss_steps, loss_mean, loss_std = curve(rs, "train_loss")
        out[arm] = {
            "seeds": [r.seed for r in rs],
            "final_test_accuracy": mean_std([r.summary["final_test_accuracy"] for r in rs
                                             if r.summary["diverged_at"] is None]),
            "best_test_accuracy": mean_std([r.summary["best_test_accuracy"] for r in rs]),
            "final_train_loss": mean_std([r.summary["final_train_loss"] for r in rs
                                          if r.summary["diverged_at"] is None]),
            "diverged_at": [r.summary["diverged_at"] for r in rs],
            "train_seconds": float(np.sum([r.summary["train_seconds"] for r in rs])),
            "curves": {"steps": acc_steps.tolist(), "test_accuracy": [acc_mean.tolist(), acc_std.tolist()],
                       "loss_steps": loss_steps.tolist(), "train_loss": [loss_mean.tolist(), loss_std.tolist()]},
        }
    return out


def first_reach(steps: Sequence[int], values: Sequence[float], threshold: float) -> int | None:
    """The first step whose value is >= threshold (None if never)."""
    for s, v in zip(steps, values, strict=True):
        if v >= threshold - 1e-12:
            return int(s)
    return None
