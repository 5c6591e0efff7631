"""Run every experiment of the lecture and write one report.

    python -m experiments.reproduce --quick --workdir runs/quick              # digits, about 3 min on 2 CPUs
    python -m experiments.reproduce --data mnist --workdir runs/full          # real MNIST
    python -m experiments.reproduce --data cifar10 --workdir runs/cifar       # natural-image tier (GPU)

Runs placement, the BN paper's learning-rate table, the ablation, with/without
normalisation (with Figure 1), augmentation, the learning-rate sweep and depth, 5 seeds
per MLP arm and 3 per ConvNet arm (--seeds N: N for every arm). On 32x32 colour images
(CIFAR-10/100 or such an npz) the default is the natural-image tier: the LR table, the
sweep and augmentation with the VGG-style net. Experiments share one pool of
runs (WORKDIR/runs) so an arm used by two experiments trains once. An interrupted run
continues where it stopped: finished runs whose config, data and code match are read
back. Config overrides (--SECTION.FIELD VALUE) apply to every arm of every experiment.
Writes WORKDIR/report.md with every figure and table next to the lecture's or the
paper's number.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time

from bnjax import report, runlog, stats
from bnjax import data
from experiments import _cli, ablation, augmentation, batch_size, depth, lr_sweep, lr_table, normalization, placement

EXPERIMENTS = {e.name: e for e in (placement.EXPERIMENT, lr_table.EXPERIMENT, ablation.EXPERIMENT,
                                   normalization.EXPERIMENT, augmentation.EXPERIMENT, lr_sweep.EXPERIMENT,
                                   depth.EXPERIMENT, batch_size.EXPERIMENT)}
DEFAULT = ("placement", "lr_table", "ablation", "normalization", "augmentation", "lr_sweep", "depth")
NATURAL = ("lr_table", "lr_sweep", "augmentation")  # the natural-image tier (32x32 colour images)
# batch_size: ask with --only


def main(argv=None) -> None:
    _cli.one_line_warnings()
    p = _cli.experiment_parser(__doc__, "runs/reproduce")
    p.add_argument("--only", default=None, help=f"comma-separated experiments, of {', '.join(EXPERIMENTS)} "
                                                f"(default: {', '.join(DEFAULT)}; on 32x32 colour images "
                                                f"{', '.join(NATURAL)})")
    p.add_argument("--epochs", type=float, default=1.0, help="batch_size experiment: epochs per run (default: 1)")
    args = p.parse_args(argv)
    names = sections(args.only, args.data)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"--only: unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}")
    settings = _cli.settings_from(p, [EXPERIMENTS[n] for n in names], args=args)
    git = runlog.git_state()  # the tree as the suite starts: what made its numbers
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
    header = _header(settings, argv, results, seconds, total, git)
    parts = [(name, EXPERIMENTS[name].title, results[name]["report"]) for name in names]
    path = report.write(os.path.join(settings.workdir, "report.md"), parts, header=header)
    runlog.write_json(os.path.join(settings.workdir, "timing.json"), {"total_s": total, **seconds})
    print(f"report: {path}")


def sections(only: str | None, source: str | None) -> list[str]:
    """The experiments to run: those named in ``only`` (comma-separated), else the default
    for the data: `NATURAL` on 32x32 colour images, `DEFAULT` otherwise."""
    if only is not None:
        return [n.strip() for n in only.split(",")]
    try:
        natural = bool(source) and data.natural_images(source)
    except ValueError:
        natural = False  # settings_from names the bad source
    return list(NATURAL if natural else DEFAULT)


def _header(settings, argv, results: dict, seconds: dict, total: float, git: dict) -> list[str]:
    run_dirs = sorted({d for r in results.values() for d in r["run_dirs"]})
    summaries = [runlog.read_json(os.path.join(d, "results.json")) for d in run_dirs]
    metas = [runlog.read_json(os.path.join(d, "meta.json")) for d in run_dirs]
    train_s, wall_s = sum(s["train_seconds"] for s in summaries), sum(r["train_wall_s"] for r in results.values())
    versions, code = runlog.versions(), runlog.code_version()
    tree = "clean tree" if not git["modified"] else "modified files: " + ", ".join(git["modified"])
    other = [d for d, m in zip(run_dirs, metas, strict=True) if m.get("code_version") != code]
    prints = sorted({json.dumps(m.get("data_fingerprint"), sort_keys=True) for m in metas})
    fp = ", ".join(f"`{json.loads(p)['source']}` checksum `{json.loads(p)['checksum']}`" for p in prints if p != "null")
    command = shlex.join(["python", "-m", "experiments.reproduce", *(sys.argv[1:] if argv is None else argv)])
    seeds = settings.seeds or "5 per MLP arm and 3 per ConvNet arm"
    return [
        "# bnjax reproduction report", "",
        f"Command: `{command}`", "",
        f"Code: commit `{git['commit'][:12]}` ({tree}); bnjax sources `{code['sources']}`"
        + (f"; {len(other)} runs made by other code: " + ", ".join(other) if other else
           f"; all {len(run_dirs)} runs were made by this code") + ".",
        f"Data: {fp}{' (quick mode: short schedules)' if settings.quick else ''}; seeds: {seeds}; tables give "
        "mean ± std over seeds (n per arm in the tables).",
        f"Time: this invocation {total / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}); "
        f"{len(run_dirs)} runs, whose recorded training times (including evaluations; a group's time shared among "
        f"its runs) add up to {train_s / 60:.2f} min; this invocation spent {wall_s / 60:.2f} min (wall) training "
        "(runs finished by an earlier invocation are read back, not retrained).",
        f"jax {versions['jax']}, flax {versions['flax']}, optax {versions['optax']}.", "",
        f"How to read it: {stats.RULES}",
    ]


if __name__ == "__main__":
    main()
