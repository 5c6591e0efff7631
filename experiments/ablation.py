"""The lecture's comparison of methods: baseline (plain SGD, PyTorch-default init, no BN),
+ Adam, + Xavier init, + BN, and Adam + Xavier + BN together, on the ReLU ConvNet.

    python -m experiments.ablation --workdir runs/ablation --data mnist

Writes ablation.png (training loss and test accuracy of all five arms, mean and a ±1 std
band over seeds) and results.json. Expect each change to help over the baseline and the
combination to reach the lowest training loss.
"""

from __future__ import annotations

import os

from bnjax import runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from experiments import _cli

ADAM = {"optim.name": "adam", "optim.learning_rate": 1e-3}
XAVIER = {"model.init": "xavier_uniform"}
BN = {"model.norm": "batch"}


def base(quick: bool, data: str) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(arch="convnet", activation="relu", init="torch"),
        optim=OptimConfig(name="sgd", learning_rate=0.01),
        data=DataConfig(source=data, batch_size=32 if quick else 60),
        steps=400 if quick else 2_000, eval_every=25 if quick else 100, checkpoint_every=1_000)


def arms(b: TrainConfig) -> dict[str, TrainConfig]:
    return {"baseline (SGD)": b, "+ Adam": replace(b, **ADAM), "+ Xavier init": replace(b, **XAVIER),
            "+ BN": replace(b, **BN), "Adam + Xavier + BN": replace(b, **ADAM, **XAVIER, **BN)}


def run(workdir: str, *, quick: bool, data: str, seeds: int, pool: str | None = None,
        progress: bool = True, steps: int | None = None) -> dict:
    _, stats = _cli.train_arms(arms(base(quick, data)), workdir, "ablation.png",
                               f"Comparison of methods on the ConvNet ({data})", seeds=seeds, pool=pool,
                               progress=progress, steps=steps)
    results = {"figures": {"curves": "ablation.png"}, "arms": stats}
    runlog.write_json(os.path.join(workdir, "results.json"), results)
    return results


def main(argv=None) -> None:
    _cli.print_arms(_cli.experiment_main(__doc__, "runs/ablation", run, argv)["arms"])

if __name__ == "__main__":
    main()
