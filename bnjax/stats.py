"""Statistics over finished runs: curves over seeds, per-arm summaries, steps to a target,
sweep matrices and number formatting. Verdicts (claims tested by a rule) live in
`bnjax.verdicts`.

One rule holds everywhere (stated in the report by `RULES`): a seed whose training loss
became non-finite (**diverged**) scores chance accuracy (1 / number of classes) at every
evaluation from its divergence to the end of its schedule, so its final accuracy, and
its accuracy at the validation-selected evaluation, is chance; its training loss is
infinite from then on; it never reaches a target (`steps_to_target`). "Final test
accuracy" always means this (`final`); a run's last evaluated test accuracy before it
diverged is `last_evaluated`, under its own name.

Nothing here imports training, data or checkpointing (numpy only), so plots, reports
and notebooks can use it on finished runs alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bnjax.verdicts import AT_CHANCE

RULES = ("A seed that diverged (non-finite training loss) scores chance accuracy from its divergence to the end of "
         "its schedule (its final accuracy and its accuracy at the validation-selected step are chance), has an "
         "infinite final training loss and counts as not reaching any target; \"final test accuracy\" always "
         "means this. Best checkpoints and targets are chosen on the validation split; test accuracy is reported "
         "at the validation-selected step and at the end.")


@dataclass
class Run:
    """One finished run: its arm, seed, config, evaluation history and summary."""

    arm: str
    seed: int
    config: Any
    history: list[dict]
    summary: dict
    workdir: str | None = None

    @property
    def diverged_at(self) -> int | None:
        return self.summary.get("diverged_at")


def chance(run: Run) -> float:
    """Chance accuracy of a run: 1 / its model's number of classes."""
    if run.config is None:
        raise ValueError(f"run {run.arm} seed {run.seed} has no config: its chance accuracy is unknown")
    return 1.0 / run.config.model.num_classes


def chance_of(runs: Mapping[str, Sequence[Run]] | Sequence[Run]) -> float:
    """Chance accuracy of a set of runs (that of the first; they share a data set)."""
    first = next(iter(runs.values()))[0] if isinstance(runs, Mapping) else runs[0]
    return chance(first)


def _schedule(run: Run) -> list[int]:
    cfg = run.config
    if cfg is None:
        return []
    return sorted(set(range(cfg.eval_every, cfg.steps + 1, cfg.eval_every)) | {cfg.steps})


def series(run: Run, metric: str) -> tuple[list[int], list[float]]:
    """A run's values of ``metric`` at its evaluations, with the diverged-seed rule: an
    accuracy is chance from the divergence step on (to the end of the schedule); other
    metrics stop at the divergence."""
    pts = {r["step"]: r[metric] for r in run.history if metric in r}
    div = run.diverged_at
    if div is not None:
        pts = {s: v for s, v in pts.items() if s <= div}
        if metric.endswith("accuracy"):
            pts.update({s: chance(run) for s in _schedule(run) if s > div and s not in pts})
    steps = sorted(pts)
    return steps, [pts[s] for s in steps]


def final(run: Run, metric: str) -> float:
    """The final value of ``metric`` by the diverged-seed rule: the last value of `series`
    (chance accuracy for a diverged seed); a diverged seed's loss is ``inf``; NaN if the
    run has no value at all."""
    if run.diverged_at is not None and not metric.endswith("accuracy"):
        return math.inf
    _, values = series(run, metric)
    return float(values[-1]) if values else math.nan


def last_evaluated(run: Run, metric: str = "test_accuracy") -> float:
    """The run's last evaluated value of ``metric`` (before a divergence: not the final
    value of a diverged seed, see `final`); NaN if none."""
    values = [r[metric] for r in run.history if metric in r]
    return float(values[-1]) if values else math.nan


def selected(run: Run, metric: str = "test_accuracy", *, by: str = "val_accuracy") -> float:
    """``metric`` at the evaluation with the highest ``by`` (the first maximum). A diverged
    seed scores chance (the diverged-seed rule: its pre-divergence best is not its
    outcome). Without ``by`` in the history: the final value."""
    if run.diverged_at is not None:
        return final(run, metric)
    steps, sel = series(run, by)
    if not steps:
        return final(run, metric)
    at = steps[int(np.argmax(sel))]
    values = dict(zip(*series(run, metric), strict=True))
    if at not in values and by == "val_accuracy" and run.summary.get("best_step") == at:
        return float(run.summary.get(f"{metric}_at_best", math.nan))  # measured once, at the end (bnjax.record)
    return float(values.get(at, math.nan))


def curve(runs: Sequence[Run], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over seeds of a metric against steps (`series`, so a diverged seed
    counts at chance accuracy), on the union of the steps.

    Returns:
      ``(steps, mean, std)``.
    """
    per = [dict(zip(*series(run, metric), strict=True)) for run in runs]
    steps = sorted(set().union(*per)) if per else []
    mean = [np.mean([d[s] for d in per if s in d]) for s in steps]
    std = [np.std([d[s] for d in per if s in d]) for s in steps]
    return np.asarray(steps), np.asarray(mean), np.asarray(std)


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and (population) standard deviation, ignoring None, NaN and infinite values
    (tables count diverged seeds apart); (nan, nan) if none is left."""
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
    """Per-arm statistics over seeds, JSON-ready: per-seed values (``per_seed``, by the
    diverged-seed rule: chance accuracy, infinite loss) and their mean and std (over the
    finite values) of the final test accuracy, the test accuracy at the
    validation-selected evaluation, the best validation accuracy, the final training
    loss; divergence steps, seeds at chance, chance accuracy, training time, curves."""
    out = {}
    for arm, rs in runs.items():
        per_seed = {"final_test_accuracy": [final(r, "test_accuracy") for r in rs],
                    "selected_test_accuracy": [selected(r) for r in rs],
                    "best_val_accuracy": [selected(r, "val_accuracy") for r in rs],
                    "final_train_loss": [final(r, "train_loss") for r in rs]}
        curves = {}
        for metric in ("test_accuracy", "val_accuracy", "train_loss"):
            steps, mean, std = curve(rs, metric)
            curves[metric] = {"steps": steps.tolist(), "mean": mean.tolist(), "std": std.tolist()}
        c = chance(rs[0])
        out[arm] = {"seeds": [r.seed for r in rs], "per_seed": per_seed,
                    **{k: mean_std(v) for k, v in per_seed.items()},
                    "diverged_at": [r.diverged_at for r in rs], "chance": c,
                    "at_chance": sum(v <= AT_CHANCE * c and r.diverged_at is None
                                     for v, r in zip(per_seed["final_test_accuracy"], rs, strict=True)),
                    "train_seconds": float(np.sum([r.summary["train_seconds"] for r in rs])), "curves": curves}
    return out


def columns(cols: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-setting lists of per-seed values as a (seeds, settings) array, NaN-padded."""
    n = max((len(c) for c in cols), default=0)
    return np.asarray([list(c) + [math.nan] * (n - len(c)) for c in cols], float).T.reshape(n, len(cols))


def setting_matrices(cols: Sequence[Sequence[Run]]) -> dict:
    """A sweep's results: for runs grouped by setting (one list of seeds per setting),
    (seeds, settings) arrays of the final validation and test accuracy (`final`, so a
    diverged seed scores chance) and the counts of diverged seeds and of seeds at chance
    that did not diverge but ended at chance (`AT_CHANCE`) per setting."""
    out = {metric: columns([[final(r, metric) for r in rs] for rs in cols])
           for metric in ("val_accuracy", "test_accuracy")}
    out["diverged"] = [sum(r.diverged_at is not None for r in rs) for rs in cols]
    out["at_chance"] = [sum(r.diverged_at is None and final(r, "test_accuracy") <= AT_CHANCE * chance(r) for r in rs)
                        for rs in cols]
    return out


def first_reach(steps: Sequence[int], values: Sequence[float], threshold: float) -> int | None:
    """The first step whose value is >= threshold (None if never)."""
    for s, v in zip(steps, values, strict=True):
        if v >= threshold - 1e-12:
            return int(s)
    return None


def steps_to_target(run: Run, target: float, metric: str = "val_accuracy") -> int | None:
    """The first evaluation step at which the run's ``metric`` reaches ``target``; None
    if it never does or if the run diverged (the diverged-seed rule)."""
    if run.diverged_at is not None:
        return None
    return first_reach(*series(run, metric), target)


def reach_summary(steps: Sequence[int | None]) -> dict:
    """Per-seed steps to a target as ``{"median", "min", "max", "reached", "n"}``; a seed
    that did not reach counts as infinitely many steps in the median."""
    got = [s for s in steps if s is not None]
    med = float(np.median([math.inf if s is None else s for s in steps])) if steps else math.nan
    return {"median": med, "min": min(got) if got else None, "max": max(got) if got else None,
            "reached": len(got), "n": len(steps)}


def diverged_text(diverged_at: Sequence[int | None], at_chance: int = 0) -> str:
    """``"2/3 seeds, from step 140"`` or ``"no"``, and ``"; 1/3 at chance without
    diverging"`` for ``at_chance`` seeds that collapsed (e.g. dead ReLUs)."""
    div = [d for d in diverged_at if d is not None]
    n = len(diverged_at)
    text = f"{len(div)}/{n} seeds, from step {min(div)}" if div else "no"
    return text + (f"; {at_chance}/{n} at chance without diverging" if at_chance else "")
