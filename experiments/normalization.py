"""With and without normalisation: the lecture's two plots (training loss and test
accuracy of the same ConvNet with and without BN), and Figure 1 of the BN paper.

    python -m experiments.normalization --workdir runs/normalization --data mnist

The ConvNet arms are the placement experiment's "no BN" and "BN before" arms (same
configs, so the reproduction suite trains them once); the Figure 1 arms are
`experiments.fig1_mnist`'s. Writes normalization.png, fig1.png, results.json, report.md.
"""

from __future__ import annotations


from bnjax import data, plots, report, stats, verdicts
from bnjax.config import TrainConfig, replace
from bnjax.experiment import Experiment, Settings
from bnjax.protocol import METRIC_WORDS
from experiments import _cli, fig1_mnist, placement

FIG1 = "Figure 1: "


def arms(s: Settings) -> dict[str, TrainConfig]:
    b = placement.bases(s)["ConvNet"]
    out = {"without BN": replace(b, **{"model.norm": "none"}), "with BN": replace(b, **{"model.norm": "batch"})}
    return out | {FIG1 + k: v for k, v in fig1_mnist.arms(s).items()}


def analyze(runs: dict, workdir: str, s: Settings) -> dict:
    conv = {k: v for k, v in runs.items() if not k.startswith(FIG1)}
    a = stats.summarize(conv)
    plots.curves_figure(conv, s.figure(workdir, "normalization.png"),
                        title=f"ConvNet with and without batch normalisation ({data.label(s.data)})")
    lines = ["![with and without BN](normalization.png)", "", report.arms_table(a), ""]
    w, wo = a["with BN"]["curves"]["val_accuracy"], a["without BN"]["curves"]["val_accuracy"]
    above = sum(x > y for x, y in zip(w["mean"], wo["mean"], strict=False))
    lines.append(f"- Mean validation accuracy with BN is above the plain network's at {above} of "
                 f"{min(len(w['steps']), len(wo['steps']))} evaluations (the curves are validation accuracy; the "
                 "test split is measured at the end and at the validation-selected step).")
    lines.append(verdicts.compare_arms(a["with BN"], a["without BN"], s.metric,
                                       claim=f"BN gives the higher {METRIC_WORDS[s.metric]}"))
    f1 = fig1_mnist.figure1({k[len(FIG1):]: v for k, v in runs.items() if k.startswith(FIG1)},
                             s.figure(workdir, "fig1.png"))
    lines += ["", "### Figure 1 of the BN paper", ""] + fig1_mnist.section(f1)
    return {"figures": {"curves": "normalization.png", "fig1": "fig1.png"}, "arms": a, "fig1": f1,
            "report": lines}


EXPERIMENT = Experiment(name="normalization", title="With and without normalisation", arms=arms, analyze=analyze,
                        doc=__doc__, workdir="runs/normalization")


def main(argv=None) -> dict:
    return _cli.experiment_main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
