"""Depth and sigmoid trainability: sigmoid MLPs of increasing depth, with and without BN.

    python -m experiments.depth --workdir runs/depth --data npz:mnist.npz
    python -m experiments.depth --quick                                   # digits, ~1 min

Design (fixed before any result on real data). Glorot & Bengio 2010 (AISTATS, "Understanding
the difficulty of training deep feedforward neural networks") show that with the standard
initialisation U(-1/sqrt(n), 1/sqrt(n)) deep sigmoid networks stall: the top hidden layer
saturates near 0 and the gradients reaching the lower layers shrink with depth. The BN
paper (section 4.2.2) reports that Inception with sigmoid units never exceeded 1/1000
accuracy without BN and reached 69.8% with it. So:

* Sigmoid MLPs with 2, 4, 8 and 12 hidden layers of 100 units (--quick: 2 and 8), Glorot &
  Bengio's standard initialisation (``init="torch"``: U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
* Without normalisation, and with BN before each sigmoid (the BN paper's placement).
* The same optimiser and budget for every depth: plain SGD at 0.1 (Glorot & Bengio's
  setting: SGD without momentum), batch 60, 5,000 steps (--quick 1,500).
* Measure the accuracy at the end of the budget (a diverged seed scores chance).
* Claims: (1) without BN the deepest net ends below the shallowest; (2) at the largest
  depth, BN ends above no BN; (3) with BN the deepest net ends within 1 point of the
  shallowest or above it; each with a Welch 95% CI of the difference of test accuracies.

Writes depth.png (accuracy against depth), results.json, report.md.
"""

from __future__ import annotations


import numpy as np

from bnjax import data, plots, report, stats, verdicts
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from bnjax.experiment import Experiment, Settings
from experiments import _cli

NORMS = {"no BN": "none", "BN": "batch"}
COLORS = {"no BN": "tab:red", "BN": "tab:blue"}


def depths(quick: bool) -> tuple[int, ...]:
    return (2, 8) if quick else (2, 4, 8, 12)


def base(quick: bool, source: str) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(arch="mlp", activation="sigmoid", init="torch"),
        optim=OptimConfig(name="sgd", learning_rate=0.1),
        data=DataConfig(source=source, batch_size=60),
        steps=1_500 if quick else 5_000, eval_every=100 if quick else 250, checkpoint_every=5_000)


def arm(norm: str, depth: int) -> str:
    return f"{norm}, {depth} layers"


def arms(s: Settings) -> dict[str, TrainConfig]:
    b = base(s.quick, s.data)
    return {arm(norm, d): replace(b, **{"model.norm": code, "model.hidden": (100,) * d})
            for norm, code in NORMS.items() for d in depths(s.quick)}


def analyze(runs: dict, workdir: str, s: Settings) -> dict:
    ds = depths(s.quick)
    m = {norm: stats.setting_matrices([runs[arm(norm, d)] for d in ds]) for norm in NORMS}
    div = {norm: m[norm]["diverged"] for norm in NORMS}
    panels = {"sigmoid MLP, 100 units per layer": {
        f"{norm} ({split})": {"x": ds, "values": m[norm][f"{split}_accuracy"],
                              "diverged": div[norm] if split == "test" else [], "color": COLORS[norm], "linestyle": "-" if split == "test" else "--"}
        for norm in NORMS for split in ("test", "val")}}
    b = base(s.quick, s.data)
    plots.setting_figure(panels, s.figure(workdir, "depth.png"), xlabel="hidden layers", logx=False,
                         chance=stats.chance_of(runs),
                         title=f"Sigmoid MLP: final accuracy against depth ({data.label(s.data)}, "
                               f"SGD {b.optim.learning_rate:g}, {b.steps:,} steps)")
    rows = [[str(d)] + [stats.fmt(*stats.mean_std(m[norm]["test_accuracy"][:, j])) + "%" for norm in NORMS]
            for j, d in enumerate(ds)]
    test = {norm: m[norm]["test_accuracy"] for norm in NORMS}
    deep, shallow = len(ds) - 1, 0

    def cmp(ours: tuple[str, int], other: tuple[str, int], **kw) -> verdicts.Verdict:
        return verdicts.compare(test[ours[0]][:, ours[1]], test[other[0]][:, other[1]], chance=stats.chance_of(runs),
                                diverged=(div[ours[0]][ours[1]], div[other[0]][other[1]]), **kw)

    lines = ["Sigmoid MLPs of increasing depth, same optimiser and budget (design and reasons in "
             "`experiments/depth.py`). Paper (section 4.2.2): Inception with sigmoid units never exceeded 0.1% "
             "accuracy without BN and reached 69.8% with it.", "", "![accuracy against depth](depth.png)", "",
             report.table(["hidden layers"] + [f"{norm}: final test acc" for norm in NORMS], rows), "",
             cmp(("no BN", deep), ("no BN", shallow), higher=False, rule="rank",  # the deep plain net can collapse
                 claim=f"without BN, {ds[deep]} sigmoid layers end below {ds[shallow]}"),
             cmp(("BN", deep), ("no BN", deep), rule="rank", claim=f"at {ds[deep]} sigmoid layers, BN ends above no BN"),
             cmp(("BN", deep), ("BN", shallow), margin=-0.01,
                 claim=f"with BN, {ds[deep]} layers end within 1 point of {ds[shallow]} or above")]
    return {"figures": {"depth": "depth.png"}, "depths": list(ds), "diverged": div, "report": lines,
            "accuracy": {norm: {k: np.asarray(v).tolist() for k, v in d.items()} for norm, d in m.items()}}


EXPERIMENT = Experiment(name="depth", title="Depth and sigmoid trainability", arms=arms, analyze=analyze,
                        doc=__doc__, workdir="runs/depth")


def main(argv=None) -> dict:
    return _cli.experiment_main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
