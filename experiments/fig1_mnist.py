"""Figure 1 of the BN paper (Ioffe & Szegedy 2015, section 4.1) on MNIST.

The network: 784-100-100-100-10, sigmoid hidden units, trained for 50,000 steps with
mini-batches of 60 examples, with and without BN before each sigmoid. Recorded at every
evaluation: test accuracy, and the 15th/50th/85th percentiles over test examples of the
input of one sigmoid (unit 0) of the last hidden layer.

The paper leaves the optimiser, learning rate and initial weights open. bnjax uses
plain SGD, learning rate 0.1 (constant), weights N(0, 0.05^2), zero biases, no
weight decay - the same setting for both networks. --quick: 3,000 steps.

Run (real MNIST via tfds; here: --data npz:../shared/data/mnist.npz):
    python -m experiments.fig1_mnist --workdir runs/fig1 --data mnist
Expect: BN above the plain network at every evaluation after a few thousand steps
(about 98.2% vs 97.0% at the end) and a steadier 50th percentile with BN.
Writes WORKDIR/fig1.png, results.json and report.md.
"""

from __future__ import annotations


from bnjax import plots, report, stats, verdicts
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from bnjax.experiment import Experiment, Settings
from experiments import _cli

DEFAULTS = TrainConfig(
    model=ModelConfig(arch="mlp", hidden=(100, 100, 100), activation="sigmoid", init="normal", init_std=0.05),
    optim=OptimConfig(name="sgd", learning_rate=0.1),
    data=DataConfig(source="mnist", batch_size=60),
    steps=50_000, eval_every=500, checkpoint_every=5_000, probe_examples=1_000, test_curve=True,
)  # Figure 1 plots test accuracy and the probes against steps: both at every evaluation
LABELS = {"without_bn": "without BN", "with_bn": "with BN"}


def arms(s: Settings) -> dict[str, TrainConfig]:
    """The two networks of Figure 1."""
    base = replace(DEFAULTS, **{"data.source": s.data})
    if s.quick or s.tier == "cpu":  # the CPU tier of colour images: Figure 1's network at its --quick length
        base = replace(base, **{"steps": 3_000, "eval_every": 100, "checkpoint_every": 0})
    return {"without_bn": replace(base, **{"model.norm": "none"}),
            "with_bn": replace(base, **{"model.norm": "batch", "model.placement": "before"})}


def figure1(runs: dict, path: str | None) -> dict:
    """Draw Figure 1 at ``path`` (None: not drawn, `bnjax.experiment.Settings.figure`);
    returns the per-arm curves, final accuracy and 50th-percentile spread."""
    cfg = runs["with_bn"][0].config
    layer = f"block{len(cfg.model.hidden) - 1}"
    plots.figure1(runs["without_bn"], runs["with_bn"], path, layer=layer,
                  unit=cfg.probe_unit)
    out = {"layer": layer, "unit": cfg.probe_unit, "chance": stats.chance_of(runs), "arms": {}}
    for arm, rs in runs.items():
        steps, mean, std = stats.curve(rs, "test_accuracy")
        p50 = [[r["probes"][layer][1] for r in run.history if "probes" in r] for run in rs]
        finals, spreads = [stats.final(r, "test_accuracy") for r in rs], [max(p) - min(p) for p in p50 if p]
        out["arms"][arm] = {
            "steps": steps.tolist(), "test_accuracy_mean": mean.tolist(), "test_accuracy_std": std.tolist(),
            "final_test_accuracy": stats.mean_std(finals), "final_test_accuracy_per_seed": finals,
            "p50_spread": stats.mean_std(spreads), "p50_spread_per_seed": spreads, "n": len(rs),
            "percentiles_seed0": [r["probes"][layer] for r in rs[0].history if "probes" in r],
            "diverged": [r.summary["diverged_at"] for r in rs],
        }
    return out


P50_SESOI = 0.1  # in the sigmoid's input: 0.1 moves its output by at most 0.025 (docs/reproducing.md)


def section(f1: dict) -> list[str]:
    """The report lines of Figure 1 (figure linked as fig1.png)."""
    a = f1["arms"]
    lines = ["Paper (Figure 1, MNIST): (a) the network with BN trains faster and reaches higher test accuracy; "
             "(b, c) the distribution of a sigmoid's input is far steadier with BN.", "", "![Figure 1](fig1.png)", ""]
    rows = [[label, str(a[arm]["n"]), stats.fmt(*a[arm]["final_test_accuracy"]),
             f"{a[arm]['p50_spread'][0]:.3f} ± {a[arm]['p50_spread'][1]:.3f}"] for arm, label in LABELS.items()]
    lines += [report.table(["network", "n", "final test accuracy %", "spread of the 50th percentile (max − min)"],
                           rows),
              ""]
    wb, nb = a["with_bn"], a["without_bn"]
    below = [s for s, x, y in zip(wb["steps"], wb["test_accuracy_mean"], nb["test_accuracy_mean"], strict=False)
             if x <= y]
    div = tuple(sum(d is not None for d in x["diverged"]) for x in (wb, nb))
    lines.append(verdicts.compare(wb["final_test_accuracy_per_seed"], nb["final_test_accuracy_per_seed"],
                                  diverged=div, chance=f1["chance"],
                                  claim="(a) the BN network ends with the higher test accuracy"))
    if below:
        lines.append(f"- The mean test accuracy with BN is above the plain network's at every evaluation after step "
                     f"{max(below)} (not at {len(below)} of {len(wb['steps'])} evaluations).")
    else:
        lines.append(f"- The mean test accuracy with BN is above the plain network's at every one of the "
                     f"{len(wb['steps'])} evaluations.")
    lines.append(verdicts.compare(wb["p50_spread_per_seed"], nb["p50_spread_per_seed"], higher=False, unit="",
                                  diverged=div, sesoi=P50_SESOI, claim="(b, c) the median input of the sigmoid moves less with BN"))
    return lines


def analyze(runs: dict, workdir: str, s: Settings) -> dict:
    f1 = figure1(runs, s.figure(workdir, "fig1.png"))
    return {**f1, "figures": {"fig1": "fig1.png"}, "report": section(f1)}


EXPERIMENT = Experiment(name="fig1", title="Figure 1 of the BN paper", arms=arms, analyze=analyze, doc=__doc__,
                        workdir="runs/fig1")


def main(argv=None) -> dict:
    return _cli.experiment_main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
