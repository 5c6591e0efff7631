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


def speedrun_cnn(bn: bool = False, channels: tuple[int, int] = (24, 32), dense: int = 256):
    """tuomaso/train_mnist_fast's network (final version): conv5x5x24-pool-relu,
    conv3x3x32-pool-relu, fc256-relu, fc10 (VALID convolutions); optionally BN after
    each convolution, other widths."""
    import torch.nn as tnn

    def norm(c):
        return [tnn.BatchNorm2d(c)] if bn else []

    c1, c2 = channels
    return tnn.Sequential(
        tnn.Conv2d(1, c1, 5), *norm(c1), tnn.MaxPool2d(2), tnn.ReLU(),
        tnn.Conv2d(c1, c2, 3), *norm(c2), tnn.MaxPool2d(2), tnn.ReLU(),
        tnn.Flatten(), tnn.Linear(25 * c2, dense), tnn.ReLU(), tnn.Linear(dense, 10))


def wide_cnn(channels: tuple[int, int], dense: int, in_channels: int = 1, side: int = 28):
    """The wide BN ConvNet of the device benchmark: per stage conv3x3 (SAME, no bias) -> BN
    -> ReLU -> 2x2 max-pool, then fc-BN-ReLU and the classifier (bnjax's ConvNet with
    norm="batch", placement "before")."""
    import torch.nn as tnn

    layers, c = [], in_channels
    for ch in channels:
        layers += [tnn.Conv2d(c, ch, 3, padding=1, bias=False), tnn.BatchNorm2d(ch), tnn.ReLU(), tnn.MaxPool2d(2)]
        c, side = ch, side // 2
    return tnn.Sequential(*layers, tnn.Flatten(), tnn.Linear(c * side * side, dense, bias=False),
                          tnn.BatchNorm1d(dense), tnn.ReLU(), tnn.Linear(dense, 10))
