"""Flag parsing shared by the experiment entry points (flags live only here)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from bnjax import config as config_lib
from bnjax.config import TrainConfig


def make_parser(doc: str, defaults: TrainConfig, *, workdir: str, seeds: int = 3,
                runs_flag: bool = False) -> argparse.ArgumentParser:
    """A parser with --workdir, --data, --seeds, --quiet, every config field, and --runs
    for scripts that train several runs."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [-h] [--workdir DIR] [--data SOURCE] [--seeds N] [--quiet] "
              f"{'[--runs MODE] ' if runs_flag else ''}[--SECTION.FIELD VALUE ...]")
    p.add_argument("--workdir", default=workdir, help=f"experiment directory (default: {workdir})")
    p.add_argument("--data", default=None,
                   help="data source: digits | mnist | fashion_mnist | cifar10 | cifar100 | npz:PATH | idx:DIR "
                        f"(default: {defaults.data.source})")
    p.add_argument("--seeds", type=int, default=seeds, help=f"seeds per arm (default: {seeds})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if runs_flag:
        add_runs_flag(p)
    config_lib.add_flags(p, defaults)
    return p


def parse(p: argparse.ArgumentParser, defaults: TrainConfig, argv: Sequence[str] | None = None
          ) -> tuple[argparse.Namespace, TrainConfig]:
    """Parse flags into ``(args, config)``; a bad value exits 2 naming the field."""
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if hasattr(args, "runs"):
        apply_runs_flag(args)
    try:
        cfg = config_lib.from_flags(args, defaults)
        changes = {}
        if args.data is not None:
            changes["data.source"] = args.data
        if changes:
            cfg = config_lib.replace(cfg, **changes)
    except config_lib.ConfigError as e:
        p.error(str(e))
    return args, cfg


def fail(message: str) -> None:
    """Print an error for the user and exit 1 (a run-time problem, not a bad flag)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def experiment_parser(doc: str, *, workdir: str) -> argparse.ArgumentParser:
    """Flags of the lecture experiments: --workdir, --data, --quick, --seeds, --quiet."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=workdir, help=f"output directory (default: {workdir})")
    p.add_argument("--data", default=None,
                   help="mnist (default), fashion_mnist, npz:PATH, idx:DIR, digits; --quick implies digits")
    p.add_argument("--quick", action="store_true", help="short schedules on the offline digits data set")
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm (default: 3)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--steps", type=int, default=None, help="override every arm's training steps (smoke tests)")
    add_runs_flag(p)
    return p


def add_runs_flag(p: argparse.ArgumentParser) -> None:
    """--runs: how the runs of an experiment train (bnjax.experiment.set_grouping)."""
    p.add_argument("--runs", choices=("auto", "together", "sequential"), default="auto",
                   help="together: runs differing only in seed, learning-rate multiplier, weight decay or init "
                        "train in one compiled "
                        "program; sequential: one after another; auto (default): together except on CPU")


def apply_runs_flag(args: argparse.Namespace) -> None:
    from bnjax import experiment

    experiment.set_grouping(args.runs)


def data_source(p: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The data source the flags ask for, validated (exit 2 on a bad one)."""
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    source = args.data or ("digits" if args.quick else "mnist")
    from bnjax import data

    try:
        data.parse_source(source)
    except ValueError as e:
        p.error(str(e))
    return source


def print_arms(arms: dict) -> None:
    """One line per arm: final test accuracy and training loss, mean ± std over seeds."""
    for arm, a in arms.items():
        (m, s), (lm, ls) = a["final_test_accuracy"], a["final_train_loss"]
        div = [d for d in a["diverged_at"] if d is not None]
        extra = f"  diverged in {len(div)}/{len(a['diverged_at'])} seeds (step {min(div)})" if div else ""
        print(f"{arm:>28}: test accuracy {m * 100:6.2f} ± {s * 100:.2f}%  train loss {lm:.4f} ± {ls:.4f}{extra}")


def experiment_main(doc: str, workdir: str, run, argv=None) -> dict:
    """Parse the lecture-experiment flags and call ``run(workdir, quick=, data=, seeds=,
    progress=, steps=)``; returns its results."""
    p = experiment_parser(doc, workdir=workdir)
    args = p.parse_args(argv)
    apply_runs_flag(args)
    with interruptible():
        return run(args.workdir, quick=args.quick, data=data_source(p, args), seeds=args.seeds,
                   progress=not args.quiet, steps=args.steps)


@contextlib.contextmanager
def interruptible():
    """Ctrl-C: bnjax has saved the running run's checkpoint; say how to continue, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted: finished runs and a checkpoint of the current one are saved; run the same command "
              "to continue", file=sys.stderr)
        raise SystemExit(130) from None


def train_arms(arms: dict, workdir: str, png: str, title: str, *, seeds: int, pool: str | None,
               progress: bool, steps: int | None) -> tuple[dict, dict]:
    """Train every arm with ``seeds`` seeds in the run pool (default WORKDIR/runs), draw
    their loss and accuracy curves into WORKDIR/png. Returns ``(runs, per-arm summary)``."""
    from bnjax import experiment, plots

    os.makedirs(workdir, exist_ok=True)
    runs = experiment.run_arms(arms, range(seeds), pool or os.path.join(workdir, "runs"), progress=progress,
                               steps=steps)
    plots.curves_figure(runs, os.path.join(workdir, png), title=title)
    return runs, experiment.summarize(runs)
