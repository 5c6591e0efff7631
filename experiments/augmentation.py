"""Data augmentation (the lecture's last part): the image grid of original / horizontal
flip / vertical flip / rotation (one test image per class), and the BN ConvNet trained
with none, hflip, vflip, rotation (±15°) and all three, on the device inside the compiled
step. On 32x32 colour images (CIFAR-10, the natural-image tier) the net is the VGG-style
one of the LR table with BN, 3,000 steps at batch 128.

    python -m experiments.augmentation --workdir runs/augmentation --data mnist

On digits, flips change what a digit is (a mirrored 2 looks like a 5, a flipped 6 like a
9), so expect them to hurt; small rotations keep the label. On natural images a
horizontal flip preserves the label, which is where the lecture's claim can show. Writes
grid.png, augmentation.png, results.json and report.md.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp

from bnjax import augment, data, plots, report, stats, verdicts
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from bnjax.experiment import Experiment, Settings
from experiments import _cli, tiers

PIPELINES = {"none": "", "hflip": "hflip", "vflip": "vflip", "rotate ±15°": "rotate:15",
             "hflip + vflip + rotate": "hflip,vflip,rotate:15"}


def base(s: Settings) -> TrainConfig:
    """The BN ConvNet (Adam); on 32x32 colour images the tier's net (`experiments.tiers`)."""
    model = ModelConfig(arch="convnet", activation="relu", norm="batch")
    batch, steps, evals = (32, 600, 50) if s.quick else (60, 3_000, 100)
    if s.tier == "gpu":
        model = dataclasses.replace(tiers.GPU_VGG, norm="batch")
        batch, steps, evals = 128, 3_000, 250
    elif s.tier == "cpu":
        model = dataclasses.replace(tiers.CPU_CONVNET, norm="batch")
        batch, steps = tiers.CPU_BATCH, tiers.cpu_steps("augmentation", s.quick)
    return TrainConfig(
        model=model, optim=OptimConfig(name="adam", learning_rate=1e-3),
        data=DataConfig(source=s.data, batch_size=batch), steps=steps, eval_every=evals, checkpoint_every=1_000)


def arms(s: Settings) -> dict[str, TrainConfig]:
    b = base(s)
    return {name: replace(b, **{"data.augment": spec}) for name, spec in PIPELINES.items()}


def analyze(runs: dict, workdir: str, s: Settings) -> dict:
    grid = os.path.join(workdir, "grid.png")
    # a picture of the data: a re-analysis keeps it, without the data
    if s.figures and not (s.reanalyze and os.path.exists(grid)):
        ds = data.load(s.data, val_fraction=0.0)
        x = jnp.asarray(ds.x_test[data.first_of_each_class(ds.y_test, 10)])
        plots.image_grid(augment.demo_rows(jax.random.key(0), x), grid,
                         title=f"Data augmentation on {data.label(s.data)}: one test image per class "
                               "(bnjax.augment, on the device)")
    a = stats.summarize(runs)
    plots.curves_figure(runs, s.figure(workdir, "augmentation.png"),
                        title=f"BN ConvNet with on-device augmentation ({data.label(s.data)})")
    lines = ["The lecture's figure: an image and its horizontal flip, vertical flip and rotation "
             "(computed by `bnjax.augment` on the device):", "", "![augmentation grid](grid.png)", "",
             "![augmentation curves](augmentation.png)", "", report.arms_table(a), ""]
    for arm in PIPELINES:
        if arm != "none":
            lines.append(verdicts.compare_arms(a[arm], a["none"], s.metric,
                                               claim=f"{arm} improves test accuracy over no augmentation"))
    if not s.tier:
        lines.append("- Digits and garments are not all mirror-symmetric: a flip turns some digits into others or "
                     "into no digit, so flips may hurt here; they are label-preserving on natural images (CIFAR).")
    return {"figures": {"grid": "grid.png", "curves": "augmentation.png"}, "arms": a, "report": lines}


EXPERIMENT = Experiment(name="augmentation", title="Data augmentation", arms=arms, analyze=analyze, doc=__doc__,
                        workdir="runs/augmentation")


def main(argv=None) -> dict:
    return _cli.experiment_main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
