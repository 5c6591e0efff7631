"""The lecture's comparison of methods: baseline (plain SGD, PyTorch-default init, no BN),
+ Adam, + Xavier init, + BN, and Adam + Xavier + BN together, on the ReLU ConvNet.

    python -m experiments.ablation --workdir runs/ablation --data mnist

Writes ablation.png (training loss and test accuracy of all five arms, mean and a ±1 std
band over seeds), results.json and report.md. Expect each change to help over the
baseline and the combination to reach the lowest training loss.
"""

from __future__ import annotations

import dataclasses

from bnjax import data, plots, report, stats, verdicts
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from bnjax.experiment import Experiment, Settings
from bnjax.protocol import METRIC_WORDS
from experiments import _cli, tiers

ADAM = {"optim.name": "adam", "optim.learning_rate": 1e-3}
XAVIER = {"model.init": "xavier_uniform"}
BN = {"model.norm": "batch"}
SINGLE = ("+ Adam", "+ Xavier init", "+ BN")


def base(s: Settings) -> TrainConfig:
    """The baseline ConvNet (SGD, PyTorch's default init); on the CPU tier of 32x32 colour
    images its small ConvNet and steps (`experiments.tiers`)."""
    quick = s.quick
    cfg = TrainConfig(
        model=ModelConfig(arch="convnet", activation="relu", init="torch"),
        optim=OptimConfig(name="sgd", learning_rate=0.01),
        data=DataConfig(source=s.data, batch_size=32 if quick else 60),
        steps=400 if quick else 2_000, eval_every=25 if quick else 100, checkpoint_every=1_000)
    if s.tier == "cpu":
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(tiers.CPU_CONVNET, init="torch"),
                                  data=dataclasses.replace(cfg.data, batch_size=tiers.CPU_BATCH),
                                  steps=tiers.cpu_steps("ablation", quick))
    return cfg


def arms(s: Settings) -> dict[str, TrainConfig]:
    b = base(s)
    return {"baseline (SGD)": b, "+ Adam": replace(b, **ADAM), "+ Xavier init": replace(b, **XAVIER),
            "+ BN": replace(b, **BN), "Adam + Xavier + BN": replace(b, **ADAM, **XAVIER, **BN)}


def analyze(runs: dict, workdir: str, s: Settings) -> dict:
    a = stats.summarize(runs)
    plots.curves_figure(runs, s.figure(workdir, "ablation.png"),
                        title=f"Comparison of methods on the ConvNet ({data.label(s.data)})")
    lines = ["![ablation](ablation.png)", "", report.arms_table(a), ""]
    for arm in (*SINGLE, "Adam + Xavier + BN"):
        lines.append(verdicts.compare_arms(a[arm], a["baseline (SGD)"], "final_train_loss", higher=False, unit="nats",
                                           claim=f"{arm} lowers the final training loss of the baseline"))
    best_single = max(SINGLE, key=lambda k: a[k]["best_val_accuracy"][0])  # chosen on validation accuracy
    lines.append(verdicts.compare_arms(a["Adam + Xavier + BN"], a[best_single], s.metric,
                                       claim=f"the combination beats the best single change ({best_single}) in "
                                             f"{METRIC_WORDS[s.metric]}"))
    return {"figures": {"curves": "ablation.png"}, "arms": a, "report": lines}


EXPERIMENT = Experiment(name="ablation", title="Comparison of methods (ablation)", arms=arms, analyze=analyze,
                        doc=__doc__, workdir="runs/ablation")


def main(argv=None) -> dict:
    return _cli.experiment_main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
