"""``reproduce --executor``: its flags, the arguments its jobs get, and the progress the
invoking process shows as jobs end (the jobs themselves: `bnjax.jobs`; docs/cluster.md).

    --executor local:2                       # 2 jobs at once on this machine, one core set each
    --workers 2                              # the same (the older spelling)
    --executor slurm:16 --slurm.partition gpu --slurm.gpus_per_job 1 --slurm.time_min 60
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from bnjax import jobs, runlog
from bnjax.config import ConfigError

SLURM_FLAGS = {"partition": str, "account": str, "gpus_per_job": int, "cpus_per_job": int, "mem_gb": float,
               "time_min": int}
RETRIES_FLAG = "--executor.retries"


def add_flags(p: argparse.ArgumentParser) -> None:
    """``--executor``, ``--workers`` and the ``--slurm.*`` flags."""
    g = p.add_argument_group("where the runs train", "the suite's runs as jobs of submitit, locally or on SLURM "
                             "(docs/cluster.md); without these flags one process trains everything")
    g.add_argument("--executor", default=None, metavar="ENGINE[:N]",
                   help="local:N: N jobs at once on this machine, each pinned to its own share of the cores, while "
                        "this process analyses (on 2 cores, 2 jobs train about 1.2x faster; see docs/speed.md). "
                        "slurm:N: N SLURM jobs at once (default 8), through submitit. A run's last bits depend on "
                        "its process's core count, recorded in its meta.json")
    g.add_argument("--workers", type=int, default=None, metavar="N", help="the same as --executor local:N")
    g.add_argument(RETRIES_FLAG, dest="executor_retries", type=int, default=1, metavar="K",
                   help="new jobs started for a job that died (killed, preempted) before this process trains what "
                        "it left (default 1); the new job resumes its runs from their checkpoints")
    for name, kind in SLURM_FLAGS.items():
        g.add_argument(f"--slurm.{name}", dest=f"slurm_{name}", type=kind, default=None,
                       metavar={str: "NAME", int: "N", float: "GIB"}[kind], help=f"SLURM jobs: {_SLURM_HELP[name]}")


_SLURM_HELP = {"partition": "the partition (default: the cluster's)", "account": "the account to charge",
               "gpus_per_job": "GPUs per job", "cpus_per_job": "CPU cores per job (default: the cluster's)",
               "mem_gb": "memory per job, GiB (default: the cluster's)",
               "time_min": "each job's time limit in minutes (one section's share of runs; default 60)"}


def config_from(p: argparse.ArgumentParser, args: argparse.Namespace, workdir: str) -> jobs.ExecutorConfig | None:
    """The executor the flags ask for (None: this process trains everything); a bad
    choice exits 2 naming the flag."""
    slurm = {k: getattr(args, f"slurm_{k}") for k in SLURM_FLAGS if getattr(args, f"slurm_{k}") is not None}
    if args.workers is not None and args.executor is not None:
        p.error("--workers N is --executor local:N: give one of them")
    spec = args.executor or (f"local:{args.workers}" if args.workers is not None else None)
    if spec is None:
        if slurm:
            p.error(f"--slurm.{next(iter(slurm))} is for --executor slurm")
        return None
    try:
        n_cores = len(jobs.cores()) if hasattr(os, "sched_getaffinity") else 1
        engine, n = jobs.parse_spec(spec, n_cores)
        cfg = jobs.ExecutorConfig(engine=engine, jobs=n, folder=os.path.join(workdir, "jobs"),
                                  retries=args.executor_retries, **slurm)
        if engine == "slurm":
            jobs.make_executor(cfg)  # no sbatch here: refused now, before anything else
        return cfg
    except ConfigError as e:  # named by its flag: --executor, --slurm.FIELD, --executor.retries
        p.error(f"--{e.field}: {str(e).split(': ', 1)[1]}")


def job_argv(argv: Sequence[str]) -> list[str]:
    """The invocation's arguments less the executor's own flags, plus ``--quiet``: what
    each job parses (it trains; it does not start jobs)."""
    own = {"--executor", "--workers", RETRIES_FLAG, *(f"--slurm.{k}" for k in SLURM_FLAGS)}
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in own:
            skip = True
        elif a.split("=", 1)[0] not in own:
            out.append(a)
    return out if "--quiet" in out else [*out, "--quiet"]


class Finished:
    """Tells the suite's progress (``tracker``) of the runs the jobs trained, as each job
    ends: a run whose ``results.json`` appeared or changed since the suite started.

    Args:
      labels: run directory -> label, of every run of the suite.
      tracker: a `bnjax.progress.SuiteProgress`, or None.
    """

    def __init__(self, labels: dict[str, str], tracker):
        self.left, self.tracker = dict(labels), tracker
        self.before = {d: _stamp(d) for d in labels}

    def __call__(self, name: str, slot: int) -> None:
        for d in [d for d in self.left if _stamp(d) not in (None, self.before[d])]:
            summary = runlog.read_json(os.path.join(d, "results.json"))
            if self.tracker is not None:
                self.tracker.finished(d, self.left[d], summary.get("train_seconds", 0.0), trained=True,
                                      accuracy=summary.get("final_test_accuracy"))
            del self.left[d]


def _stamp(rdir: str) -> tuple[int, int] | None:
    """Which ``results.json`` a run directory holds now (inode, mtime; None: none)."""
    try:
        st = os.stat(os.path.join(rdir, "results.json"))
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns
