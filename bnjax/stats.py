"""Statistics over finished runs: curves over seeds, per-arm summaries, steps to a target,
verdicts with confidence intervals, and number formatting.

Two rules hold everywhere (stated in the report by `RULES`):

* **Diverged seeds** (`series`): a seed whose training loss became non-finite scores
  chance accuracy (1 / number of classes) at every evaluation from its divergence to the
  end of its schedule, so its final accuracy is chance, curves include it, and it never
  reaches a target (`steps_to_target`); its training loss has no value from then on
  (loss statistics cover the seeds that did not diverge, and the tables count them).
* **Verdicts** (`compare`): the 95% confidence interval of the difference of means by
  Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``); **Supported** when it
  excludes 0 in the claimed direction, **Contradicted** when it excludes 0 the other way,
  **Inconclusive** otherwise. Ratios of steps get a bootstrap CI over seeds
  (``scipy.stats.bootstrap``, percentile method).

Nothing here imports training, data or checkpointing (numpy and scipy only), so plots,
reports and notebooks can use it on finished runs alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

RULES = ("A seed that diverged (non-finite training loss) scores chance accuracy from its divergence to the end of "
         "its schedule and counts as not reaching any target; loss statistics cover the seeds that did not "
         "diverge. Verdicts: the 95% confidence interval of the difference of means by Welch's t-test "
         "(scipy.stats.ttest_ind, equal_var=False); **Supported** when it excludes 0 in the claimed direction, "
         "**Contradicted** when it excludes 0 the other way, **Inconclusive** otherwise. Speed-ups get a bootstrap "
         "95% CI over seeds (scipy.stats.bootstrap, percentile method). Best checkpoints and targets are chosen "
         "on the validation split; test accuracy is reported at the validation-selected step and at the end.")


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


def _chance(run: Run) -> float:
    return 1.0 / run.config.model.num_classes if run.config is not None else 0.1


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
            pts.update({s: _chance(run) for s in _schedule(run) if s > div and s not in pts})
    steps = sorted(pts)
    return steps, [pts[s] for s in steps]


def final(run: Run, metric: str) -> float:
    """The last value of `series` (NaN if none)."""
    _, values = series(run, metric)
    return float(values[-1]) if values else math.nan


def selected(run: Run, metric: str = "test_accuracy", *, by: str = "val_accuracy") -> float:
    """``metric`` at the evaluation with the highest ``by`` (the first maximum; with the
    diverged-seed rule). Without ``by`` in the history: the final value."""
    steps, sel = series(run, by)
    if not steps:
        return final(run, metric)
    at = steps[int(np.argmax(sel))]
    values = dict(zip(*series(run, metric), strict=True))
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
    """Mean and (population) standard deviation, ignoring None and NaN; (nan, nan) if empty."""
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
    """Per-arm statistics over seeds, JSON-ready: per-seed values (``per_seed``) and their
    mean and std of the final test accuracy, the test accuracy at the validation-selected
    evaluation, the final training loss, divergence steps, training time and the curves."""
    out = {}
    for arm, rs in runs.items():
        per_seed = {"final_test_accuracy": [final(r, "test_accuracy") for r in rs],
                    "selected_test_accuracy": [selected(r) for r in rs],
                    "best_val_accuracy": [selected(r, "val_accuracy") for r in rs],
                    "final_train_loss": [final(r, "train_loss") if r.diverged_at is None else math.nan for r in rs]}
        curves = {}
        for metric in ("test_accuracy", "val_accuracy", "train_loss"):
            steps, mean, std = curve(rs, metric)
            curves[metric] = {"steps": steps.tolist(), "mean": mean.tolist(), "std": std.tolist()}
        out[arm] = {"seeds": [r.seed for r in rs], "per_seed": per_seed,
                    **{k: mean_std(v) for k, v in per_seed.items()},
                    "diverged_at": [r.diverged_at for r in rs],
                    "train_seconds": float(np.sum([r.summary["train_seconds"] for r in rs])), "curves": curves}
    return out


def columns(cols: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-setting lists of per-seed values as a (seeds, settings) array, NaN-padded."""
    n = max((len(c) for c in cols), default=0)
    return np.asarray([list(c) + [math.nan] * (n - len(c)) for c in cols], float).T.reshape(n, len(cols))


def setting_matrices(cols: Sequence[Sequence[Run]]) -> dict:
    """A sweep's results: for runs grouped by setting (one list of seeds per setting),
    (seeds, settings) arrays of the final validation and test accuracy (`final`, so a
    diverged seed scores chance) and the count of diverged seeds per setting."""
    out = {metric: columns([[final(r, metric) for r in rs] for rs in cols])
           for metric in ("val_accuracy", "test_accuracy")}
    out["diverged"] = [sum(r.diverged_at is not None for r in rs) for rs in cols]
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


def speedup_ci(base: Sequence[int | None], arm: Sequence[int | None], *, seed: int = 0
               ) -> tuple[float, float, float]:
    """Median steps of ``base`` over median steps of ``arm`` (seeds that never reached:
    infinitely many steps), with a 95% bootstrap CI over seeds (percentile method,
    resampling each arm's seeds). Returns ``(ratio, low, high)``; nan where undefined."""
    a = np.asarray([math.inf if s is None else s for s in base], float)
    b = np.asarray([math.inf if s is None else s for s in arm], float)

    def ratio(x, y, axis=-1):
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.median(x, axis=axis) / np.median(y, axis=axis)
        return np.where(np.isnan(r), 0.0, r)  # inf / inf: neither reached

    point = float(ratio(a, b))
    if len(a) < 2 or len(b) < 2:
        return point, math.nan, math.nan
    res = sps.bootstrap((a, b), ratio, vectorized=True, paired=False, method="percentile", n_resamples=2000,
                        random_state=np.random.default_rng(seed))
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def diverged_text(diverged_at: Sequence[int | None]) -> str:
    """``"2/3 seeds, from step 140"`` or ``"no"``."""
    div = [d for d in diverged_at if d is not None]
    return f"{len(div)}/{len(diverged_at)} seeds, from step {min(div)}" if div else "no"


def welch_ci(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> tuple[float, float, float]:
    """Difference of means ``mean(a) - mean(b)`` and its Welch confidence interval
    (NaN values dropped; an interval of nan when either side has fewer than 2 values or
    both have no spread)."""
    x = np.asarray([v for v in a if v is not None and np.isfinite(v)], float)
    y = np.asarray([v for v in b if v is not None and np.isfinite(v)], float)
    diff = float(x.mean() - y.mean()) if x.size and y.size else math.nan
    if x.size < 2 or y.size < 2 or (x.std() == 0 and y.std() == 0):
        return diff, math.nan, math.nan
    ci = sps.ttest_ind(x, y, equal_var=False).confidence_interval(confidence_level=level)
    return diff, float(ci.low), float(ci.high)


def compare(ours: Sequence[float], other: Sequence[float], *, claim: str, higher: bool = True,
            unit: str = "points", scale: float = 100.0, margin: float = 0.0) -> str:
    """One verdict line: ``**Supported**: claim — difference +0.27 points (95% CI +0.15 to
    +0.39, n = 5 vs 5)``. ``ours`` and ``other`` are per-seed values; ``higher``: the
    claim is that ours is higher (else lower) by more than ``margin`` (in the values'
    units: 0.01 is one point of accuracy), i.e. that the CI of ``mean(ours) - mean(other)``
    lies above ``margin`` (below ``-margin`` when not ``higher``)."""
    diff, low, high = welch_ci(ours, other)
    n = f"n = {sum(np.isfinite(v) for v in ours)} vs {sum(np.isfinite(v) for v in other)}"
    sign = 1 if higher else -1
    if not math.isfinite(diff):
        return f"**Inconclusive**: {claim} — no values to compare ({n})."
    if not math.isfinite(low):
        word = "Inconclusive"
    elif sign * low - margin > 0 and sign * high - margin > 0:
        word = "Supported"
    elif sign * low - margin < 0 and sign * high - margin < 0:
        word = "Contradicted"
    else:
        word = "Inconclusive"
    u = f" {unit}" if unit else ""
    num = (lambda v: f"{v * scale:+.2f}") if unit == "points" else (lambda v: f"{v * scale:+.3g}")
    ci = f"95% CI {num(low)} to {num(high)}" if math.isfinite(low) else "95% CI undefined: too few seeds or no spread"
    bar = f"; the claim needs it {'above' if higher else 'below'} {num(sign * margin)}" if margin else ""
    return f"**{word}**: {claim} — difference {num(diff)}{u} ({ci}, {n}{bar})."


def good_span(values: np.ndarray, xs: Sequence[float], *, within: float) -> tuple[float, float]:
    """The span of a sweep's settings whose mean over seeds is within ``within`` of the best
    mean (Bjorck et al. 2018 and Santurkar et al. 2018 read BN's benefit off such spans).

    Args:
      values: (seeds, settings) per-seed values (NaN ignored).
      xs: the settings (positive, e.g. learning-rate multipliers), one per column.
      within: the tolerance below the best mean (0.01: one point of accuracy).
    Returns:
      ``(lowest, highest)`` setting whose mean is within the tolerance (the span counts
      the settings between them as good whether or not they are).
    """
    means = np.nanmean(np.asarray(values, float), axis=0)
    good = np.flatnonzero(means >= np.nanmax(means) - within)
    return float(xs[good.min()]), float(xs[good.max()])


def span_decades(values: np.ndarray, xs: Sequence[float], *, within: float) -> float:
    """Width of `good_span` in decades: ``log10(highest / lowest)`` (0 for one setting)."""
    low, high = good_span(values, xs, within=within)
    return float(np.log10(high / low))


def span_difference_ci(a: np.ndarray, b: np.ndarray, xs: Sequence[float], *, within: float, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float, float]:
    """``span_decades(b) - span_decades(a)`` and its bootstrap CI: the seeds (rows) of each
    sweep are resampled independently (``scipy.stats.bootstrap`` over row indices,
    percentile method), the whole sweep's means recomputed for each resample."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    point = span_decades(b, xs, within=within) - span_decades(a, xs, within=within)
    if len(a) < 2 or len(b) < 2:
        return point, math.nan, math.nan

    def stat(ia, ib):
        return span_decades(b[ib.astype(int)], xs, within=within) - span_decades(a[ia.astype(int)], xs, within=within)

    res = sps.bootstrap((np.arange(len(a)), np.arange(len(b))), stat, vectorized=False, paired=False,
                        method="percentile", confidence_level=level, n_resamples=2000, random_state=seed)
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def interval_verdict(diff: tuple[float, float, float], *, claim: str, unit: str, n: str) -> str:
    """Supported when the CI of a difference lies above 0, Contradicted below, else Inconclusive."""
    x, low, high = diff
    word = ("Supported" if low > 0 else "Contradicted" if high < 0 else "Inconclusive") if math.isfinite(low) \
        else "Inconclusive"
    ci = f"95% CI {low:+.2f} to {high:+.2f}" if math.isfinite(low) else "95% CI undefined: too few seeds"
    return f"**{word}**: {claim} — difference {x:+.2f} {unit} ({ci}, {n})."


def divergence_verdict(diverged_at: Sequence[int | None], *, claim: str) -> str:
    """A claim that an arm diverges, by counting seeds: Supported when every seed diverged,
    Contradicted when none did, Inconclusive otherwise."""
    k, n = sum(d is not None for d in diverged_at), len(diverged_at)
    word = "Supported" if k == n else "Contradicted" if k == 0 else "Inconclusive"
    first = f", first at step {min(d for d in diverged_at if d is not None)}" if k else ""
    return f"**{word}**: {claim} — {k}/{n} seeds diverged{first}."


def speedup_verdict(ratio: tuple[float, float, float], *, claim: str, paper: float | None = None) -> str:
    """A claim that an arm needs fewer steps than the baseline: Supported when the
    bootstrap CI of the ratio lies above 1, Contradicted when below 1."""
    x, low, high = ratio
    paper_txt = f"paper {paper:.1f}x; " if paper else ""
    word = ("Supported" if low > 1 else "Contradicted" if high < 1 else "Inconclusive") if not math.isnan(low) \
        else "Inconclusive"
    show = lambda v: "∞" if v == math.inf else f"{v:.2f}x"  # noqa: E731
    ci = f"95% CI {show(low)} to {show(high)}" if not math.isnan(low) else "95% CI undefined: too few seeds"
    if x == 0:
        return f"**{word}**: {claim} — {paper_txt}here the median seed never reached the target ({ci})."
    return f"**{word}**: {claim} — {paper_txt}here {show(x)} fewer steps ({ci})."
