"""The lecture's augmentation figure: images in rows of original / horizontal flip /
vertical flip / rotation, computed with bnjax.augment on the device.

    python -m experiments.augment_grid --data mnist --out runs/augment_grid.png
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from bnjax import augment, data, plots
from experiments import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--data", default="digits", help="data source (default: digits)")
    p.add_argument("--out", default="runs/augment_grid.png", help="PNG to write")
    p.add_argument("--n", type=int, default=10, help="images per row, one per class (default: 10)")
    p.add_argument("--degrees", type=float, default=30.0, help="rotation range +-DEG (default: 30)")
    p.add_argument("--seed", type=int, default=0)
    args = _cli.parse(p, argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    try:
        ds = data.load(args.data)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        p.error(str(e))
    pick = data.first_of_each_class(ds.y_test, args.n)  # one per class, even in a set sorted by class
    rows = augment.demo_rows(jax.random.key(args.seed), jnp.asarray(ds.x_test[pick]), degrees=args.degrees)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    plots.image_grid(rows, args.out, title=f"Data augmentation on {data.label(args.data)}: one test image per class "
                                           "(bnjax.augment, on the device)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
