"""Learning-rate sweep with and without BN: does BN let a network train at rates where the
plain one diverges, and does it widen the range of good rates?

    python -m experiments.lr_sweep --workdir runs/lr_sweep --data npz:mnist.npz   # MNIST-sized data
    python -m experiments.lr_sweep --quick                                        # digits, ~1 min

Design (fixed before any result on real data; Santurkar et al. 2018, arXiv 1805.11604,
Figure 1: a VGG on CIFAR-10 with BN trains at rates where the plain one does not; Bjorck et
al. 2018, arXiv 1806.02375: without BN, large rates make the activations and gradients of
deep layers blow up, so the usable range of rates is narrow):

* Nets: on 28x28 data the MLP with six ReLU hidden layers of 100 (deep enough for the
  effect, cheap on a CPU) and the small ReLU ConvNet of the other experiments; on 32x32
  colour images (CIFAR-10, the natural-image tier) a VGG-style net, channels
  32-32-64-64-128-128 with a 2x2 pool after each pair, as in Santurkar et al.
* Each net with no normalisation and with BN before each nonlinearity; everything else
  identical: SGD with momentum 0.9, a constant rate (a schedule would hide the rate being
  tested), base rate 0.01 (where the plain nets train well), no weight decay or dropout,
  the same step budget for every run (MLP 3,000 steps, ConvNet 1,000, VGG 2,000).
* Grid: the base rate times 1, 3, 10, 30, 100, 300 (a 300x span; --quick: 1, 10, 100).
* Measure per run the accuracy at the end of the budget (a diverged seed scores chance:
  the project's one rule), on the validation split to choose and on the test split to
  report.
* Claims, per net: (1) at the largest rate at which BN's mean validation accuracy is
  within 1 point of its best, the plain net's test accuracy is more than 1 point below
  its own best (its best rate also chosen on validation), by the exact rank rule (the plain
  net can collapse there); (2) BN's span of good rates is wider: per seed, the longest run of
  rates whose validation accuracy is within 1 point of the arm's own best mean and above
  chance, in grid settings, compared by the exact rank rule (`bnjax.verdicts.span`).

Writes lr_sweep.png (accuracy against the rate multiplier), results.json, report.md.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bnjax import data, plots, report, stats, verdicts
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from bnjax.experiment import Experiment, Settings
from experiments import _cli, tiers

NORMS = {"no BN": "none", "BN": "batch"}
COLORS = {"no BN": "tab:red", "BN": "tab:blue"}
WITHIN = 0.01  # a rate is good if its mean accuracy is within 1 point of the best


def multipliers(quick: bool) -> tuple[float, ...]:
    return (1.0, 10.0, 100.0) if quick else (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)


def nets(s: Settings) -> dict[str, TrainConfig]:
    """The networks swept (see the module docstring), by tier."""
    quick, source = s.quick, s.data
    optim = OptimConfig(name="momentum", learning_rate=0.01, momentum=0.9)
    if s.tier == "gpu":
        return {"VGG": TrainConfig(model=tiers.GPU_VGG, optim=optim, data=DataConfig(source=source, batch_size=128),
                                   steps=2_000, eval_every=250, checkpoint_every=2_000)}
    mlp = TrainConfig(model=ModelConfig(arch="mlp", hidden=(100,) * 6, activation="relu"), optim=optim,
                      data=DataConfig(source=source, batch_size=60), steps=1_000 if quick else 3_000,
                      eval_every=100 if quick else 250, checkpoint_every=3_000)
    cnn = TrainConfig(model=ModelConfig(arch="convnet", activation="relu"), optim=optim,
                      data=DataConfig(source=source, batch_size=32 if quick else 60), steps=300 if quick else 1_000,
                      eval_every=50 if quick else 100, checkpoint_every=1_000)
    if s.tier == "cpu":
        mlp = dataclasses.replace(mlp, steps=tiers.cpu_steps("lr_sweep_mlp", quick), eval_every=250)
        cnn = dataclasses.replace(cnn, model=tiers.CPU_CONVNET, data=dataclasses.replace(cnn.data, batch_size=64),
                                  steps=tiers.cpu_steps("lr_sweep", quick))
    return {"MLP": mlp, "ConvNet": cnn}


def arm(net: str, norm: str, m: float) -> str:
    return f"{net} {norm} x{m:g}"


def arms(s: Settings) -> dict[str, TrainConfig]:
    return {arm(net, norm, m): replace(b, **{"model.norm": code, "optim.lr_multiplier": m})
            for net, b in nets(s).items() for norm, code in NORMS.items() for m in multipliers(s.quick)}


def matrices(runs: dict, net: str, ms: tuple[float, ...]) -> dict:
    """Per normalisation, `bnjax.stats.setting_matrices` over the rate multipliers."""
    return {norm: stats.setting_matrices([runs[arm(net, norm, m)] for m in ms]) for norm in NORMS}


def _span_text(span: tuple[int, int] | None, ms: tuple[float, ...]) -> str:
    return "none" if span is None else f"x{ms[span[0]]:g}–x{ms[span[1]]:g}"


def claims(net: str, m: dict, ms: tuple[float, ...], chance: float) -> tuple[list[verdicts.Verdict], dict]:
    """The sweep's two claims (module docstring) and the spans behind the second."""
    plain, bn = m["no BN"], m["BN"]
    bn_means = np.nanmean(bn["val_accuracy"], axis=0)
    j = int(np.flatnonzero(bn_means >= np.nanmax(bn_means) - WITHIN).max())  # largest rate where BN is near its best
    top = ms[j]
    best = int(np.nanargmax(np.nanmean(plain["val_accuracy"], axis=0)))
    k = plain["test_accuracy"].shape[0]
    fail = verdicts.compare(  # the rank rule: the plain net at a high rate can collapse
        plain["test_accuracy"][:, best], plain["test_accuracy"][:, j], margin=WITHIN, chance=chance, rule="rank",
        diverged=(plain["diverged"][best], plain["diverged"][j]),
        claim=f"{net}: at x{top:g}, the largest rate where BN is within 1 point of its best (BN there: "
              f"{stats.fmt(*stats.mean_std(bn['test_accuracy'][:, j]))}% test), the plain net ends more than 1 "
              f"point below its own best (x{ms[best]:g}); plain seeds at x{top:g}: {plain['diverged'][j]}/{k} "
              f"diverged, {plain['at_chance'][j]}/{k} at chance without diverging")
    wide, spans = verdicts.span(plain["val_accuracy"], bn["val_accuracy"], within=WITHIN, claim=net, chance=chance)
    wide = dataclasses.replace(wide, claim=(
        f"{net}: BN's span of good rates is wider (good: validation accuracy within 1 point of the arm's own best "
        f"mean, BN {spans['reference']['b'] * 100:.2f}%, no BN {spans['reference']['a'] * 100:.2f}%, and above "
        f"chance; spans of the means: BN "
        f"{_span_text(spans['spans']['b'], ms)}, no BN {_span_text(spans['spans']['a'], ms)}; per-seed widths in "
        f"grid settings: BN {spans['seed_widths']['b']}, no BN {spans['seed_widths']['a']})"))
    return [fail, wide], spans


def table_lines(net: str, base_lr: float, m: dict, ms: tuple[float, ...]) -> list[str]:
    rows = []
    for j, mult in enumerate(ms):
        row = [f"x{mult:g}", f"{base_lr * mult:g}"]
        for norm in NORMS:
            t, k, c = m[norm]["test_accuracy"][:, j], m[norm]["diverged"][j], m[norm]["at_chance"][j]
            row += [stats.fmt(*stats.mean_std(t)) + "%", f"{k}/{len(t)}" if k else "0", f"{c}/{len(t)}" if c else "0"]
        rows.append(row)
    head = ["rate", "learning rate"] + [c for norm in NORMS for c in (f"{norm}: final test acc", f"{norm}: diverged",
                                                                      f"{norm}: at chance, not diverged")]
    return [f"**{net}** (final test accuracy, mean ± std over seeds; diverged seeds score chance):", "",
            report.table(head, rows), ""]


def analyze(runs: dict, workdir: str, s: Settings) -> dict:
    ms, bases = multipliers(s.quick), nets(s)
    lines = ["Each net trained with and without BN at every rate of the grid, the same steps for every run "
             "(design and reasons in `experiments/lr_sweep.py`). Accuracy at the end of the budget.", "",
             "![accuracy against the learning rate](lr_sweep.png)", ""]
    panels, out, chance = {}, {}, stats.chance_of(runs)
    for net, b in bases.items():
        m = matrices(runs, net, ms)
        out[net] = {norm: {k: np.asarray(v).tolist() for k, v in d.items()} for norm, d in m.items()}
        verdict_list, out[net]["spans"] = claims(net, m, ms, chance)
        panels[f"{net}, {b.steps:,} steps each"] = {
            f"{norm} ({split})": {"x": ms, "values": m[norm][f"{split}_accuracy"],
                                  "diverged": m[norm]["diverged"] if split == "test" else [], "color": COLORS[norm], "linestyle": "-" if split == "test" else "--"}
            for norm in NORMS for split in ("test", "val")}
        lines += table_lines(net, b.optim.learning_rate, m, ms) + verdict_list + [""]
    plots.setting_figure(panels, s.figure(workdir, "lr_sweep.png"), xlabel="learning-rate multiplier (log)",
                         title=f"Final accuracy against the learning rate, with and without BN ({data.label(s.data)})",
                         chance=chance)
    return {"figures": {"sweep": "lr_sweep.png"}, "multipliers": list(ms), "nets": out, "report": lines}


EXPERIMENT = Experiment(name="lr_sweep", title="Learning-rate sweep with and without BN", arms=arms, analyze=analyze,
                        doc=__doc__, workdir="runs/lr_sweep")


def main(argv=None) -> dict:
    return _cli.experiment_main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
