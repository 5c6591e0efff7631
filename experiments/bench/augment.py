"""Augmentation throughput: random horizontal flip + rotation (+-15 degrees, bilinear) on a
batch, bnjax on the device (one jitted call per batch, per-image randomness) versus a
per-image host loop in numpy/scipy, and versus torchvision.transforms.v2 called per image
when torchvision is installed. Prints images per second and ratios.

    python -m experiments.bench.augment [--batch 256] [--repeats 5]
"""

from __future__ import annotations


import jax
import numpy as np
from scipy import ndimage

from bnjax import augment
from experiments import _cli
from experiments.bench._timing import median_seconds, table

PIPE = augment.parse_pipeline("hflip,rotate:15")


def bnjax_fn(x):
    f = jax.jit(lambda k, x: augment.augment(k, x, PIPE))
    key = jax.random.key(0)
    return lambda: f(key, x).block_until_ready()


def numpy_fn(x):
    rng = np.random.default_rng(0)

    def run():
        out = np.empty_like(x)
        for i in range(len(x)):
            img = x[i][:, ::-1] if rng.random() < 0.5 else x[i]
            out[i] = ndimage.rotate(img, rng.uniform(-15, 15), axes=(1, 0), reshape=False, order=1, mode="nearest")
        return out

    return run


def torchvision_fn(x):
    try:
        import torch
        from torchvision.transforms import v2
    except Exception:  # not installed, or a torch/torchvision mismatch
        return None
    t = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomRotation(15)])
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return lambda: [t(xt[i]) for i in range(len(xt))]


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    args = _cli.parse(p, argv)
    rows = []
    for shape in ((28, 28, 1), (32, 32, 3)):
        x = np.random.default_rng(0).random((args.batch, *shape), dtype=np.float32)
        t_jax = median_seconds(bnjax_fn(jax.numpy.asarray(x)), repeats=args.repeats)
        t_np = median_seconds(numpy_fn(x), repeats=args.repeats)
        tv = torchvision_fn(x)
        t_tv = median_seconds(tv, repeats=args.repeats) if tv else None
        ips = lambda t: f"{args.batch / t:,.0f}"  # noqa: E731
        rows.append(["x".join(map(str, shape)), ips(t_jax), ips(t_np), ips(t_tv) if t_tv else "not installed",
                     f"{t_np / t_jax:.1f}x", f"{t_tv / t_jax:.1f}x" if t_tv else "—"])
    print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), batch {args.batch}, hflip + rotate:15")
    print(table(["image", "bnjax img/s", "numpy/scipy loop img/s", "torchvision v2 img/s", "bnjax / numpy",
                 "bnjax / torchvision"], rows))


if __name__ == "__main__":
    main()
