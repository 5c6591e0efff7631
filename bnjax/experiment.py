"""Experiments declared as data, and the one runner that trains them.

An `Experiment` is its arms (a function of the `Settings`: arm name -> config) and its
analysis (runs -> figures, tables, verdicts and the lines of its report section). The
runner `run_experiment` builds the arms, applies the user's config overrides to every
arm, trains them through the run pool (`bnjax.pool`) and calls the analysis.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bnjax import config as config_lib
from bnjax import data as data_lib
from bnjax import pool as pool_lib
from bnjax import runlog
from bnjax.config import ConfigError, TrainConfig
from bnjax.protocol import METRICS, Protocol
from bnjax.stats import Run
from bnjax.timing import Phases


@dataclasses.dataclass(frozen=True)
class Settings:
    """How to run an experiment (the experiment scripts' common flags).

    Attributes:
      workdir: the experiment's output directory.
      data: data source (`bnjax.data.parse_source`).
      quick: short schedules (the offline quick suite).
      seeds: seeds per arm (seeds first_seed .. first_seed + seeds - 1); None: `default_seeds`
        of each arm.
      first_seed: the first seed (fresh seeds for a confirmatory run: past the pilot's).
      steps: if set, every arm trains this many steps (smoke tests).
      runs, stale: `bnjax.pool.run_arms`'s modes.
      progress: progress bars.
      overrides: dotted config field -> value, applied to every arm (``--model.norm batch``).
      pool: the run pool (default WORKDIR/runs).
      options: experiment-specific values (defaults in `Experiment.options`).
      reanalyze: read the finished runs' records from the pool instead of training (no
        data loaded; a missing run is an error) and keep figures of the data as they are.
      tier: on 32x32 colour images, "cpu" or "gpu" (the experiments' natural-image
        tiers, `experiments.tiers`); "" on other data.
      tracker: the invocation's `bnjax.progress.SuiteProgress` (None: none).
      metric: the primary accuracy metric of the comparisons (`bnjax.protocol.METRICS`):
        the test accuracy at the last evaluation, or at the validation-selected one.
      protocol: the confirmatory protocol that sets the seeds and the metric (None: a pilot).
      figures: draw the figures; False for an analysis read only for its numbers and verdicts
        (the protocol command's re-analysis of its pilot): `figure` gives no path and
        `bnjax.plots`' figure functions draw nothing (the report still links the figures).
    """

    workdir: str
    data: str
    quick: bool = False
    seeds: int | None = None
    first_seed: int = 0
    steps: int | None = None
    runs: str = "auto"
    stale: str = "retrain"
    progress: bool = True
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pool: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reanalyze: bool = False
    tier: str = ""
    tracker: Any = None
    metric: str = "final_test_accuracy"
    protocol: Protocol | None = None
    figures: bool = True

    def __post_init__(self):
        if self.tier not in ("", "cpu", "gpu"):
            raise ConfigError("tier", f"{self.tier!r} is not one of cpu, gpu (or empty for 28x28 data)")
        if self.seeds is not None and self.seeds < 1:
            raise ConfigError("seeds", f"must be >= 1, got {self.seeds}")
        if self.first_seed < 0:
            raise ConfigError("first_seed", f"must be >= 0, got {self.first_seed}")
        if self.metric not in METRICS:
            raise ConfigError("metric", f"{self.metric!r} is not one of {METRICS}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError("steps", f"must be >= 1, got {self.steps}")
        if self.runs not in pool_lib.RUNS_MODES:
            raise ConfigError("runs", f"{self.runs!r} is not one of {pool_lib.RUNS_MODES}")
        if self.stale not in pool_lib.STALE_POLICIES:
            raise ConfigError("stale", f"{self.stale!r} is not one of {pool_lib.STALE_POLICIES}")
        try:
            data_lib.parse_source(self.data)
        except ValueError as e:
            raise ConfigError("data.source", str(e)) from None

    def figure(self, workdir: str, name: str) -> str | None:
        """The path of figure ``name`` of the experiment in ``workdir``; None when figures are
        not drawn (``figures=False``: `bnjax.plots`' figure functions then draw nothing)."""
        return os.path.join(workdir, name) if self.figures else None


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment of the suite.

    Attributes:
      name: short name (its sub-directory in the reproduction suite).
      title: the heading of its report section.
      arms: settings -> {arm name: config}.
      analyze: (runs by arm, workdir, settings) -> results (JSON-ready), including
        ``"report"``: the Markdown lines of its report section, figures linked relative
        to the workdir.
      doc: what the experiment shows (the script's help text).
      workdir: default output directory of the script.
      options: experiment-specific settings and their defaults (each becomes a flag).
      paper: the paper's numbers the analysis compares against (one copy, here).
    """

    name: str
    title: str
    arms: Callable[[Settings], dict[str, TrainConfig]]
    analyze: Callable[[Mapping[str, list[Run]], str, Settings], dict]
    doc: str = ""
    workdir: str = "runs/experiment"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    paper: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def build_arms(exp: Experiment, settings: Settings) -> dict[str, TrainConfig]:
    """The experiment's arms with the settings' overrides applied to every arm.

    Raises:
      ConfigError: an override that names no field or gives an invalid value.
    """
    arms = exp.arms(settings)
    if settings.overrides:
        arms = {name: config_lib.replace(cfg, **settings.overrides) for name, cfg in arms.items()}
    return arms


def seeds_of(arms: Mapping[str, TrainConfig], settings: Settings, section: str = "") -> dict[str, range]:
    """Each arm's seeds, from ``settings.first_seed``: ``settings.seeds`` of them, else what
    the protocol gives ``section``'s arms of that network kind, else `default_seeds`."""
    k, proto = settings.first_seed, settings.protocol

    def n(arm: str, cfg: TrainConfig) -> int:
        return settings.seeds or (proto and proto.seeds_for(section, cfg.model.arch, arm)) or default_seeds(cfg)
    return {arm: range(k, k + n(arm, cfg)) for arm, cfg in arms.items()}


def run_dirs_of(exps: Sequence[Experiment], settings: Settings, pool: str) -> list[str]:
    """The distinct run directories an invocation of ``exps`` uses (for its progress)."""
    out: set[str] = set()
    for exp in exps:
        arms = build_arms(exp, settings)
        out |= set(pool_lib.run_dirs(arms, seeds_of(arms, settings, exp.name), pool, steps=settings.steps))
    return sorted(out)


def default_seeds(cfg: TrainConfig) -> int:
    """Seeds per arm by default: 5 for the cheap MLP arms (seconds per run), 3 for the
    ConvNet arms (minutes per run on 2 CPU cores)."""
    return 5 if cfg.model.arch == "mlp" else 3


def run_experiment(exp: Experiment, settings: Settings) -> dict:
    """Train the experiment's arms through the pool (or, with ``settings.reanalyze``, read
    their recorded runs) and analyse them.

    Returns:
      The analysis, the run directories it used and the wall time of this invocation's
      training (``train_wall_s``); its ``"report"`` lines hold `bnjax.verdicts.Verdict`
      values until `bnjax.report.finalize` renders them; then `write_results`.
    Raises:
      bnjax.pool.MissingRunsError: re-analysing with runs missing from the pool.
    """
    arms = build_arms(exp, settings)
    os.makedirs(settings.workdir, exist_ok=True)
    timing: dict = {}
    phases = Phases()
    seeds = seeds_of(arms, settings, exp.name)
    pool = settings.pool or os.path.join(settings.workdir, "runs")
    view = os.path.join(settings.workdir, "tensorboard")  # runs by arm and seed (bnjax.events); as in train_share
    t0 = time.perf_counter()
    if settings.reanalyze:
        runs = pool_lib.read_runs(arms, seeds, pool, steps=settings.steps, view=view)
    else:
        runs = pool_lib.run_arms(arms, seeds, pool, runs=settings.runs, stale=settings.stale,
                                 progress=settings.progress, steps=settings.steps, timing=timing, phases=phases,
                                 tracker=settings.tracker, view=view)
    t1 = time.perf_counter()
    results = exp.analyze(runs, settings.workdir, settings)
    results["run_dirs"] = sorted({r.workdir for rs in runs.values() for r in rs if r.workdir})
    results["train_wall_s"] = timing.get("train_wall_s", 0.0)  # this invocation's training calls
    # where this invocation's time went: the pool's and the driver's phases, the rest of
    # getting the runs (staleness checks, reading finished runs back), and the analysis
    wait = timing.get("wait_s", 0.0)  # for runs other processes were training (`train_share`)
    results["time_s"] = {**phases.seconds, "wait": wait, "pool": max(t1 - t0 - phases.total() - wait, 0.0),
                         "analysis": time.perf_counter() - t1}
    results["programs"] = dict(phases.programs)  # XLA programs compiled / loaded from the persistent cache
    return results


def refuse_stale(exps: Sequence[Experiment], settings: Settings) -> None:
    """With ``settings.stale == "refuse"``, raise `bnjax.pool.StaleRunError` naming every
    stale run of all these experiments before any of them trains (one summary line, then
    the runs); nothing is trained or moved. A no-op for the other policies and re-analysis."""
    if settings.stale != "refuse" or settings.reanalyze:
        return
    pool = settings.pool or os.path.join(settings.workdir, "runs")
    arms: dict[str, TrainConfig] = {}
    seeds: dict[str, range] = {}
    for exp in exps:  # one check over every section's arms: each data set is loaded once
        own = build_arms(exp, settings)
        arms.update({f"{exp.name}/{a}": c for a, c in own.items()})
        seeds.update({f"{exp.name}/{a}": r for a, r in seeds_of(own, settings, exp.name).items()})
    stale = pool_lib.stale_runs(arms, seeds, pool, steps=settings.steps)
    if stale:
        raise pool_lib.StaleRunError(stale)


def train_share(exp: Experiment, settings: Settings, phases: Phases | None = None, *, start: float = 0.0) -> int:
    """A worker process's share of an experiment: train its runs that no other process
    sharing the pool has finished or holds, without waiting or analysing
    (`bnjax.pool.train_unheld`, from the fraction ``start`` of its queue); the process
    that analyses runs `run_experiment` after.

    Returns:
      How many runs this process trained.
    """
    arms = build_arms(exp, settings)
    pool = settings.pool or os.path.join(settings.workdir, "runs")
    return pool_lib.train_unheld(arms, seeds_of(arms, settings, exp.name), pool,
                                 runs=settings.runs, stale=settings.stale, progress=settings.progress,
                                 steps=settings.steps, phases=phases, start=start,
                                 view=os.path.join(settings.workdir, "tensorboard"))


def write_results(results: Mapping[str, Any], workdir: str) -> str:
    """Write ``WORKDIR/results.json`` (rendered by `bnjax.report.finalize`), run
    directories relative to the workdir so a results folder can move."""
    out = {**results, "run_dirs": [os.path.relpath(d, workdir) for d in results["run_dirs"]]}
    path = os.path.join(workdir, "results.json")
    runlog.write_json(path, out)
    return path
