"""Run every experiment of the lecture and write one report.

    python -m experiments.reproduce --quick --workdir runs/quick              # digits, < 5 min on 2 CPUs
    python -m experiments.reproduce --data mnist --workdir runs/full          # real MNIST

Runs placement, the BN paper's learning-rate table, the ablation, with/without
normalisation (with Figure 1) and augmentation, 3 seeds per arm, sharing one pool of
runs (WORKDIR/runs) so an arm used by two experiments trains once. An interrupted run
continues where it stopped: finished runs are read back. Writes WORKDIR/report.md with
every figure and table next to the lecture's or the paper's number.
"""

from __future__ import annotations

import glob
import os
import time

from bnjax import report, runlog
from experiments import _cli, ablation, augmentation, lr_table, normalization, placement

EXPERIMENTS = {"placement": placement, "lr_table": lr_table, "ablation": ablation,
               "normalization": normalization, "augmentation": augmentation}


def main(argv=None) -> None:
    p = _cli.experiment_parser(__doc__, workdir="runs/reproduce")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(EXPERIMENTS)}")
    args = p.parse_args(argv)
    data = _cli.data_source(p, args)
    _cli.apply_runs_flag(args)
    names = list(EXPERIMENTS) if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"--only: unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}")
    pool = os.path.join(args.workdir, "runs")
    results, seconds = {}, {}
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        with _cli.interruptible():
            results[name] = EXPERIMENTS[name].run(os.path.join(args.workdir, name), quick=args.quick, data=data,
                                                  seeds=args.seeds, pool=pool, progress=not args.quiet,
                                                  steps=args.steps)
        seconds[name] = time.perf_counter() - t0
        print(f"   {seconds[name]:.0f} s", flush=True)
    total = time.perf_counter() - t_all
    versions = runlog.versions()
    runs = glob.glob(os.path.join(pool, "*", "seed_*", "results.json"))
    train_s = sum(runlog.read_json(r)["train_seconds"] for r in runs)
    header = [
        "# bnjax reproduction report", "",
        f"Data: `{data}`{' (quick mode: short schedules)' if args.quick else ''}; {args.seeds} seeds per arm; "
        f"tables give mean ± std over seeds. Wall time of this invocation {total / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}; runs finished by an earlier invocation "
        "are read back, not retrained). "
        f"{len(runs)} runs; their training (including evaluations) took {train_s / 60:.1f} min in all.",
        f"jax {versions['jax']}, flax {versions['flax']}, optax {versions['optax']}; git {runlog.git_revision()}.",
    ]
    path = report.write(os.path.join(args.workdir, "report.md"), results, header=header)
    runlog.write_json(os.path.join(args.workdir, "timing.json"), {"total_s": total, **seconds})
    print(f"report: {path}")


if __name__ == "__main__":
    main()
