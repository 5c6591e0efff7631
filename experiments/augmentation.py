"""Data augmentation (the lecture's last part): the image grid of original / horizontal
flip / vertical flip / rotation, and the BN ConvNet trained with none, hflip, vflip,
rotation (±15°) and all three, on the device inside the compiled step.

    python -m experiments.augmentation --workdir runs/augmentation --data mnist

On digits, flips change what a digit is (a mirrored 2 looks like a 5, a flipped 6 like a
9), so expect them to hurt; small rotations keep the label. Writes grid.png,
augmentation.png and results.json.
"""

from __future__ import annotations

import os

from bnjax import runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from experiments import _cli, augment_grid

PIPELINES = {"none": "", "hflip": "hflip", "vflip": "vflip", "rotate ±15°": "rotate:15",
             "hflip + vflip + rotate": "hflip,vflip,rotate:15"}


def base(quick: bool, data: str) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(arch="convnet", activation="relu", norm="batch"),
        optim=OptimConfig(name="adam", learning_rate=1e-3),
        data=DataConfig(source=data, batch_size=32 if quick else 60),
        steps=600 if quick else 3_000, eval_every=50 if quick else 100, checkpoint_every=1_000)


def run(workdir: str, *, quick: bool, data: str, seeds: int, pool: str | None = None,
        progress: bool = True, steps: int | None = None) -> dict:
    os.makedirs(workdir, exist_ok=True)
    augment_grid.main(["--data", data, "--out", os.path.join(workdir, "grid.png")])
    b = base(quick, data)
    arms = {name: replace(b, **{"data.augment": spec}) for name, spec in PIPELINES.items()}
    _, stats = _cli.train_arms(arms, workdir, "augmentation.png",
                               f"BN ConvNet with on-device augmentation ({data})", seeds=seeds, pool=pool,
                               progress=progress, steps=steps)
    results = {"figures": {"grid": "grid.png", "curves": "augmentation.png"}, "arms": stats}
    runlog.write_json(os.path.join(workdir, "results.json"), results)
    return results


def main(argv=None) -> None:
    _cli.print_arms(_cli.experiment_main(__doc__, "runs/augmentation", run, argv)["arms"])

if __name__ == "__main__":
    main()
