"""BN before versus after the nonlinearity (the lecture's variants A and B), versus no BN,
for the BN paper's sigmoid MLP and for the ReLU ConvNet. Same optimiser and schedule
for every arm; 3 seeds.

    python -m experiments.placement --workdir runs/placement --data mnist       # full
    python -m experiments.placement --workdir runs/placement --quick            # digits, seconds

Expect BN (either placement) above no BN for the sigmoid MLP; on MNIST the ConvNet arms
end close together. Writes placement_mlp.png, placement_convnet.png, results.json, report.md.
"""

from __future__ import annotations

import dataclasses

from bnjax import data, plots, report, stats, verdicts
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from bnjax.experiment import Experiment, Settings
from bnjax.protocol import METRIC_WORDS
from experiments import _cli, tiers

NETS = ("MLP", "ConvNet")


def bases(s: Settings) -> dict[str, TrainConfig]:
    """The MLP (Figure 1 setting, shorter) and the ConvNet (SGD + momentum); on the CPU
    tier of 32x32 colour images its small ConvNet and steps (`experiments.tiers`)."""
    quick, source = s.quick, s.data
    mlp = TrainConfig(
        model=ModelConfig(arch="mlp", activation="sigmoid", init="normal", init_std=0.05),
        optim=OptimConfig(name="sgd", learning_rate=0.1),
        data=DataConfig(source=source, batch_size=60),
        steps=2_000 if quick else 10_000, eval_every=100 if quick else 250, checkpoint_every=2_500)
    cnn = TrainConfig(
        model=ModelConfig(arch="convnet", activation="relu", init="lecun_normal"),
        optim=OptimConfig(name="momentum", learning_rate=0.01, momentum=0.9),
        data=DataConfig(source=source, batch_size=32 if quick else 60),
        steps=600 if quick else 3_000, eval_every=50 if quick else 100, checkpoint_every=1_000)
    if s.tier == "cpu":
        mlp = dataclasses.replace(mlp, steps=tiers.cpu_steps("placement_mlp", quick), eval_every=250)
        cnn = dataclasses.replace(cnn, model=dataclasses.replace(tiers.CPU_CONVNET, init="lecun_normal"),
                                  data=dataclasses.replace(cnn.data, batch_size=tiers.CPU_BATCH),
                                  steps=tiers.cpu_steps("placement", quick))
    return {"MLP": mlp, "ConvNet": cnn}


def arms(s: Settings) -> dict[str, TrainConfig]:
    out = {}
    for net, base in bases(s).items():
        out[f"{net} no BN"] = replace(base, **{"model.norm": "none"})
        out[f"{net} BN before (A)"] = replace(base, **{"model.norm": "batch", "model.placement": "before"})
        out[f"{net} BN after (B)"] = replace(base, **{"model.norm": "batch", "model.placement": "after"})
    return out


def analyze(runs: dict, workdir: str, s: Settings) -> dict:
    a = stats.summarize(runs)
    figures = {}
    for net in NETS:
        figures[net] = f"placement_{net.lower()}.png"
        plots.curves_figure({k: v for k, v in runs.items() if k.startswith(f"{net} ")},
                            s.figure(workdir, figures[net]),
                            title=f"{net}: BN before vs after the nonlinearity ({data.label(s.data)})")
    lines = ["The lecture shows BN inserted before the nonlinearity (A, as the BN paper does: "
             "`z = g(BN(Wu))`) and after it (B). Same optimiser and schedule for every arm.", ""]
    lines += [f"![{net}]({f})" for net, f in figures.items()] + ["", report.arms_table(a), ""]
    for net in NETS:
        arm = {k: a[f"{net} {k}"] for k in ("no BN", "BN before (A)", "BN after (B)")}
        lines.append(verdicts.compare_arms(arm["BN before (A)"], arm["no BN"], s.metric,
                                           claim=f"BN before the nonlinearity raises the {net}'s "
                                                 f"{METRIC_WORDS[s.metric]} over no BN"))
        lines.append(verdicts.compare_arms(arm["BN before (A)"], arm["BN after (B)"], s.metric,
                                           claim=f"for the {net}, placement A ends above placement B"))
    return {"figures": figures, "arms": a, "report": lines}


EXPERIMENT = Experiment(name="placement", title="BN before or after the nonlinearity (lecture variants A and B)",
                        arms=arms, analyze=analyze, doc=__doc__, workdir="runs/placement")


def main(argv=None) -> dict:
    return _cli.experiment_main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
