"""A run's directory describes itself: ``config.json``, ``meta.json`` (versions, git
revision, devices, CPU cores, seed), ``metrics.jsonl`` (one JSON object per evaluation),
``results.json`` (the final summary) and ``checkpoints/``.

Files are written atomically (temporary file, then rename), so an interrupted run never
leaves half a JSON file behind.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import subprocess
import time
import warnings
from typing import Any

from bnjax import config as config_lib
from bnjax import events


class RunMismatchError(RuntimeError):
    """The workdir holds a run of a different config; ``fields`` lists what differs."""

    def __init__(self, workdir: str, fields: list[str]):
        super().__init__(
            f"{workdir} holds a run with a different config (fields differ: {', '.join(fields)}); "
            "refusing to resume or overwrite it. Use another --workdir."
        )
        self.fields = fields


class RunLockedError(RuntimeError):
    """Another live process is training in this run directory."""


class RunLock:
    """An exclusive lock on a run directory (``WORKDIR/.lock``, `fcntl.flock`), held while
    a process trains there. The kernel releases it when the holder exits, however it
    exits, so a lock file left by a killed process never blocks: the next process takes it.

    `is_locked` and `wait_unlocked` look at a lock by holding it shared for an instant; a
    process taking the lock at that instant would find it busy, so a busy lock is tried
    again for up to ``grace_s`` while only lookers hold it (a trainer's exclusive hold is refused at once;
    without the grace, two jobs starting a section made each other skip runs they then
    both left untrained).

    Raises:
      RunLockedError: another live process holds it (named by pid, host and start time).
    """

    def __init__(self, workdir: str, grace_s: float = 0.5):
        import fcntl

        path = os.path.join(workdir, ".lock")
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + grace_s
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline and not is_locked(workdir):
                    time.sleep(0.005)  # only lookers hold it (shared): they let go at once
                    continue
                holder = os.read(self._fd, 500).decode(errors="replace").strip() or "unknown"
                os.close(self._fd)
                raise RunLockedError(f"{workdir} is in use by another process ({holder}); wait for it to finish "
                                     "or use another --workdir") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}"
                 .encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


class LocksUnsupportedError(RuntimeError):
    """The filesystem under a pool does not make a run lock exclude a second holder."""


def check_locks_exclude(directory: str) -> None:
    """The pool's self-test at open: two descriptors of one file in ``directory``, the
    first holding `RunLock`'s kind of lock (``fcntl.flock``), must leave the second unable
    to take it. Where the filesystem ignores flock (NFS without lock support, Lustre
    without ``-o flock``, some FUSE mounts) two processes could train one run at once.

    Raises:
      LocksUnsupportedError: naming the directory, the problem and the fix.
    """
    import fcntl

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f".lock-selftest-{platform.node()}-{os.getpid()}")
    a = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    b = os.open(path, os.O_RDWR)
    why = "a second lock on the same file was granted while the first was held"
    try:
        fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # excluded, as on a local disk
    except OSError as e:  # e.g. ENOLCK: no lock support at all
        why = f"taking a lock failed ({e.strerror or e})"
    finally:
        os.close(a)
        os.close(b)
        os.remove(path)
    raise LocksUnsupportedError(
        f"run locks do not work in {directory}: {why}. Processes sharing this pool could train the same run at "
        "once. Put the pool (--workdir) on a local disk or on a filesystem whose flock is enforced across its "
        "clients (NFS with lock support, Lustre mounted with -o flock); docs/runs.md says what the pool needs.")


def is_locked(workdir: str) -> bool:
    """Whether a live process holds the run directory's lock (`RunLock`)."""
    import fcntl

    path = os.path.join(workdir, ".lock")
    if not os.path.exists(path):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the shared lock if it was taken


def wait_unlocked(workdir: str) -> None:
    """Block until no process holds the run directory's lock (the holder finished, or
    died: the kernel releases its lock either way)."""
    import fcntl

    path = os.path.join(workdir, ".lock")
    if not os.path.exists(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


# Libraries whose version can change a run's numbers (random streams, kernels, the
# optimiser's arithmetic, the validation split drawn by scikit-learn): a run stored with
# another version of any of them is stale (`bnjax.pool`). The others are recorded and
# reported only.
NUMBER_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "scikit-learn")


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries a run uses (`NUMBER_LIBRARIES` and
    orbax-checkpoint)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in (*NUMBER_LIBRARIES, "orbax-checkpoint"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


# The modules whose code decides a run's numbers (what it trains, evaluates, records in
# its summary and restores). The others -- statistics, verdicts, plots, reports, analysis
# of finished runs, the pool, the experiment runner and run-directory I/O -- are left out:
# editing them re-renders reports but keeps every run. Every module of the package is in
# exactly one of the two sets (tests/test_pool.py checks it).
NUMBER_MODULES = ("augment", "checkpoint", "config", "conv", "data", "evaluation", "fold", "loop", "many",
                  "models", "norm", "optim", "parallel", "prng", "programs", "record", "renorm", "train")
# xla_cache: a cached program computes bitwise what a fresh compile does
OTHER_MODULES = ("__init__", "analysis", "breakdown", "download", "events", "experiment", "jobs", "lazy", "plots",
                 "pool", "power", "progress", "protocol", "ranks", "report", "runlog", "stats", "timing", "verdicts",
                 "xla_cache")


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """The version of the code that makes a run's numbers: a SHA-256 over the sources of
    the modules in `NUMBER_MODULES` (names and bytes, in name order). An edit to one of
    them changes it; edits to the analysis modules, experiments, tests or docs do not. Read
    once per process (`bnjax/__init__` asks at import), so an edit made while a process runs
    is not credited to the code it had loaded.

    The same sources give the same version however bnjax is installed (a checkout, ``pip
    install -e .``, a wheel): ``"package"`` is always ``"source"``, the value every run has
    recorded from a checkout (an installed package used to record its metadata version
    there, which made every run stale after ``pip install -e .``). `same_code` compares
    versions by their sources alone."""
    import hashlib

    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in sorted(f"{m}.py" for m in NUMBER_MODULES):
        with open(os.path.join(here, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return {"package": "source", "sources": h.hexdigest()[:16]}


def same_code(recorded, now: dict[str, str]) -> bool:
    """Whether a recorded code version (a run's ``meta.json``, maybe missing or from an
    installed package) is the sources of `code_version` ``now``."""
    return isinstance(recorded, dict) and recorded.get("sources") == now["sources"]


def git_state() -> dict:
    """``{"commit": sha or "unknown", "modified": [tracked files changed against it]}`` of
    the checkout this package lives in."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=top or here,
                            capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "modified": []}
    if rev.returncode != 0:
        return {"commit": "unknown", "modified": []}
    return {"commit": rev.stdout.strip(), "modified": sorted(line[3:] for line in st.stdout.splitlines())}


#: tracked files whose change can change a run's numbers; run records, reports and docs cannot
CODE_FILES = (".py", "requirements.txt", "pyproject.toml")


def code_changes(modified: list[str]) -> list[str]:
    """The code files among ``modified`` tracked files (`CODE_FILES`): a committed suite
    writes its own run records into tracked files, which makes the tree "dirty" without
    touching what made its numbers."""
    return [f for f in modified if f.endswith(CODE_FILES)]


def git_revision() -> str:
    """The git revision of the bnjax checkout (`git_state`), ``+dirty`` when tracked files
    are modified, or "unknown"."""
    return _revision(git_state())


def _revision(g: dict) -> str:
    return g["commit"] + ("+dirty" if g["modified"] else "") if g["commit"] != "unknown" else "unknown"


def check_writable(workdir: str) -> None:
    """Create ``workdir`` if needed and check that a file can be written there.

    Raises:
      PermissionError: naming the directory.
    """
    probe = os.path.join(workdir, f".write_test{os.getpid()}")
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"cannot write to workdir {workdir}: {e.strerror or e}") from None


def prepare(workdir: str, cfg: Any) -> None:
    """Create or check a workdir before training.

    Raises:
      PermissionError: the workdir cannot be written.
      RunMismatchError: it already holds a run of another config.
    """
    check_writable(workdir)
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        old = config_lib.from_dict(type(cfg), read_json(path))
        fields = config_lib.diff(old, cfg)
        if fields:
            raise RunMismatchError(workdir, fields)
    else:
        write_json(path, config_lib.to_dict(cfg))
    meta_path = os.path.join(workdir, "meta.json")
    if not os.path.exists(meta_path):
        write_json(meta_path, {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "seed": cfg.seed})


def begin_segment(workdir: str, *, from_step: int, **fields: Any) -> None:
    """Record in ``meta.json`` that a process trains the run from ``from_step``: a new
    entry of ``segments`` (when, from which step, versions, git revision, backend,
    devices and ``fields`` such as the code version). The top-level fields keep the
    first segment's values (what made the run's numbers from step 0); a resume never
    relabels the run."""
    import jax

    path = os.path.join(workdir, "meta.json")
    meta = read_json(path) if os.path.exists(path) else {}
    g = git_state()
    seg = {"from_step": from_step, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions(),
           "git": _revision(g), "git_code_changes": code_changes(g["modified"]), "backend": jax.default_backend(),
           "devices": [str(d) for d in jax.devices()], "cpu_cores": cpu_cores(), **fields}
    meta.setdefault("segments", []).append(seg)
    for k, v in seg.items():
        if k not in ("from_step", "started"):
            meta.setdefault(k, v)
    write_json(path, meta)


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity): the threads XLA's CPU backend
    uses, which decide the order of its sums, so a CPU run's last bits depend on it."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS)
        return os.cpu_count() or 1


def update_meta(workdir: str, **fields: Any) -> None:
    """Add fields to ``meta.json`` (e.g. the input shape, needed to rebuild the state)."""
    path = os.path.join(workdir, "meta.json")
    meta = read_json(path) if os.path.exists(path) else {}
    meta.update(fields)
    write_json(path, meta)


def append_metrics(workdir: str, record: dict) -> None:
    """Append one evaluation record to ``metrics.jsonl`` (flushed and fsynced), then to
    the run's TensorBoard event file (`bnjax.events`)."""
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    events.append(workdir, record)


def damaged_metrics(workdir: str) -> list[int]:
    """Line numbers (1-based) of ``metrics.jsonl`` lines that cannot be decoded, except a
    torn last line (one without its newline: what a killed process leaves)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.readlines()
    bad = []
    for i, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "step" not in rec:
                raise ValueError("not a metrics record")
        except ValueError:
            if not (i == len(lines) and not line.endswith("\n")):
                bad.append(i)
    return bad


def read_metrics(workdir: str, *, up_to_step: int | None = None) -> list[dict]:
    """The records of ``metrics.jsonl``, optionally only those with ``step <= up_to_step``.
    A torn last line is skipped; any other line that cannot be decoded is skipped with
    a warning naming the file and line (`damaged_metrics`)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    bad = set(damaged_metrics(workdir))
    if bad:
        warnings.warn(f"{path}: line(s) {', '.join(map(str, sorted(bad)))} are damaged and cannot be read; the "
                      "other records are used", stacklevel=2)
    out = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "step" in rec and (up_to_step is None or rec["step"] <= up_to_step):
                out.append(rec)
    return out


def rewrite_metrics(workdir: str, records: list[dict]) -> None:
    """Replace ``metrics.jsonl`` and the TensorBoard event file (used on resume to drop
    records past the checkpoint). A
    file with damaged lines is first copied to ``metrics.jsonl.damaged-<time>`` (said in a
    warning), so no record is ever dropped silently."""
    path = os.path.join(workdir, "metrics.jsonl")
    if damaged_metrics(workdir):
        keep = f"{path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
        shutil.copyfile(path, keep)
        warnings.warn(f"{path} has damaged lines: the original is kept as {keep}", stacklevel=2)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
    os.replace(tmp, path)
    events.rewrite(workdir, records)
