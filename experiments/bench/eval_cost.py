"""What evaluation costs a run: the same BN ConvNet run evaluated every 100 steps (as the
experiments do) against evaluated once at the end, side by side in one process.

    python -m experiments.bench.eval_cost --data npz:../shared/data/mnist.npz     # 1,000 steps
    python -m experiments.bench.eval_cost --steps 200 --data digits               # a smoke run

Arms (compiled once by a warm-up run each, then timed interleaved, ``--repeats`` rounds):
* ``once``: evaluation only at the last step (validation and test splits);
* ``every``: evaluation every ``--every`` steps, test split only at the end and at the
  validation-selected step (bnjax's default since the suite-time issue);
* ``every + test curve + probes``: every evaluation also runs the test split and the
  1,000-example BN probes (what every run did before).
Prints raw seconds per round and the ratios to ``once``; the goal is ``every`` <= 1.25x.
"""

from __future__ import annotations

import dataclasses
import time

from bnjax import data as data_lib
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.loop import fit, load_dataset
from experiments import _cli


def arms(source: str, steps: int, every: int) -> dict[str, TrainConfig]:
    base = TrainConfig(model=ModelConfig(arch="convnet", activation="relu", norm="batch"),
                       optim=OptimConfig(name="momentum", learning_rate=0.01, momentum=0.9),
                       data=DataConfig(source=source, batch_size=60), steps=steps, eval_every=steps)
    return {"once": base, "every": dataclasses.replace(base, eval_every=every),
            "every + test curve + probes": dataclasses.replace(base, eval_every=every, test_curve=True,
                                                               probe_examples=1000)}


def main(argv=None) -> dict:
    p = _cli.parser(__doc__)
    p.add_argument("--data", default="digits")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    args = _cli.parse(p, argv)
    if args.steps < 1 or args.every < 1 or args.repeats < 1:
        p.error("--steps, --every and --repeats must be >= 1")
    cfgs = arms(args.data, args.steps, args.every)
    ds = load_dataset(cfgs["once"])
    dev = data_lib.to_device(ds)
    for cfg in cfgs.values():  # compile every chunk and evaluation shape once
        fit(cfg, dataset=ds, device_data=dev, progress=False)
    times: dict[str, list[float]] = {k: [] for k in cfgs}
    for r in range(args.repeats):
        for name, cfg in cfgs.items():
            t0 = time.perf_counter()
            fit(cfg, dataset=ds, device_data=dev, progress=False)
            times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    base = sum(times["once"])
    for name, t in times.items():
        print(f"{name}: {sum(t) / len(t):.2f} s per run, {sum(t) / base:.3f}x evaluated once")
    return times


if __name__ == "__main__":
    main()
