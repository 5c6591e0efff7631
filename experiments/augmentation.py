"""Data augmentation (the lecture's last part): the image grid of original / horizontal
flip / vertical flip / rotation, and the BN ConvNet trained with none, hflip, vflip,
rotation (±15°) and all three, on the device inside the compiled step.

    python -m experiments.augmentation --workdir runs/augmentation --data mnist

On digits, flips change what a digit is (a mirrored 2 looks like a 5, a flipped 6 like a
9), so expect them to hurt; small rotations keep the label. Writes grid.png,
augmentation.png, results.json and report.md.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from bnjax import augment, data, plots, report, stats
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from bnjax.experiment import Experiment, Settings
from experiments import _cli

PIPELINES = {"none": "", "hflip": "hflip", "vflip": "vflip", "rotate ±15°": "rotate:15",
             "hflip + vflip + rotate": "hflip,vflip,rotate:15"}


def base(quick: bool, data_source: str) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(arch="convnet", activation="relu", norm="batch"),
        optim=OptimConfig(name="adam", learning_rate=1e-3),
        data=DataConfig(source=data_source, batch_size=32 if quick else 60),
        steps=600 if quick else 3_000, eval_every=50 if quick else 100, checkpoint_every=1_000)


def arms(s: Settings) -> dict[str, TrainConfig]:
    b = base(s.quick, s.data)
    return {name: replace(b, **{"data.augment": spec}) for name, spec in PIPELINES.items()}


def analyze(runs: dict, workdir: str, s: Settings) -> dict:
    x = jnp.asarray(data.load(s.data).x_test[:8])
    plots.image_grid(augment.demo_rows(jax.random.PRNGKey(0), x), os.path.join(workdir, "grid.png"),
                     title=f"Data augmentation on {s.data} (bnjax.augment, on the device)")
    a = stats.summarize(runs)
    plots.curves_figure(runs, os.path.join(workdir, "augmentation.png"),
                        title=f"BN ConvNet with on-device augmentation ({s.data})")
    lines = ["The lecture's figure: an image and its horizontal flip, vertical flip and rotation "
             "(computed by `bnjax.augment` on the device):", "", "![augmentation grid](grid.png)", "",
             "![augmentation curves](augmentation.png)", "", report.arms_table(a), ""]
    for arm in PIPELINES:
        if arm != "none":
            lines.append("- " + stats.compare(a[arm]["per_seed"]["final_test_accuracy"],
                                              a["none"]["per_seed"]["final_test_accuracy"],
                                              claim=f"{arm} improves test accuracy over no augmentation"))
    lines.append("- Digits are not symmetric: a flip turns some digits into others or into no digit, "
                 "so flips are expected to hurt here; they are label-preserving on natural images (CIFAR).")
    return {"figures": {"grid": "grid.png", "curves": "augmentation.png"}, "arms": a, "report": lines}


EXPERIMENT = Experiment(name="augmentation", title="Data augmentation", arms=arms, analyze=analyze, doc=__doc__,
                        workdir="runs/augmentation")


def main(argv=None) -> dict:
    return _cli.experiment_main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
