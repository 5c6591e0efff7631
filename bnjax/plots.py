"""Figures: curves with a band over seeds, and the BN paper's Figure 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np

from bnjax import lazy
from bnjax.stats import Run, curve

matplotlib.use("Agg")
plt = lazy.module("matplotlib.pyplot")  # imported when the first figure is drawn

LABELS = {
    "train_loss": "training loss (mean since last evaluation)",
    "test_accuracy": "test accuracy",
    "val_accuracy": "validation accuracy",
    "test_loss": "test loss",
}


def save(fig, path: str) -> str:
    """Lays ``fig`` out (``tight_layout``), writes it as a PNG at 110 dpi and closes it; returns
    ``path``. Every figure of bnjax and its experiments is written here."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def band(ax, runs: Sequence[Run], metric: str, label: str, **kw) -> None:
    """Mean over seeds as a line, ±1 std as a shaded band (an accuracy's band clipped to
    [0, 1]: bimodal seeds must not draw it past what accuracy allows); marks divergence
    with an x."""
    steps, mean, std = curve(runs, metric)
    n = len(runs)
    (line,) = ax.plot(steps, mean, label=f"{label} (n={n} seeds)", **kw)
    ax.fill_between(steps, *_band_limits(mean, std, metric), color=line.get_color(), alpha=0.2, linewidth=0)
    for run in runs:
        div = run.summary.get("diverged_at")
        if div is not None:
            ax.axvline(div, color=line.get_color(), linestyle=":", alpha=0.6)
            ax.plot([div], [ax.get_ylim()[1]], marker="x", color=line.get_color())


def _band_limits(mean: np.ndarray, std: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    low, high = mean - std, mean + std
    if metric.endswith("accuracy"):
        low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
    return low, high


def curves_figure(arms: Mapping[str, Sequence[Run]], path: str | None, *, title: str,
                  metrics: Sequence[str] = ("train_loss", "val_accuracy"), log_loss: bool = True) -> str | None:
    """One panel per metric, one band per arm. Returns ``path`` (None: nothing drawn).
    Accuracy curves are on the validation split by default: the test split is measured at
    the end and at the selected evaluation only (unless a run has ``test_curve``)."""
    if path is None:  # an analysis that draws no figures (`bnjax.experiment.Settings.figure`)
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2))
    axes = np.atleast_1d(axes)
    for ax, metric in zip(axes, metrics, strict=True):
        for arm, runs in arms.items():
            band(ax, runs, metric, arm)
        ax.set_xlabel("training step")
        ax.set_ylabel(LABELS.get(metric, metric))
        if metric.endswith("loss") and log_loss:
            ax.set_yscale("log")
        if metric.endswith("accuracy"):
            _zoom_accuracy(ax, arms, metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save(fig, path)


def _zoom_accuracy(ax, arms, metric) -> None:
    finals = [curve(runs, metric)[1][-1] for runs in arms.values() if len(curve(runs, metric)[1])]
    if finals:  # show the spread of the end of training: twice the lowest final error below it
        low = min(finals) - max(0.02, 2.0 * (1.0 - min(finals)))
        ax.set_ylim(max(0.0, low), 1.0)


def figure1(plain: Sequence[Run], bn: Sequence[Run], path: str | None, *, layer: str, unit: int) -> str | None:
    """The BN paper's Figure 1: (a) test accuracy with and without BN, (b, c) the 15th,
    50th and 85th percentiles of one sigmoid's input over training, without (b) and with
    (c) BN, for the first seed. Returns ``path`` (None: nothing drawn)."""
    if path is None:  # an analysis that draws no figures (`bnjax.experiment.Settings.figure`)
        return None
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    band(axes[0], plain, "test_accuracy", "Without BN")
    band(axes[0], bn, "test_accuracy", "With BN")
    axes[0].set_title("(a) test accuracy")
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("test accuracy")
    _zoom_accuracy(axes[0], {"a": plain, "b": bn}, "test_accuracy")
    axes[0].legend()
    for ax, runs, name in ((axes[1], plain, "(b) without BN"), (axes[2], bn, "(c) with BN")):
        run = runs[0]
        recs = [r for r in run.history if "probes" in r]
        steps = [r["step"] for r in recs]
        qs = recs[0]["probe_qs"] if recs else []
        for i, q in enumerate(qs):
            ax.plot(steps, [r["probes"][layer][i] for r in recs], label=f"{q:g}th percentile",
                    color="k", linewidth=1.0 + (i == 1), linestyle="-" if i == 1 else "--")
        ax.set_title(f"{name}: input of sigmoid unit {unit}, layer {layer} (seed {run.seed})", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("pre-activation value")
        ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    lims = [a.get_ylim() for a in axes[1:]]
    for a in axes[1:]:
        a.set_ylim(min(lo for lo, _ in lims), max(hi for _, hi in lims))
        a.grid(alpha=0.3)
    axes[0].grid(alpha=0.3)
    return save(fig, path)


def image_grid(rows: Mapping[str, np.ndarray], path: str | None, *, title: str = "") -> str | None:
    """A grid of images: one row per entry (its name on the left), one column per image.
    Images are (N, H, W, C) with C in (1, 3); each is shown with its own min-max scaling.
    Returns ``path`` (None: nothing drawn)."""
    if path is None:  # an analysis that draws no figures (`bnjax.experiment.Settings.figure`)
        return None
    names = list(rows)
    n = len(next(iter(rows.values())))
    fig, axes = plt.subplots(len(names), n, figsize=(1.4 * n + 1.2, 1.45 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for c in range(n):
            img = np.asarray(rows[name][c], dtype=np.float32)
            img = (img - img.min()) / max(float(img.max() - img.min()), 1e-8)
            ax = axes[r, c]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def setting_figure(panels: Mapping[str, Mapping[str, dict]], path: str | None, *, title: str, xlabel: str,
                   logx: bool = True, chance: float | None = None) -> str | None:
    """Accuracy against a setting (learning-rate multiplier, depth): one panel per entry of
    ``panels``, one line per entry of a panel: the mean over seeds with a ±1 std band; at
    settings where seeds diverged, an ``x`` labelled "k/n diverged".

    Args:
      panels: panel title -> line label -> ``{"x": settings, "values": (seeds, settings)
        per-seed values, "diverged": per-setting count of diverged seeds, "color": ...,
        "linestyle": ...}``.
      chance: draws a dotted line at chance accuracy if given (the runs' own:
        `bnjax.stats.chance_of`, never a constant).
    Returns:
      ``path`` (None: nothing drawn).
    """
    if path is None:  # an analysis that draws no figures (`bnjax.experiment.Settings.figure`)
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    for ax, (name, lines) in zip(axes[0], panels.items(), strict=True):
        for label, line in lines.items():
            x, v = np.asarray(line["x"], float), np.asarray(line["values"], float)
            mean, std = np.nanmean(v, axis=0), np.nanstd(v, axis=0)
            ax.plot(x, mean, marker="o", markersize=4, label=f"{label} (n={v.shape[0]} seeds)",
                    color=line.get("color"), linestyle=line.get("linestyle", "-"))
            ax.fill_between(x, *_band_limits(mean, std, "accuracy"), color=line.get("color"), alpha=0.15,
                            linewidth=0)
            for xi, mi, k in zip(x, mean, line.get("diverged") or [0] * len(x), strict=True):
                if k:
                    ax.plot([xi], [mi], marker="x", markersize=10, color=line.get("color"), linestyle="none")
                    ax.annotate(f"{k}/{v.shape[0]} diverged", (xi, mi), textcoords="offset points", xytext=(4, 6),
                                fontsize=7, color=line.get("color"))
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
        if logx:
            ax.set_xscale("log")
        xs = sorted({float(v) for line in lines.values() for v in line["x"]})
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    return save(fig, path)
