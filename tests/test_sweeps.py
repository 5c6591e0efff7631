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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_good_span_and_its_width_by_hand():
    xs = (1.0, 3.0, 10.0, 30.0)
    values = np.array([[0.95, 0.965, 0.95, 0.5], [0.95, 0.955, 0.96, 0.5]])  # means .95 .96 .955 .5
    assert stats.good_span(values, xs, within=0.01) == (1.0, 10.0)
    assert stats.span_decades(values, xs, within=0.01) == pytest.approx(1.0)
    assert stats.good_span(values, xs, within=0.006) == (3.0, 10.0)
    assert stats.good_span(values, xs, within=0.004) == (3.0, 3.0)
    assert stats.span_decades(values[:, :1], xs[:1], within=0.01) == 0.0


def test_span_difference_interval():
    xs = (1.0, 10.0, 100.0)
    plain = np.array([[0.9, 0.1, 0.1]] * 4)
    bn = np.array([[0.9, 0.895, 0.2]] * 4)
    assert stats.span_difference_ci(plain, bn, xs, within=0.01) == pytest.approx((1.0, 1.0, 1.0))
    # seeds that disagree: the interval spans the widths the resampled seeds give
    bn2 = np.array([[0.9, 0.90, 0.2], [0.9, 0.70, 0.2], [0.9, 0.91, 0.2], [0.9, 0.69, 0.2]])
    point, low, high = stats.span_difference_ci(plain, bn2, xs, within=0.01)
    assert point == 0.0 and low == 0.0 and high == pytest.approx(1.0)
    assert "**Inconclusive**" in stats.interval_verdict((point, low, high), claim="c", unit="decades", n="n")
    assert "**Supported**" in stats.interval_verdict((1.0, 1.0, 1.0), claim="c", unit="decades", n="n")


def test_compare_with_a_margin():
    rng = np.random.default_rng(0)
    a, b = 0.970 + rng.normal(0, 0.002, 6), 0.965 + rng.normal(0, 0.002, 6)
    diff, low, high = stats.welch_ci(a, b)
    assert 0 < low and high < 0.01
    assert stats.compare(a, b, claim="c").startswith("**Supported**")
    assert stats.compare(a, b, claim="c", margin=0.01).startswith("**Contradicted**")  # not 1 point above
    assert stats.compare(a, b, claim="c", margin=-0.01, higher=True).startswith("**Supported**")
    assert "needs it above +1.00" in stats.compare(a, b, claim="c", margin=0.01)


def _fake_runs(arms, accuracy, diverged):
    """Runs with a flat accuracy history per arm (seed noise 0.2 points) and the given
    divergence step per arm (None: no divergence)."""
    out = {}
    for name, cfg in arms.items():
        runs = []
        for seed in range(3):
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
    verdicts = [line for line in res["report"] if line.startswith("- **")]
    assert len(verdicts) == 4 and all(v.startswith("- **Supported**") for v in verdicts), verdicts
    assert "at x10" in verdicts[0] and "3/3" in verdicts[0] and "BN x1–x10, no BN x1–x1" in verdicts[1]
    assert "| x10 | 0.1 | 10.00 ± 0.00% | 3/3 |" in "\n".join(res["report"])  # chance from divergence on
    assert os.path.getsize(tmp_path / "lr_sweep.png") > 10_000
    # the same accuracy with and without BN at every rate: the claims are not supported
    same = _fake_runs(arms, lambda n: 0.95, lambda n: None)
    verdicts = [line for line in lr_sweep.analyze(same, str(tmp_path), s)["report"] if line.startswith("- **")]
    assert [v.split("**")[1] for v in verdicts] == ["Contradicted", "Inconclusive"] * 2


def test_depth_verdicts_on_hand_built_runs(tmp_path):
    from experiments import depth

    s = Settings(workdir=str(tmp_path), data="digits", quick=True)
    arms = depth.arms(s)
    assert {len(c.model.hidden) for c in arms.values()} == {2, 8}
    assert {(c.model.activation, c.model.init, c.optim.name) for c in arms.values()} == {("sigmoid", "torch", "sgd")}
    acc = {"no BN, 2 layers": 0.9, "no BN, 8 layers": 0.1, "BN, 2 layers": 0.92, "BN, 8 layers": 0.915}
    res = depth.analyze(_fake_runs(arms, acc.get, lambda n: None), str(tmp_path), s)
    verdicts = [line for line in res["report"] if line.startswith("- **")]
    assert [v.split("**")[1] for v in verdicts] == ["Supported"] * 3, verdicts
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


def test_natural_image_tier_runs_the_vgg_net_on_cifar_shaped_arrays(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar_like.npz"
    np.savez(path, x_train=rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), y_train=np.arange(200) % 10,
             x_test=rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), y_test=np.arange(50) % 10)
    wd = tmp_path / "rep"
    from experiments import augmentation, lr_sweep, lr_table, reproduce

    assert reproduce.sections(None, f"npz:{path}") == ["lr_table", "lr_sweep", "augmentation"]
    assert "depth" in reproduce.sections(None, "digits") and "depth" not in reproduce.sections(None, "cifar10")
    s = Settings(workdir=str(tmp_path), data=f"npz:{path}")
    for exp in (lr_table, lr_sweep, augmentation):  # every arm of the tier: the VGG net at batch 128
        arms = exp.arms(s)
        assert {(c.model.arch, c.model.channels, c.data.batch_size) for c in arms.values()} == {
            ("vgg", (32, 32, 64, 64, 128, 128), 128)}, exp.__name__
    # the tier's training, figures and report (two of its experiments; a small VGG to keep it fast)
    cmd = [sys.executable, "-m", "experiments.reproduce", "--data", f"npz:{path}", "--only", "lr_sweep,augmentation",
           "--seeds", "1", "--steps", "2", "--quiet", "--workdir", str(wd), "--model.channels", "4,4",
           "--model.kernels", "3,3", "--model.dense", "8", "--data.batch_size", "16"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = open(wd / "report.md").read()
    assert "## 1. Learning-rate sweep" in report and "**VGG**" in report and "## 2. Data augmentation" in report
    configs = [json.load(open(os.path.join(d, "config.json"))) for d in
               sorted(os.path.join(wd, "runs", h, "seed_0") for h in os.listdir(wd / "runs"))]
    assert configs and {c["model"]["arch"] for c in configs} == {"vgg"}
    assert {c["data"]["augment"] for c in configs} >= {"", "hflip", "hflip,vflip,rotate:15"}
    assert os.path.getsize(wd / "augmentation" / "grid.png") > 10_000
