"""Statistics over finished runs: curves over seeds, per-arm summaries, the first step
reaching a target, verdicts, and number formatting.

This module imports nothing from training, data or checkpointing (only numpy), so
plots, reports and notebooks can use it on finished runs alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Run:
    """One finished run: its arm, seed, config, evaluation history and summary."""

    arm: str
    seed: int
    config: Any
    history: list[dict]
    summary: dict
    workdir: str | None = None


def curve(runs: Sequence[Run], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over seeds of a metric against steps, on the union of the steps the
    seeds recorded. A diverged seed stops recording, so the mean at a later step covers
    only the seeds still running (the plots mark where a seed diverged).

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
    """Per-arm statistics over seeds, JSON-ready: final and best test accuracy, final
    training loss (mean, std; final values over the seeds that did not diverge),
    divergence steps, training time, and the mean/std curves."""
    out = {}
    for arm, rs in runs.items():
        acc_steps, acc_mean, acc_std = curve(rs, "test_accuracy")
        loss_steps, loss_mean, loss_std = curve(rs, "train_loss")
        alive = [r for r in rs if r.summary["diverged_at"] is None]
        out[arm] = {
            "seeds": [r.seed for r in rs],
            "final_test_accuracy": mean_std([r.summary["final_test_accuracy"] for r in alive]),
            "best_test_accuracy": mean_std([r.summary["best_test_accuracy"] for r in rs]),
            "final_train_loss": mean_std([r.summary["final_train_loss"] for r in alive]),
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


def diverged_text(diverged_at: Sequence[int | None]) -> str:
    """``"2/3 seeds, from step 140"`` or ``"no"``."""
    div = [d for d in diverged_at if d is not None]
    return f"{len(div)}/{len(diverged_at)} seeds, from step {min(div)}" if div else "no"


def verdict(ours: Sequence[float], other: Sequence[float], *, claim: str, higher: bool = True,
            unit: str = "points", scale: float = 100.0) -> str:
    """One sentence: does ``ours`` beat ``other`` (``(mean, std)`` pairs) and by more than
    the sum of the seed spreads?"""
    (m1, s1), (m2, s2) = ours, other
    if not (math.isfinite(m1) and math.isfinite(m2)):
        return f"**Cannot tell**: {claim} (a run diverged or is missing)."
    diff = (m1 - m2) if higher else (m2 - m1)
    spread = s1 + s2
    if diff > spread:
        word = "Supported"
    elif diff > 0:
        word = "Weakly supported (within the seed spread)"
    else:
        word = "Not supported here"
    num = (lambda v: f"{v:+.2f}") if unit == "points" else (lambda v: f"{v:+.3g}")
    unit = f" {unit}" if unit else ""
    return (f"**{word}**: {claim} — difference {num(diff * scale)}{unit} "
            f"(seed spread {num(spread * scale)[1:]}).")
