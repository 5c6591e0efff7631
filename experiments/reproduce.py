"""Run every experiment of the lecture and write one report.

    python -m experiments.reproduce --quick --workdir runs/quick              # digits, about 2 min on 2 CPUs
    python -m experiments.reproduce --data mnist --workdir runs/full          # real MNIST

Runs placement, the BN paper's learning-rate table, the ablation, with/without
normalisation (with Figure 1) and augmentation, 3 seeds per arm, sharing one pool of
runs (WORKDIR/runs) so an arm used by two experiments trains once. An interrupted run
continues where it stopped: finished runs whose config, data and code match are read
back. Config overrides (--SECTION.FIELD VALUE) apply to every arm of every experiment.
Writes WORKDIR/report.md with every figure and table next to the lecture's or the
paper's number.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time

from bnjax import report, runlog
from experiments import _cli, ablation, augmentation, lr_table, normalization, placement

EXPERIMENTS = {e.name: e for e in (placement.EXPERIMENT, lr_table.EXPERIMENT, ablation.EXPERIMENT,
                                   normalization.EXPERIMENT, augmentation.EXPERIMENT)}


def main(argv=None) -> None:
    _cli.one_line_warnings()
    p = _cli.experiment_parser(__doc__, "runs/reproduce")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(EXPERIMENTS)}")
    args = p.parse_args(argv)
    names = list(EXPERIMENTS) if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"--only: unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}")
    settings = _cli.settings_from(p, [EXPERIMENTS[n] for n in names], args=args)
    pool = os.path.join(settings.workdir, "runs")
    results, seconds = {}, {}
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        results[name] = _cli.run(EXPERIMENTS[name], dataclasses.replace(
            settings, workdir=os.path.join(settings.workdir, name), pool=pool))
        seconds[name] = time.perf_counter() - t0
        print(f"   {seconds[name]:.0f} s", flush=True)
    total = time.perf_counter() - t_all
    header = _header(settings, argv, results, seconds, total)
    sections = [(name, EXPERIMENTS[name].title, results[name]["report"]) for name in names]
    path = report.write(os.path.join(settings.workdir, "report.md"), sections, header=header)
    runlog.write_json(os.path.join(settings.workdir, "timing.json"), {"total_s": total, **seconds})
    print(f"report: {path}")


def _header(settings, argv, results: dict, seconds: dict, total: float) -> list[str]:
    run_dirs = sorted({d for r in results.values() for d in r["run_dirs"]})
    train_s = sum(runlog.read_json(os.path.join(d, "results.json"))["train_seconds"] for d in run_dirs)
    wall_s = sum(r["train_wall_s"] for r in results.values())
    versions = runlog.versions()
    command = shlex.join(["python", "-m", "experiments.reproduce", *(sys.argv[1:] if argv is None else argv)])
    return [
        "# bnjax reproduction report", "",
        f"Command: `{command}`", "",
        f"Data: `{settings.data}`{' (quick mode: short schedules)' if settings.quick else ''}; {settings.seeds} seeds "
        f"per arm; tables give mean ± std over seeds. Wall time of this invocation {total / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}; runs finished by an earlier invocation "
        f"are read back, not retrained). {len(run_dirs)} runs; their recorded training times (including "
        f"evaluations; a group's time shared among its runs) add up to {train_s / 60:.2f} min; this invocation "
        f"spent {wall_s / 60:.2f} min (wall) in training calls.",
        f"jax {versions['jax']}, flax {versions['flax']}, optax {versions['optax']}; git {runlog.git_revision()}; "
        f"bnjax sources {runlog.code_version()['sources']}.",
    ]


if __name__ == "__main__":
    main()
