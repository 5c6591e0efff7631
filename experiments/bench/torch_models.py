"""PyTorch baselines for the benchmarks (PyTorch is optional and never a bnjax dependency)."""

from __future__ import annotations


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def mlp(bn: bool):
    """The BN paper's MNIST MLP: 784-100-100-100-10 sigmoid, BN before each sigmoid."""
    import torch.nn as tnn

    layers, width = [], 784
    for _ in range(3):
        layers += [tnn.Linear(width, 100, bias=not bn)] + ([tnn.BatchNorm1d(100)] if bn else []) + [tnn.Sigmoid()]
        width = 100
    return tnn.Sequential(tnn.Flatten(), *layers, tnn.Linear(100, 10))


def speedrun_cnn(bn: bool = False):
    """tuomaso/train_mnist_fast's network (final version): conv5x5x24-pool-relu,
    conv3x3x32-pool-relu, fc256-relu, fc10 (VALID convolutions); optionally BN after
    each convolution."""
    import torch.nn as tnn

    def norm(c):
        return [tnn.BatchNorm2d(c)] if bn else []

    return tnn.Sequential(
        tnn.Conv2d(1, 24, 5), *norm(24), tnn.MaxPool2d(2), tnn.ReLU(),
        tnn.Conv2d(24, 32, 3), *norm(32), tnn.MaxPool2d(2), tnn.ReLU(),
        tnn.Flatten(), tnn.Linear(800, 256), tnn.ReLU(), tnn.Linear(256, 10))
