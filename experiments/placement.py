"""BN before versus after the nonlinearity (the lecture's variants A and B), versus no BN,
for the BN paper's sigmoid MLP and for the ReLU ConvNet. Same optimiser and schedule
for every arm; 3 seeds.

    python -m experiments.placement --workdir runs/placement --data mnist       # full
    python -m experiments.placement --workdir runs/placement --quick            # digits, seconds

Expect BN (either placement) above no BN for the sigmoid MLP; on MNIST the ConvNet arms
end close together. Writes placement_mlp.png, placement_convnet.png, results.json.
"""

from __future__ import annotations

import os

from bnjax import runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from experiments import _cli


def bases(quick: bool, data: str) -> dict[str, TrainConfig]:
    """The MLP (Figure 1 setting, shorter) and the ConvNet (SGD + momentum)."""
    mlp = TrainConfig(
        model=ModelConfig(arch="mlp", activation="sigmoid", init="normal", init_std=0.05),
        optim=OptimConfig(name="sgd", learning_rate=0.1),
        data=DataConfig(source=data, batch_size=60),
        steps=2_000 if quick else 10_000, eval_every=100 if quick else 250, checkpoint_every=2_500)
    cnn = TrainConfig(
        model=ModelConfig(arch="convnet", activation="relu", init="lecun_normal"),
        optim=OptimConfig(name="momentum", learning_rate=0.01, momentum=0.9),
        data=DataConfig(source=data, batch_size=32 if quick else 60),
        steps=600 if quick else 3_000, eval_every=50 if quick else 100, checkpoint_every=1_000)
    return {"MLP": mlp, "ConvNet": cnn}


def arms(base: TrainConfig, net: str) -> dict[str, TrainConfig]:
    return {f"{net} no BN": replace(base, **{"model.norm": "none"}),
            f"{net} BN before (A)": replace(base, **{"model.norm": "batch", "model.placement": "before"}),
            f"{net} BN after (B)": replace(base, **{"model.norm": "batch", "model.placement": "after"})}


def run(workdir: str, *, quick: bool, data: str, seeds: int, pool: str | None = None,
        progress: bool = True, steps: int | None = None) -> dict:
    results = {"figures": {}, "arms": {}}
    for net, base in bases(quick, data).items():
        png = f"placement_{net.lower()}.png"
        _, stats = _cli.train_arms(arms(base, net), workdir, png,
                                   f"{net}: BN before vs after the nonlinearity ({data})", seeds=seeds, pool=pool,
                                   progress=progress, steps=steps)
        results["figures"][net] = png
        results["arms"].update(stats)
    runlog.write_json(os.path.join(workdir, "results.json"), results)
    return results


def main(argv=None) -> None:
    _cli.print_arms(_cli.experiment_main(__doc__, "runs/placement", run, argv)["arms"])

if __name__ == "__main__":
    main()
