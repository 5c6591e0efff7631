"""The learning-rate sweep, the depth study and the natural-image tier: their statistics
against hand-computed values, their verdicts on hand-built runs, and the tier's code path
on CIFAR-shaped arrays written here (no network)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bnjax import data, stats
from bnjax.experiment import Settings
from bnjax.verdicts import Verdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_runs(arms, accuracy, diverged, seeds=5):
    """Runs with a flat accuracy history per arm (seed noise 0.2 points) and the given
    divergence step per arm (None: no divergence)."""
    out = {}
    for name, cfg in arms.items():
        runs = []
        for seed in range(seeds):
            steps = range(cfg.eval_every, cfg.steps + 1, cfg.eval_every)
            acc = accuracy(name) + 0.002 * (seed - 1)
            div = diverged(name)
            hist = [{"step": s, "val_accuracy": acc, "test_accuracy": acc - 0.005, "train_loss": 0.1}
                    for s in steps if div is None or s <= div]
            runs.append(stats.Run(name, seed, cfg, hist, {"diverged_at": div, "train_seconds": 1.0}))
        out[name] = runs
    return out


def test_lr_sweep_verdicts_on_hand_built_runs(tmp_path):
    from experiments import lr_sweep

    s = Settings(workdir=str(tmp_path), data="digits", quick=True)
    arms = lr_sweep.arms(s)
    assert len(arms) == 2 * 2 * 3 and {c.optim.lr_multiplier for c in arms.values()} == {1.0, 10.0, 100.0}
    # no BN trains only at x1 (diverges above); BN is within a point up to x10
    acc = {"no BN x1": 0.95, "no BN x10": 0.95, "no BN x100": 0.95, "BN x1": 0.96, "BN x10": 0.958, "BN x100": 0.6}
    runs = _fake_runs(arms, lambda n: acc[n.split(" ", 1)[1]],
                      lambda n: 1 if n.split(" ", 1)[1] in ("no BN x10", "no BN x100") else None)
    res = lr_sweep.analyze(runs, str(tmp_path), s)
    found = [v for v in res["report"] if isinstance(v, Verdict)]
    assert len(found) == 4 and all(v.outcome == "Supported" for v in found), found
    assert "at x10" in found[0].claim and "5/5 diverged" in found[0].claim and found[0].diverged == (0, 5)
    assert "BN x1–x10, no BN x1–x1" in found[1].claim and found[1].rule == "rank"
    assert "| x10 | 0.1 | 10.00 ± 0.00% | 5/5 | 0 |" in "\n".join(map(str, res["report"]))  # chance from divergence
    assert os.path.getsize(tmp_path / "lr_sweep.png") > 10_000
    # the same accuracy with and without BN at every rate: the claims are not supported
    same = _fake_runs(arms, lambda n: 0.95, lambda n: None)
    found = [v for v in lr_sweep.analyze(same, str(tmp_path), s)["report"] if isinstance(v, Verdict)]
    assert [v.outcome for v in found] == ["Contradicted"] * 4  # equal spans: any widening is below one setting
    assert [v.negligible for v in found] == [False, True] * 2
    # BN collapsed to chance at every rate: its span is none, never "the whole grid"
    dead = _fake_runs(arms, lambda n: 0.1 if n.startswith("MLP BN") else 0.95, lambda n: None)
    found = [v for v in lr_sweep.analyze(dead, str(tmp_path), s)["report"] if isinstance(v, Verdict)]
    assert found[1].outcome == "Contradicted" and "BN none" in found[1].claim, found[1]


def test_depth_verdicts_on_hand_built_runs(tmp_path):
    from experiments import depth

    s = Settings(workdir=str(tmp_path), data="digits", quick=True)
    arms = depth.arms(s)
    assert {len(c.model.hidden) for c in arms.values()} == {2, 8}
    assert {(c.model.activation, c.model.init, c.optim.name) for c in arms.values()} == {("sigmoid", "torch", "sgd")}
    acc = {"no BN, 2 layers": 0.9, "no BN, 8 layers": 0.1, "BN, 2 layers": 0.92, "BN, 8 layers": 0.915}
    res = depth.analyze(_fake_runs(arms, acc.get, lambda n: None), str(tmp_path), s)
    found = [v for v in res["report"] if isinstance(v, Verdict)]
    assert [v.outcome for v in found] == ["Supported"] * 3, found
    assert found[0].rule == "rank" and found[0].at_chance == (5, 0)  # 8 plain layers sit at chance
    # at n = 3 the same outcomes cannot be told apart by ranks: no overstated certainty
    res3 = depth.analyze(_fake_runs(arms, acc.get, lambda n: None, seeds=3), str(tmp_path), s)
    assert [v.outcome for v in res3["report"] if isinstance(v, Verdict)][:2] == ["Inconclusive"] * 2
    assert os.path.getsize(tmp_path / "depth.png") > 10_000


def test_data_helpers_for_the_natural_image_tier(tmp_path):
    y = np.repeat(np.arange(10), 5)  # stored sorted by class
    np.testing.assert_array_equal(data.first_of_each_class(y, 10), np.arange(0, 50, 5))
    np.testing.assert_array_equal(data.first_of_each_class(y, 4), [0, 5, 10, 15])
    for shape, natural in (((4, 32, 32, 3), True), ((4, 28, 28, 1), False), ((4, 32, 32, 1), False)):
        path = tmp_path / "d.npz"
        np.savez_compressed(path, x_train=np.zeros(shape, np.uint8), y_train=np.zeros(4), x_test=np.zeros(shape),
                            y_test=np.zeros(4))
        assert data.natural_images(f"npz:{path}") is natural
    assert data.natural_images("cifar10") and not data.natural_images("mnist")
    assert data.label(f"npz:{tmp_path}/mnist.npz") == "mnist"
    assert data.label("idx:/usr/share/datasets/fashion-mnist/") == "fashion-mnist"
    assert data.label("fashion_mnist") == "fashion_mnist"


def test_tiers_resolve_by_data_and_backend():
    from experiments import reproduce, tiers

    assert tiers.resolve("auto", True, "cpu") == "cpu" and tiers.resolve("auto", True, "gpu") == "gpu"
    assert tiers.resolve("auto", False, "cpu") == "" and tiers.resolve("gpu", False, "cpu") == "gpu"
    with pytest.raises(ValueError, match="unknown tier"):
        tiers.resolve("tpu", True, "cpu")
    assert reproduce.sections(None, "gpu") == ["lr_table", "lr_sweep", "augmentation"]
    assert reproduce.sections(None, "cpu") == ["placement", "lr_table", "ablation", "normalization", "augmentation",
                                               "lr_sweep"]
    assert "depth" in reproduce.sections(None, "") and reproduce.sections("depth", "cpu") == ["depth"]
    assert data.label("npz:data_local/cifar10_jpeg.npz") == "CIFAR-10 (JPEG-decoded copy)"


def _cifar_like(path):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), y_train=np.arange(200) % 10,
             x_test=rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), y_test=np.arange(50) % 10)


def test_natural_image_tiers_choose_their_nets(tmp_path):
    from experiments import ablation, augmentation, lr_sweep, lr_table, normalization, placement, tiers

    path = tmp_path / "cifar_like.npz"
    _cifar_like(path)
    gpu = Settings(workdir=str(tmp_path), data=f"npz:{path}", tier="gpu")
    for exp in (lr_table, lr_sweep, augmentation):  # every arm of the gpu tier: the VGG net at batch 128
        assert {(c.model.arch, c.model.channels, c.data.batch_size) for c in exp.arms(gpu).values()} == {
            ("vgg", (32, 32, 64, 64, 128, 128), 128)}, exp.__name__
    cpu = Settings(workdir=str(tmp_path), data=f"npz:{path}", tier="cpu")
    for exp in (placement, lr_table, ablation, normalization, augmentation, lr_sweep):
        convnets = [c for c in exp.arms(cpu).values() if c.model.arch == "convnet"]
        assert convnets and {(c.model.channels, c.model.kernels, c.model.dense, c.data.batch_size)
                             for c in convnets} == {((16, 32), (5, 3), 128, 64)}, exp.__name__
    assert {c.steps for c in augmentation.arms(cpu).values()} == {tiers.CPU_STEPS["augmentation"]}
    quick = Settings(workdir=str(tmp_path), data=f"npz:{path}", tier="cpu", quick=True)
    assert {c.steps for c in augmentation.arms(quick).values()} == {tiers.CPU_STEPS["augmentation"] // 5}
    plain = Settings(workdir=str(tmp_path), data="digits")  # 28x28 data: the tiers change nothing
    assert {c.model.channels for c in lr_table.arms(plain).values()} == {(24, 32)}


@pytest.mark.slow
def test_natural_image_tiers_run_end_to_end_on_cifar_shaped_arrays(tmp_path, figures_not_drawn):
    path = tmp_path / "cifar_like.npz"
    _cifar_like(path)
    wd = tmp_path / "rep"
    # the gpu tier's training, figures and report (its augmentation section, on a small VGG to keep it fast; which
    # net every gpu-tier section trains is asserted on the arms, test_natural_image_tiers_choose_their_nets)
    cmd = [sys.executable, "-m", "experiments.reproduce", "--data", f"npz:{path}", "--tier", "gpu", "--only",
           "augmentation", "--seeds", "1", "--steps", "2", "--quiet", "--workdir", str(wd),
           "--model.channels", "4,4", "--model.kernels", "3,3", "--model.dense", "8", "--data.batch_size", "16"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = open(wd / "report.md").read()
    assert "## 1. Data augmentation" in report and "Tier: gpu" in report
    configs = [json.load(open(os.path.join(d, "config.json"))) for d in
               sorted(os.path.join(wd, "runs", h, "seed_0") for h in os.listdir(wd / "runs"))]
    assert configs and {c["model"]["arch"] for c in configs} == {"vgg"}
    assert {c["data"]["augment"] for c in configs} >= {"", "hflip", "hflip,vflip,rotate:15"}
    assert os.path.getsize(wd / "augmentation" / "grid.png") > 10_000
    # the cpu tier (the default on a CPU): the tier in the report and in the stored invocation (its cheapest
    # section, 4 MLPs; its ConvNet arms are asserted in test_natural_image_tiers_choose_their_nets)
    cpu = tmp_path / "cpu"
    from experiments import reproduce  # in this process (the gpu tier ran as a user's command line)

    reproduce.main(["--data", f"npz:{path}", "--quick", "--seeds", "1", "--steps", "2", "--quiet", "--workdir",
                    str(cpu), "--only", "depth"])
    assert "Tier: cpu" in open(cpu / "report.md").read()
    assert json.load(open(cpu / "suite.json"))["argv"][-2:] == ["--tier", "cpu"]


CIFAR = os.path.join(ROOT, "data_local", "cifar10_jpeg.npz")


@pytest.mark.skipif(not os.path.exists(CIFAR), reason="the CIFAR-10 copy is built by hand (docs/data.md)")
def test_quick_cpu_tier_on_the_real_cifar10_copy(tmp_path):
    cmd = [sys.executable, "-m", "experiments.augmentation", "--data", f"npz:{CIFAR}", "--quick", "--seeds", "1",
           "--quiet", "--workdir", str(tmp_path / "aug")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.load(open(tmp_path / "aug" / "results.json"))
    assert res["arms"]["none"]["final_test_accuracy"][0] > 0.3  # chance is 0.10
    assert "CIFAR-10 (JPEG-decoded copy)" in open(tmp_path / "aug" / "report.md").read()
