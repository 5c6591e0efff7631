"""Worker processes for ``experiments.reproduce --workers N`` on a CPU backend.

On two CPU cores one process training one run at a time leaves throughput behind: the
small ops of these models do not split well over two threads, and evaluation and host
work in between leave cores idle. N worker processes, each pinned to its own share of
the cores (one core each on two cores), train the suite's runs through the one pool
(`bnjax.experiment.train_share`: the pool's run locks decide who trains what), section
after section, without waiting for one another; the invoking process waits until every
worker is past a section (`Workers.wait_for`), then reads the section's runs back,
analyses them and renders its report part (`bnjax.experiment.run_experiment`, which also
trains any run a worker that died left unfinished). Measured in docs/speed.md.

XLA's CPU backend uses as many threads as the process has cores, and the thread count
decides the order of its sums: a run trained on one core differs in the last bits from
the same run trained on two (`bnjax.runlog.cpu_cores` is recorded in each run's
meta.json and the report says it). The invoking process is pinned like the first worker,
so a run it trains itself is made the same way.

A worker writes ``WORKDIR/workers/worker_K.json`` (its cores and, per section finished,
the runs it trained and where its time went) and logs to ``worker_K.log`` beside it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from bnjax import runlog

DIR = "workers"
POLL_S = 0.5


def cores() -> list[int]:
    """The cores this process may run on.

    Raises:
      ValueError: the platform has no CPU affinity (macOS): workers cannot be pinned.
    """
    if not hasattr(os, "sched_getaffinity"):
        raise ValueError("--workers needs CPU affinity (os.sched_setaffinity, Linux), which this platform lacks")
    return sorted(os.sched_getaffinity(0))


def core_sets(n: int) -> list[list[int]]:
    """The cores of ``n`` workers: this process's cores split into ``n`` disjoint sets of
    (nearly) equal size, in order.

    Raises:
      ValueError: ``n`` < 1, more workers than cores, or no CPU affinity here.
    """
    cores_ = cores()
    if n < 1:
        raise ValueError(f"--workers must be >= 1, got {n}")
    if n > len(cores_):
        raise ValueError(f"--workers {n}: this process may run on {len(cores_)} core(s) ({cores_}); "
                         "a worker needs a core of its own")
    size, extra = divmod(len(cores_), n)
    starts = [k * size + min(k, extra) for k in range(n + 1)]
    return [cores_[starts[k]:starts[k + 1]] for k in range(n)]


def pin(cores: Sequence[int]) -> None:
    """Run this process on ``cores`` only; call before JAX starts its CPU backend (the
    backend sizes its thread pool from the affinity when it starts)."""
    os.sched_setaffinity(0, set(cores))


def parse_worker(value: str) -> tuple[int, int, list[int]]:
    """``"K/N@C1,C2"`` (the hidden ``--worker`` flag: worker K of N) -> (K, N, [C1, C2])."""
    kn, _, cores = value.partition("@")
    k, _, n = kn.partition("/")
    return int(k), int(n), [int(c) for c in cores.split(",")]


def status_path(workdir: str, k: int) -> str:
    return os.path.join(workdir, DIR, f"worker_{k}.json")


def log_path(workdir: str, k: int) -> str:
    return os.path.join(workdir, DIR, f"worker_{k}.log")


class Workers:
    """The worker processes of one invocation.

    Args:
      argv: the invocation's arguments (without ``--workers``); each worker runs
        ``python -m experiments.reproduce ARGV --quiet --worker K@CORES``.
      workdir: the suite's output directory.
      sets: each worker's cores (`core_sets`).
    """

    def __init__(self, argv: Sequence[str], workdir: str, sets: Sequence[Sequence[int]]):
        self.workdir, self.sets = workdir, [list(s) for s in sets]
        os.makedirs(os.path.join(workdir, DIR), exist_ok=True)
        for k in range(len(sets)):  # a previous invocation's status must not count as this one's
            if os.path.exists(status_path(workdir, k)):
                os.remove(status_path(workdir, k))
        self.procs = []
        for k, cores in enumerate(self.sets):
            with open(log_path(workdir, k), "w") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "experiments.reproduce", *argv, *([] if "--quiet" in argv else ["--quiet"]),
                     "--worker", f"{k}/{len(sets)}@{','.join(map(str, cores))}"], stdout=log, stderr=subprocess.STDOUT))
        self._warned: set[int] = set()

    def status(self, k: int) -> dict:
        path = status_path(self.workdir, k)
        return runlog.read_json(path) if os.path.exists(path) else {"sections": {}}

    def wait_for(self, section: str, pending: Mapping[str, str] | None = None,
                 finished: Callable[[str, str, dict], None] | None = None) -> float:
        """Block until every worker has finished its share of ``section`` (or exited),
        telling ``finished(run_dir, label, summary)`` of each run of ``pending`` (run
        directory -> label) as a worker finishes it (a summary already there, finished
        before or stale, is not counted: the reading back after tells of it). Returns
        the seconds waited."""
        t0, left = time.perf_counter(), dict(pending or {})
        before = {d: _stamp(d) for d in left}
        while True:
            for d in [d for d in left if _stamp(d) not in (None, before[d])]:
                if finished is not None:
                    finished(d, left[d], runlog.read_json(os.path.join(d, "results.json")))
                del left[d]
            if all(self._past(k, section) for k in range(len(self.procs))):
                return time.perf_counter() - t0
            time.sleep(POLL_S)

    def _past(self, k: int, section: str) -> bool:
        if section in self.status(k)["sections"]:
            return True
        rc = self.procs[k].poll()
        if rc is None:
            return False
        if rc != 0 and k not in self._warned:
            self._warned.add(k)
            print(f"warning: worker {k} exited with status {rc} (log: {log_path(self.workdir, k)}); the runs it "
                  "left are trained by this process", file=sys.stderr, flush=True)
        return True

    def close(self, *, interrupt: bool = False) -> list[int | None]:
        """Wait for the workers to exit (after Ctrl-C or an error here, ``interrupt``
        first asks them to stop: each saves its running run's checkpoint). Returns their
        exit statuses."""
        if interrupt:  # a Ctrl-C in the terminal reached them too: give them time to save first
            deadline = time.perf_counter() + 5.0
            while time.perf_counter() < deadline and any(p.poll() is None for p in self.procs):
                time.sleep(0.1)
            for p in self.procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
        return [p.wait() for p in self.procs]

    def summaries(self) -> list[dict]:
        """Each worker's status: its cores and, per section, the runs it trained and
        where its time went."""
        return [{"worker": k, "cores": self.sets[k], **self.status(k)} for k in range(len(self.procs))]


def _stamp(rdir: str) -> tuple[int, int] | None:
    """Which ``results.json`` a run directory holds now (inode, mtime; None: none)."""
    try:
        st = os.stat(os.path.join(rdir, "results.json"))
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def run_worker(k: int, names: Sequence[str], train: Callable[[str], tuple[int, dict, dict]], workdir: str) -> None:
    """A worker's whole life: for each section, ``train(name) -> (runs trained, seconds
    per phase, XLA programs compiled / loaded)``, then its status written (the invoking
    process waits on it)."""
    status = {"pid": os.getpid(), "cores": cores(), "sections": {}}
    for name in names:
        t0 = time.perf_counter()
        n, seconds, programs = train(name)
        status["sections"][name] = {"trained": n, "seconds": time.perf_counter() - t0, "time_s": seconds,
                                    "programs": programs}
        runlog.write_json(status_path(workdir, k), status)
        print(f"worker {k}: {name}: trained {n} run(s) in {status['sections'][name]['seconds']:.0f} s", flush=True)
