"""Experiments as arms x seeds of `fit`, with results that survive interruption.

Each run lives in ``WORKDIR/ARM/seed_S``. A run whose ``results.json`` exists is read
back, not retrained; an interrupted run resumes from its checkpoint. Data are loaded
once per distinct data config and shared (on the device) by all runs that use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bnjax import data as data_lib
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


def run_dir(workdir: str, arm: str, seed: int) -> str:
    return os.path.join(workdir, arm, f"seed_{seed}")


def run_arms(arms: Mapping[str, TrainConfig], seeds: Sequence[int], workdir: str, *,
             progress: bool = True) -> dict[str, list[Run]]:
    """Train every arm with every seed (``dataclasses.replace(cfg, seed=s)``).

    Args:
      arms: arm name -> config (its ``seed`` is replaced by each of ``seeds``).
      seeds: the seeds.
      workdir: experiment directory.
      progress: show progress bars.
    Returns:
      arm -> list of `Run`, one per seed.
    """
    from dataclasses import replace

    cache: dict = {}
    out: dict[str, list[Run]] = {}
    total = len(arms) * len(seeds)
    k = 0
    for arm, base in arms.items():
        out[arm] = []
        for seed in seeds:
            k += 1
            cfg = replace(base, seed=seed)
            rdir = run_dir(workdir, arm, seed)
            if os.path.exists(os.path.join(rdir, "results.json")):
                out[arm].append(Run(arm, seed, cfg, runlog.read_metrics(rdir),
                                    runlog.read_json(os.path.join(rdir, "results.json"))))
                continue
            key = (cfg.data.source, cfg.data.data_dir, cfg.data.image_size, cfg.model.num_classes)
            if key not in cache:
                ds = load_dataset(cfg)
                cache.clear()  # keep one data set on the device at a time
                cache[key] = (ds, data_lib.to_device(ds))
            ds, dev = cache[key]
            res = fit(cfg, rdir, dataset=ds, device_data=dev, progress=progress,
                      desc=f"[{k}/{total}] {arm} seed {seed}")
            out[arm].append(Run(arm, seed, cfg, res.history, res.summary))
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
    """``"98.21 ± 0.05"`` (percent by default)."""
    if not np.isfinite(mean):
        return "—"
    k = 100.0 if pct else 1.0
    return f"{mean * k:.2f} ± {std * k:.2f}"
