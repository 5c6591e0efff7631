"""The natural-image tiers: what the suite trains on 32x32 colour images (CIFAR-10, or an
npz of that shape). Two tiers, chosen by ``--tier`` (default: ``cpu`` on a CPU backend,
``gpu`` on GPU/TPU); the report header names the tier and the backend.

**gpu** (today's VGG tier, for an accelerator): the LR table, the learning-rate sweep and
augmentation with a VGG-style net (channels 32-32-64-64-128-128, 3x3 convolutions, a 2x2
pool after each pair, batch 128; about 30 GFLOP per step).

**cpu** (designed for two CPU cores, written before any run on the real data; a change
after a result is said in the note that reports it). Calibration measured on the
JPEG-decoded copy: the small ConvNet at conv 32-64 (5x5), batch 60, reaches about 69% test
accuracy in 3,000 steps at about 70 ms per step (about 6 GFLOP a step, near the CPU's
peak), so one such run costs 5 minutes: the tier uses a quarter of that net.

* Net (``CPU_CONVNET``): conv 16 (5x5) - pool - conv 32 (3x3) - pool - dense 128 - 10, ReLU,
  batch 64: about 1 GFLOP per step (the MNIST ConvNet's role: BN placement, the LR table,
  the ablation, curves with and without BN, augmentation, the sweep). The MLP arms
  (placement's sigmoid MLP, Figure 1's network, the sweep's 6-layer ReLU MLP) are the
  MNIST ones on 3,072 inputs.
* Sections: placement, LR table, ablation, normalisation (with Figure 1's sigmoid MLP at
  its --quick length, 3,000 steps), augmentation, LR sweep. Not depth: its sigmoid MLPs
  test trainability, which MNIST and Fashion-MNIST already show.
* Steps (``CPU_STEPS``): placement 2,000 (MLP 4,000), LR table 2,000, ablation 1,500,
  normalisation 2,000, augmentation 3,000 (about 4 epochs of the 45,000 training images: a
  flip needs epochs to matter), sweep 1,000 (MLP 2,000); evaluation every 100 steps
  (MLPs every 250). ``--quick`` divides the ConvNet steps by 5.
* Seeds: 3 per ConvNet arm, 5 per MLP arm, as elsewhere.
* Budget: the whole suite in at most 60 minutes on two cores; ``--quick --seeds 1`` of one
  experiment in at most 5 minutes.
"""

from __future__ import annotations

from bnjax.config import ModelConfig

TIERS = ("cpu", "gpu")
SECTIONS = {"cpu": ("placement", "lr_table", "ablation", "normalization", "augmentation", "lr_sweep"),
            "gpu": ("lr_table", "lr_sweep", "augmentation")}
CPU_CONVNET = ModelConfig(arch="convnet", activation="relu", channels=(16, 32), kernels=(5, 3), dense=128)
CPU_BATCH = 64
CPU_STEPS = {"placement": 2_000, "placement_mlp": 4_000, "lr_table": 2_000, "ablation": 1_500,
             "normalization": 2_000, "augmentation": 3_000, "lr_sweep": 1_000, "lr_sweep_mlp": 2_000}
GPU_VGG = ModelConfig(arch="vgg", activation="relu", channels=(32, 32, 64, 64, 128, 128), kernels=(3,) * 6)


def cpu_steps(name: str, quick: bool) -> int:
    """The CPU tier's steps for a section (ConvNet steps / 5 with ``quick``)."""
    steps = CPU_STEPS[name]
    return steps // 5 if quick and not name.endswith("_mlp") else steps


def resolve(tier: str, natural: bool, backend: str) -> str:
    """The tier of an invocation: "" on other data (28x28 grey: the MNIST-sized suite);
    on 32x32 colour images ``tier`` itself, or for "auto" cpu on a CPU backend and gpu on
    GPU/TPU. An explicit cpu/gpu is kept even when the data cannot be inspected (a
    re-analysis without the data)."""
    if tier not in ("auto", *TIERS):
        raise ValueError(f"unknown tier {tier!r}; choose from auto, {', '.join(TIERS)}")
    if tier != "auto":
        return tier
    if not natural:
        return ""
    return "cpu" if backend == "cpu" else "gpu"
