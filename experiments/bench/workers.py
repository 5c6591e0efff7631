"""One process on every core against worker processes pinned to one core each: the same
runs, side by side in interleaved rounds (the measurement behind ``reproduce --executor local:N``).

    python -m experiments.bench.workers --data npz:../shared/data/mnist.npz   # 4 BN ConvNet runs, 1,000 steps
    python -m experiments.bench.workers --arch mlp --runs 8 --data npz:../shared/data/mnist.npz   # BN-paper MLP
    python -m experiments.bench.workers --data digits --steps 50 --runs 2     # a smoke run

Each round trains ``--runs`` runs (seeds 0, 1, ...) of the suite's BN ConvNet or the BN
paper's sigmoid MLP with BN (``--arch``), evaluated every 100 steps as the suite's arms
are, twice: in one process on every core, one run after
another; and split between one process per core, each pinned to its core, training at
once (`bnjax.jobs.pin`). Every process compiles with a warm-up run, says it is
ready, and starts when told, so the time is from the common start to the last process's
end. Prints the raw seconds per round and the throughput ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time

from bnjax import jobs
from experiments import _cli


ARCHS = ("convnet", "mlp")


def config(arch: str, source: str, steps: int):
    """The BN ConvNet or the BN paper's sigmoid MLP with BN of `experiments.bench.seeds`,
    batch 60, evaluated every 100 steps as the suite's arms are."""
    from experiments.bench import seeds

    cfg = {"convnet": seeds.CNN, "mlp": seeds.MLP}[arch]
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=source), steps=steps,
                               eval_every=min(100, steps))


def child(arch: str, source: str, steps: int, seeds: list[int]) -> None:
    """Warm up, print ``ready``, wait for a line on stdin, train ``seeds``, print ``done``."""
    from bnjax import data as data_lib
    from bnjax.loop import fit, load_dataset

    cfg = config(arch, source, steps)
    ds = load_dataset(cfg)
    dev = data_lib.to_device(ds)
    fit(dataclasses.replace(cfg, seed=10_000), dataset=ds, device_data=dev, progress=False)  # compile
    print("ready", flush=True)
    sys.stdin.readline()
    for s in seeds:
        fit(dataclasses.replace(cfg, seed=s), dataset=ds, device_data=dev, progress=False)
    print("done", flush=True)


def timed(arch: str, source: str, steps: int, shares: list[tuple[list[int] | None, list[int]]]) -> float:
    """Seconds from the common start to the last process's end; ``shares``: (cores to pin
    to or None, seeds) per process."""
    procs = []
    for cores, seeds in shares:
        cmd = [sys.executable, "-m", "experiments.bench.workers", "--arch", arch, "--data", source,
               "--steps", str(steps), "--child", ",".join(map(str, seeds))]
        cmd += ["--pin", ",".join(map(str, cores))] if cores else []
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a benchmark process failed: {' '.join(p.args)}")
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        if p.stdout.readline().strip() != "done" or p.wait() != 0:
            raise RuntimeError(f"a benchmark process failed: {' '.join(p.args)}")
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    p = _cli.parser(__doc__)
    p.add_argument("--arch", choices=ARCHS, default="convnet")
    p.add_argument("--data", default="digits")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--pin", default=None, help=argparse.SUPPRESS)
    args = _cli.parse(p, argv)
    if args.child is not None:
        if args.pin:
            jobs.pin([int(c) for c in args.pin.split(",")])
        return child(args.arch, args.data, args.steps, [int(s) for s in args.child.split(",")])
    if min(args.steps, args.runs, args.rounds) < 1:
        p.error("--steps, --runs and --rounds must be >= 1")
    try:
        sets = jobs.core_sets(len(jobs.cores()))
    except ValueError as e:
        p.error(str(e))
    seeds = list(range(args.runs))
    arms = {"one process, all cores": [(None, seeds)],
            f"{len(sets)} processes, one core each": [(c, seeds[k::len(sets)]) for k, c in enumerate(sets)]}
    times: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(args.rounds):
        for name, shares in arms.items():
            times[name].append(timed(args.arch, args.data, args.steps, [s for s in shares if s[1]]))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    one, split = (sum(v) for v in times.values())
    print(f"{args.arch}, {args.runs} runs x {args.steps} steps: one process {one / args.rounds:.2f} s, split "
          f"{split / args.rounds:.2f} s per round; throughput {one / split:.3f}x with one process per core")
    return times


if __name__ == "__main__":
    main()
