"""The suite's runs as jobs of an existing engine: submitit, on SLURM or in its local mode.

A *job* trains one slot's share of one section: the runs of that section that no other
process sharing the pool has finished or holds (`bnjax.experiment.train_share`; the pool's
run locks decide who trains what). ``N`` slots run at once; slot k's jobs run one after
another, section after section, without waiting for the other slots, so a slot never
idles at a section's end while another still trains. The invoking process holds each
job's handle (submitit's ``Job``: ``done()``, ``result()``, ``cancel()``, the shape of a
`concurrent.futures.Future`), analyses a section once every slot's job for it is done,
and starts a new job for a slot whose job died (SIGKILL, preemption, a node lost): the
new job resumes the run the dead one held from its last checkpoint (its lock died with
it), so nothing is trained twice to completion.

Why submitit: SLURM is what university and lab clusters run, and submitit is how JAX and
PyTorch research code hands it Python functions (pickled with cloudpickle, one job
folder per job, logs and results as files); its local mode starts each job as a
separate process through the same pickling and job files, so the path tested here is the
one a cluster runs (docs/cluster.md). Ray or Dask would add a long-running scheduler to
start and keep alive; submitit adds one small pure-Python dependency.

On the CPU backend XLA sizes its thread pool from the process's cores when its backend
starts, and the thread count decides the order of its sums: a run's last bits depend on
the cores of the process that trained it (recorded as ``cpu_cores`` in its meta.json).
Locally, slot k's jobs are pinned to the k-th of ``N`` disjoint core sets (`core_sets`)
before JAX starts its backend; on SLURM each job has the cores its allocation gives.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bnjax.config import ConfigError

ENGINES = ("local", "slurm")
POLL_S = 0.1  # how often the invoking process asks whether a job is done (submitit rate-limits SLURM queries itself)
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # a local job has no scheduler limit; submitit's default would kill it at 2 minutes


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    """Where the suite's jobs run.

    Args:
      engine: ``local`` (submitit's local executor: each job a process on this machine)
        or ``slurm`` (each job a SLURM job, through submitit).
      jobs: slots, i.e. jobs running at once (locally at most one per core).
      folder: submitit's job folder (pickled functions, results, each job's log).
      partition: SLURM partition (None: the cluster's default).
      account: SLURM account to charge (None: the user's default).
      gpus_per_job: accelerators each SLURM job asks for.
      cpus_per_job: CPU cores each SLURM job asks for (None: the cluster's default).
      time_min: each SLURM job's time limit, minutes (a section's share, not the suite's;
        None: 60).
      mem_gb: memory each SLURM job asks for, GiB (None: the cluster's default).
      retries: new jobs started for a slot whose job died on one section, before the
        invoking process trains what it left itself.
    """

    engine: str = "local"
    jobs: int = 1
    folder: str = "jobs"
    partition: str | None = None
    account: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int | None = None
    time_min: int | None = None
    mem_gb: float | None = None
    retries: int = 1

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ConfigError("executor", f"engine {self.engine!r} is not one of {ENGINES}")
        if self.jobs < 1:
            raise ConfigError("executor", f"the number of jobs at once must be >= 1, got {self.jobs}")
        for name, value, least in (("gpus_per_job", self.gpus_per_job, 0), ("cpus_per_job", self.cpus_per_job, 1),
                                   ("time_min", self.time_min, 1), ("mem_gb", self.mem_gb, 0.001),
                                   ("retries", self.retries, 0)):
            if value is not None and value < least:
                raise ConfigError(f"slurm.{name}" if name != "retries" else "executor.retries",
                                  f"must be >= {least}, got {value}")
        slurm_only = [f for f in ("partition", "account", "cpus_per_job", "mem_gb", "time_min")
                      if getattr(self, f) is not None] + (["gpus_per_job"] if self.gpus_per_job else [])
        if self.engine == "local" and slurm_only:
            raise ConfigError(f"slurm.{slurm_only[0]}", "is for --executor slurm; local jobs run on this machine's "
                                                        "cores (one core set each)")


def parse_spec(text: str, n_cores: int) -> tuple[str, int]:
    """``"local:2"`` -> ("local", 2); ``"local"`` -> one job per core; ``"slurm:16"``;
    ``"slurm"`` -> 8 jobs at once.

    Raises:
      ConfigError: an unknown engine or a count that is not a positive integer.
    """
    engine, _, count = text.partition(":")
    if engine not in ENGINES:
        raise ConfigError("executor", f"{text!r}: the engine must be one of {ENGINES} (e.g. local:2, slurm:16)")
    if not count:
        return engine, n_cores if engine == "local" else 8
    if not count.isdigit() or int(count) < 1:
        raise ConfigError("executor", f"{text!r}: after the colon, the number of jobs at once (a positive integer)")
    return engine, int(count)


def cores() -> list[int]:
    """The cores this process may run on.

    Raises:
      ValueError: the platform has no CPU affinity (macOS): local jobs cannot be pinned.
    """
    if not hasattr(os, "sched_getaffinity"):
        raise ValueError("local jobs need CPU affinity (os.sched_setaffinity, Linux), which this platform lacks")
    return sorted(os.sched_getaffinity(0))


def core_sets(n: int) -> list[list[int]]:
    """The cores of ``n`` local slots: this process's cores split into ``n`` disjoint sets
    of (nearly) equal size, in order.

    Raises:
      ValueError: ``n`` < 1, more slots than cores, or no CPU affinity here.
    """
    cores_ = cores()
    if n < 1:
        raise ValueError(f"local jobs at once must be >= 1, got {n}")
    if n > len(cores_):
        raise ValueError(f"{n} local jobs at once: this process may run on {len(cores_)} core(s) ({cores_}); "
                         "a local job needs a core of its own")
    size, extra = divmod(len(cores_), n)
    starts = [k * size + min(k, extra) for k in range(n + 1)]
    return [cores_[starts[k]:starts[k + 1]] for k in range(n)]


def pin(cores_: Sequence[int]) -> None:
    """Run this process on ``cores_`` only; call before JAX starts its CPU backend (the
    backend sizes its thread pool from the affinity when it starts)."""
    os.sched_setaffinity(0, set(cores_))


def make_executor(cfg: ExecutorConfig) -> Any:
    """The submitit executor of ``cfg``: its local executor (each job a process here) or
    its SLURM executor with the requested resources.

    Raises:
      ConfigError: ``slurm`` where this machine cannot submit to SLURM (no ``sbatch`` or
        ``srun``).
    """
    import shutil

    import submitit

    if cfg.engine == "local":
        os.makedirs(cfg.folder, exist_ok=True)
        ex = submitit.LocalExecutor(folder=cfg.folder)
        ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
        return ex
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if missing:
        raise ConfigError("executor", f"slurm: no {' or '.join(missing)} on this machine's PATH; submit from a "
                                      "SLURM login node (or use --executor local:N here)")
    os.makedirs(cfg.folder, exist_ok=True)
    ex = submitit.SlurmExecutor(folder=cfg.folder)
    params: dict[str, Any] = {"time": cfg.time_min or 60, "job_name": "bnjax", "ntasks_per_node": 1}
    mem = f"{math.ceil(cfg.mem_gb * 1024)}M" if cfg.mem_gb else None  # sbatch takes whole units
    for key, value in (("partition", cfg.partition), ("account", cfg.account),
                       ("gpus_per_node", cfg.gpus_per_job or None), ("cpus_per_task", cfg.cpus_per_job), ("mem", mem)):
        if value is not None:
            params[key] = value
    ex.update_parameters(**params)
    return ex


class LocalJob:
    """A submitit local job whose ``result()`` does not wait for a result that cannot come.

    submitit's ``result()`` waits up to 15 s for a finished job's result file (a cluster's
    shared filesystem may show it late). A local job's process writes that file before it
    exits, on this machine's filesystem: once the process has ended without it (SIGKILL,
    the OOM killer), it never comes, and the job is reported dead at once.
    """

    def __init__(self, job: Any):
        self.job = job

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def done(self) -> bool:
        return self.job.done()

    def cancel(self, check: bool = True) -> None:
        self.job.cancel(check=check)

    def result(self) -> Any:
        from submitit.core.utils import UncompletedJobError

        if self.job.done() and not self.job.paths.result_pickle.exists():
            raise UncompletedJobError(f"job {self.job.job_id} ended without writing its result "
                                      f"(state: {self.job.state})")
        return self.job.result()


def submit(executor: Any, engine: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``executor.submit(fn, *args)``; a local job wrapped in `LocalJob`."""
    job = executor.submit(fn, *args)
    return LocalJob(job) if engine == "local" else job


@dataclasses.dataclass
class _Running:
    name: str
    slot: int
    attempt: int
    job: Any


class Slots:
    """``n`` slots working through ``names`` (sections), each slot's jobs one after another.

    Args:
      submit: ``submit(name, slot) -> job`` starts slot ``slot``'s job for section ``name``
        (a submitit ``Job``; anything with ``done()``, ``result()``, ``cancel()`` and
        ``job_id`` does).
      names: the sections, in order.
      n: slots.
      retries: new jobs per (section, slot) after a job dies, before giving up on it.
      warn: where warnings go (a failed job, its log).
    """

    def __init__(self, submit: Callable[[str, int], Any], names: Sequence[str], n: int, *, retries: int = 1,
                 warn: Callable[[str], None] | None = None):
        self._submit, self.names, self.n, self.retries = submit, list(names), n, retries
        self._warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
        self.summaries: list[dict] = [{"slot": k, "sections": {}} for k in range(n)]
        self.failed: list[dict] = []  # every job that died or raised: section, slot, attempt, job id, error
        self.running: list[_Running] = []
        for k in range(n):
            self._start(self.names[0], k, 0)

    def _start(self, name: str, slot: int, attempt: int) -> None:
        self.running.append(_Running(name, slot, attempt, self._submit(name, slot)))

    def wait_for(self, name: str, on_done: Callable[[str, int], None] | None = None) -> float:
        """Block until every slot's job for section ``name`` has ended (done, or died past
        its retries), starting each slot's next job as its last one ends; ``on_done(name,
        slot)`` after each job ends. Returns the seconds waited."""
        t0 = time.perf_counter()
        while any(name not in s["sections"] for s in self.summaries):
            ended = [r for r in self.running if r.job.done()]
            for r in ended:
                self.running.remove(r)
                self._collect(r)
                if on_done is not None:
                    on_done(r.name, r.slot)
            if not ended:
                time.sleep(POLL_S)
        return time.perf_counter() - t0

    def _collect(self, r: _Running) -> None:
        try:
            summary = r.job.result()
        except Exception as e:  # the engine's error: the job died (UncompletedJobError) or raised (FailedJobError)
            error = str(e).strip().splitlines()
            self.failed.append({"section": r.name, "slot": r.slot, "attempt": r.attempt, "job": str(r.job.job_id),
                                "error": error[-1] if error else type(e).__name__})
            if r.attempt < self.retries:
                self._warn(f"job {r.job.job_id} (section {r.name}, slot {r.slot}) ended without a result "
                           f"({type(e).__name__}); a new job resumes its runs from their checkpoints")
                self._start(r.name, r.slot, r.attempt + 1)
                return
            self._warn(f"job {r.job.job_id} (section {r.name}, slot {r.slot}) ended without a result "
                       f"{r.attempt + 1} time(s); this process trains the runs it left")
            summary = {"trained": 0, "seconds": 0.0, "time_s": {}, "programs": {}, "failed": True}
        self.summaries[r.slot]["sections"][r.name] = {**summary, "attempts": r.attempt + 1}
        later = self.names.index(r.name) + 1
        if later < len(self.names):
            self._start(self.names[later], r.slot, 0)

    def cancel(self) -> None:
        """Ask every running job to stop (each saves its running run's checkpoint)."""
        for r in self.running:
            r.job.cancel(check=False)
        self.running = []
