"""A pool of runs shared between experiments, that never reuses a stale result.

A run lives in ``POOL/<config hash>/seed_S``, the hash taken over the complete resolved
config (every field, defaults included; the seed names the sub-directory). Before a run
in the pool is reused (read back when finished, resumed when not), three things stored
with it are compared with the present:

* its ``config.json`` with the complete config asked for;
* the data fingerprint in its ``meta.json`` (`bnjax.data.fingerprint`: source, shapes,
  checksum of the arrays) with that of the data loaded now;
* the code version in its ``meta.json`` (`bnjax.runlog.code_version`: package version
  and a hash of the modules that decide a run's numbers) with the running code's;
* the versions of the libraries that can change its numbers
  (`bnjax.runlog.NUMBER_LIBRARIES`: jax, jaxlib, flax, optax, numpy, scikit-learn), the
  backend (cpu, gpu, tpu) and the checksum of the validation split's indices. Python's
  and orbax-checkpoint's versions and the devices are recorded and reported only.

On any difference, ``stale="retrain"`` moves the old run aside (to
``POOL/<hash>/stale/seed_S-<time>``, never deleted), says so in one line and trains the
run again; ``stale="refuse"`` raises `StaleRunError` naming what differs, before any
training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence

from bnjax import config as config_lib
from bnjax import data as data_lib
from bnjax import events, runlog
from bnjax.config import TrainConfig
from bnjax.loop import dataset_args, fit_group, load_dataset
from bnjax.programs import program_key
from bnjax.stats import Run
from bnjax.progress import SuiteProgress
from bnjax.timing import Phases

RUNS_MODES = ("auto", "together", "sequential")
STALE_POLICIES = ("retrain", "refuse")


class MissingRunsError(RuntimeError):
    """Runs an analysis needs are not in the pool (re-rendering a report without
    training); ``missing`` lists each as ``"arm seed S: run directory"``."""

    def __init__(self, missing: Sequence[str]):
        super().__init__(f"{len(missing)} run(s) are missing from the pool, so the report cannot be re-rendered "
                         "without training:\n" + "\n".join(f"  {m}" for m in missing))
        self.missing = list(missing)


class StaleRunError(RuntimeError):
    """Runs in the pool were made with another config, data or code; ``stale`` maps each
    run directory to what differs."""

    def __init__(self, stale: Mapping[str, list[str]]):
        lines = [f"  {d}: {', '.join(why)}" for d, why in stale.items()]
        super().__init__(f"{len(stale)} run(s) in the pool differ from what is asked now (rerun with "
                         "--stale retrain to set them aside and train again):\n" + "\n".join(lines))
        self.stale = dict(stale)


def config_hash(cfg: TrainConfig) -> str:
    """A short hash of the complete config, every field included, the seed excluded."""
    d = config_lib.to_dict(dataclasses.replace(cfg, seed=0))
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def run_dir(pool: str, cfg: TrainConfig) -> str:
    """Where the run of ``cfg`` lives inside a run pool."""
    return os.path.join(pool, config_hash(cfg), f"seed_{cfg.seed}")


def resolve_runs(mode: str) -> str:
    """"together" or "sequential" for a ``--runs`` mode: "auto" is together on GPU/TPU and
    sequential on CPU, where one run already keeps the cores busy
    (experiments/bench/RESULTS.md)."""
    if mode not in RUNS_MODES:
        raise ValueError(f"unknown runs mode {mode!r}; choose from {RUNS_MODES}")
    if mode != "auto":
        return mode
    import jax

    return "together" if jax.default_backend() != "cpu" else "sequential"


def differences(rdir: str, cfg: TrainConfig, fingerprint: dict, code: dict, now: dict | None = None,
                split: dict | None = None) -> list[str] | None:
    """What differs between the run stored in ``rdir`` and the run asked for: None when
    nothing is stored there, [] when config, data, code, libraries and backend all match.

    Args:
      now: ``{"versions": runlog.versions(), "backend": ...}`` of this process (None: not
        compared).
      split: the validation split's description (`bnjax.data.validation_split`).
    """
    cfg_path, meta_path = os.path.join(rdir, "config.json"), os.path.join(rdir, "meta.json")
    if not os.path.exists(cfg_path):
        return None
    try:
        fields = config_lib.diff(config_lib.from_dict(TrainConfig, runlog.read_json(cfg_path)), cfg)
        why = [f"config ({', '.join(fields)})"] if fields else []
    except (ValueError, OSError) as e:
        why = [f"config (unreadable: {e})"]
    meta = runlog.read_json(meta_path) if os.path.exists(meta_path) else {}
    if meta.get("data_fingerprint") != fingerprint:
        why.append("data fingerprint" + ("" if "data_fingerprint" in meta else " (not recorded)"))
    if not runlog.same_code(meta.get("code_version"), code):
        old = meta.get("code_version")
        why.append(f"code version (sources of bnjax's number modules "
                   f"{old.get('sources') if isinstance(old, dict) else 'not recorded'} -> {code['sources']})")
    if now is not None:
        had = meta.get("versions", {})
        why += [f"{lib} {had.get(lib, 'not recorded')} -> {now['versions'][lib]}" for lib in runlog.NUMBER_LIBRARIES
                if had.get(lib) != now["versions"][lib]]
        if meta.get("backend") != now["backend"]:
            why.append(f"backend {meta.get('backend', 'not recorded')} -> {now['backend']}")
    key = "val_indices_checksum"
    if split is not None and meta.get("split", {}).get(key) != split.get(key):
        why.append("validation split (its indices differ)")
    return why


def set_aside(rdir: str) -> str:
    """Move a stale run out of the pool's way (kept, never deleted), holding its lock so
    a process still training there is never pulled from under; returns its new path.

    Raises:
      bnjax.runlog.RunLockedError: another process holds the run.
    """
    dest = os.path.join(os.path.dirname(rdir), "stale", f"{os.path.basename(rdir)}-{time.strftime('%Y%m%dT%H%M%S')}")
    lock = runlog.RunLock(rdir)
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(rdir, dest)
    finally:
        lock.release()
    return dest


@dataclasses.dataclass
class _Cell:
    arm: str
    cfg: TrainConfig
    rdir: str
    view: str | None = None  # its TensorBoard folder in the experiment's view


def run_arms(arms: Mapping[str, TrainConfig], seeds: Sequence[int] | Mapping[str, Sequence[int]], pool: str, *,
             runs: str = "sequential",
             stale: str = "retrain", progress: bool = True, steps: int | None = None,
             timing: dict | None = None, phases: Phases | None = None,
             tracker: SuiteProgress | None = None, view: str | None = None) -> dict[str, list[Run]]:
    """Train every arm with every seed in the pool; finished runs that match are read back.

    Args:
      arms: arm name -> config (its ``seed`` is replaced by each of ``seeds``).
      seeds: the seeds, or arm name -> its seeds.
      pool: directory of runs, shared between experiments.
      runs: "together" (runs whose configs differ only along `bnjax.programs.RUN_AXES`
        train in one compiled program), "sequential" (one after another) or "auto"
        (`resolve_runs`); recorded in each run's meta.json.
      stale: "retrain" or "refuse", for runs stored with another config, data or code.
      progress: show progress bars.
      steps: if given, every arm runs this many steps (smoke tests, short trials).
      timing: if given, ``timing["train_wall_s"]`` is increased by the wall time of the
        training calls (to check the runs' recorded times against).
      phases: a `bnjax.timing.Phases` that accumulates where the time goes (data loading
        and fingerprints here, the rest in `bnjax.loop.fit_group`).
      tracker: the invocation's `bnjax.progress.SuiteProgress`, told of each finished run.
      view: if given, the experiment's TensorBoard folder: runs trained now write their
        events into ``VIEW/<arm>/seed_<k>`` (`bnjax.events`), runs read back get a copy
        there.
    Returns:
      arm -> list of `bnjax.stats.Run`, one per seed.
    Raises:
      StaleRunError: with ``stale="refuse"``, before any training.
    """
    phases = phases if phases is not None else Phases()
    cells, datasets, done, queue, mode = _prepare(arms, seeds, pool, runs, stale, steps, view, phases)
    for c in cells:
        if c.rdir in done and tracker is not None:
            tracker.finished(c.rdir, _label(c), 0.0, trained=False)
    _work_through(queue, _n_runs(cells), datasets, done, progress, mode, timing, phases, tracker)
    _write_views(cells, done)
    return _by_arm(cells, done)


def train_unheld(arms: Mapping[str, TrainConfig], seeds: Sequence[int] | Mapping[str, Sequence[int]], pool: str, *,
                 runs: str = "sequential", stale: str = "retrain", progress: bool = False, steps: int | None = None,
                 phases: Phases | None = None, view: str | None = None, start: float = 0.0) -> int:
    """Train the runs of `run_arms` that no other process has finished or holds, and
    never wait: a worker's share of an experiment that several processes train through
    one pool (the pool's locks decide who trains what; whoever analyses calls `run_arms`
    afterwards, which waits for the held runs and reads everything back).

    Args:
      start: where in the queue (a fraction, cyclic) this process begins. Runs of one
        program are queued together, so workers that start at k / N of it train (and
        compile) different programs instead of compiling the same one at once; which
        process trains a run never changes its numbers.
    Returns:
      How many runs this process trained.
    """
    if not 0.0 <= start < 1.0:
        raise ValueError(f"start must be in [0, 1), got {start}")
    phases = phases if phases is not None else Phases()
    cells, datasets, done, queue, mode = _prepare(arms, seeds, pool, runs, stale, steps, view, phases)
    i = int(len(queue) * start)
    return _work_through(queue[i:] + queue[:i], _n_runs(cells), datasets, done, progress, mode, None, phases, None,
                         wait=False)


def _prepare(arms, seeds, pool: str, runs: str, stale: str, steps: int | None, view: str | None,
             phases: Phases) -> tuple[list[_Cell], dict, dict[str, Run], list[list[_Cell]], str]:
    """The cells, their data, the finished runs read back and the queue of groups to train."""
    if stale not in STALE_POLICIES:
        raise ValueError(f"unknown stale policy {stale!r}; choose from {STALE_POLICIES}")
    mode = resolve_runs(runs)
    runlog.check_locks_exclude(pool)
    cells = _cells(arms, seeds, pool, steps, view)
    with phases.of("data"):
        datasets = _datasets(cells)
    done, todo = _sort_out(cells, datasets, stale)
    groups: dict = {}
    for cell in todo:  # one program per group when training together, else one per run
        groups.setdefault(program_key(cell.cfg) if mode == "together" else cell.rdir, []).append(cell)
    return cells, datasets, done, list(groups.values()), mode


def _write_views(cells: list[_Cell], runs: Mapping[str, Run]) -> None:
    """A copy of each run's events in its view folder, unless it wrote them there itself."""
    for c in cells:
        if c.view and (os.path.abspath(events.logdir_of(c.rdir)) != os.path.abspath(c.view)
                       or not os.path.exists(os.path.join(c.view, events.EVENT_FILE))):
            events.rewrite(c.rdir, runs[c.rdir].history, logdir=c.view)


def _work_through(queue: list[list[_Cell]], n: int, datasets: dict, done: dict, progress: bool, mode: str,
                  timing: dict | None, phases: Phases, tracker: SuiteProgress | None, *, wait: bool = True) -> int:
    """Train the queued groups into ``done``; returns how many runs this process trained
    (the others were finished by another process meanwhile, and read back). A group
    another process holds is done last: waited for (its seconds added to
    ``timing["wait_s"]``), then read back (or trained, if its holder died before
    finishing); with ``wait=False`` it is left to its holder."""
    k, n_trained = len(done), 0
    while queue:
        group = queue.pop(0)
        held = any(runlog.is_locked(c.rdir) for c in group)
        if held and (queue or not wait):
            if wait:
                queue.append(group)  # train the rest first
            continue
        if held:
            print(f"waiting for {len(group)} run(s) another process is training ({group[0].rdir} ...)", flush=True)
            t0 = time.perf_counter()
            for c in group:
                runlog.wait_unlocked(c.rdir)
            if timing is not None:
                timing["wait_s"] = timing.get("wait_s", 0.0) + time.perf_counter() - t0
        if all(os.path.exists(os.path.join(c.rdir, "results.json")) for c in group):
            done.update({c.rdir: _read(c) for c in group})  # the other process finished them
            trained = False
        elif _train_group(group, datasets, done, f"[{k + 1}/{n}]", progress, mode, timing, phases):
            trained, n_trained = True, n_trained + len(group)
        else:
            if wait:
                queue.append(group)  # taken by another process meanwhile
            continue
        for c in group if tracker is not None else ():
            s = done[c.rdir].summary
            tracker.finished(c.rdir, _label(c), s.get("train_seconds", 0.0), trained=trained,
                             accuracy=s.get("final_test_accuracy"))
        k += len(group)
    return n_trained


def _train_group(group: list[_Cell], datasets: dict, done: dict, count: str, progress: bool, mode: str,
                 timing: dict | None, phases: Phases) -> bool:
    """Train one group's runs into ``done``; False when another process holds one of them."""
    ds = datasets[_data_key(group[0].cfg)]
    with phases.of("data"):
        dev = data_lib.to_device(ds)
    names = ", ".join(sorted({c.arm for c in group}))
    desc = f"{count} {names}" + (f" ({len(group)} runs)" if len(group) > 1 else f" seed {group[0].cfg.seed}")
    for c in group if group[0].view else ():
        events.point(c.rdir, c.view)
    t0 = time.perf_counter()
    try:
        results = fit_group([c.cfg for c in group], [c.rdir for c in group], dataset=ds, device_data=dev,
                      progress=progress, desc=desc, runs=mode, phases=phases)
    except runlog.RunLockedError:
        return False
    if timing is not None:
        timing["train_wall_s"] = timing.get("train_wall_s", 0.0) + time.perf_counter() - t0
    for c, res in zip(group, results, strict=True):
        done[c.rdir] = Run(c.arm, c.cfg.seed, c.cfg, res.history, res.summary, c.rdir)
    return True


def run_dirs(arms: Mapping[str, TrainConfig], seeds: Sequence[int] | Mapping[str, Sequence[int]], pool: str, *,
             steps: int | None = None) -> list[str]:
    """The run directories of every arm and seed (runs shared by two arms once)."""
    return sorted(run_labels(arms, seeds, pool, steps=steps))


def run_labels(arms: Mapping[str, TrainConfig], seeds: Sequence[int] | Mapping[str, Sequence[int]], pool: str, *,
               steps: int | None = None) -> dict[str, str]:
    """Run directory -> ``"ARM seed S"`` for every arm and seed (a shared run under its
    first arm)."""
    out: dict[str, str] = {}
    for c in _cells(arms, seeds, pool, steps):
        out.setdefault(c.rdir, _label(c))
    return out


def _cells(arms: Mapping[str, TrainConfig], seeds: Sequence[int] | Mapping[str, Sequence[int]], pool: str,
           steps: int | None, view: str | None = None) -> list[_Cell]:
    per_arm = seeds if isinstance(seeds, Mapping) else {arm: seeds for arm in arms}
    return [_Cell(arm, c, run_dir(pool, c), events.view_dir(view, arm, c.seed) if view else None)
            for arm, base in arms.items() for c in _seeded(base, per_arm[arm], steps)]


def _n_runs(cells: list[_Cell]) -> int:
    """How many runs the cells name (a run two arms share counted once): the N of "[k/N]"."""
    return len({c.rdir for c in cells})


def _label(c: _Cell) -> str:
    return f"{c.arm} seed {c.cfg.seed}"


def _read(c: _Cell) -> Run:
    return Run(c.arm, c.cfg.seed, c.cfg, runlog.read_metrics(c.rdir),
               runlog.read_json(os.path.join(c.rdir, "results.json")), c.rdir)


def read_runs(arms: Mapping[str, TrainConfig], seeds: Sequence[int] | Mapping[str, Sequence[int]], pool: str, *,
              steps: int | None = None, view: str | None = None) -> dict[str, list[Run]]:
    """The finished runs of every arm and seed, read from the pool's records
    (``config.json``, ``metrics.jsonl``, ``results.json``) without loading data, training
    or checking staleness: for re-rendering a report from committed run records (and,
    with ``view``, writing their TensorBoard view as `run_arms` does).

    Raises:
      MissingRunsError: listing every run that has no finished record, before reading any.
    """
    cells = _cells(arms, seeds, pool, steps, view)
    missing = [f"{c.arm} seed {c.cfg.seed}: {c.rdir}" for c in cells
               if not os.path.exists(os.path.join(c.rdir, "results.json"))]
    if missing:
        raise MissingRunsError(missing)
    runs = {c.rdir: _read(c) for c in cells}
    _write_views(cells, runs)
    return _by_arm(cells, runs)


def _by_arm(cells: list[_Cell], runs: Mapping[str, Run]) -> dict[str, list[Run]]:
    """Arm -> its runs in seed order; a run two arms share appears under each arm's name."""
    out: dict[str, list[Run]] = {}
    for c in cells:
        run = runs[c.rdir]
        out.setdefault(c.arm, []).append(run if run.arm == c.arm else dataclasses.replace(run, arm=c.arm))
    return out


def _seeded(base: TrainConfig, seeds: Sequence[int], steps: int | None) -> list[TrainConfig]:
    out = []
    for seed in seeds:
        cfg = dataclasses.replace(base, seed=seed)
        if steps is not None:
            cfg = dataclasses.replace(cfg, steps=steps, eval_every=min(cfg.eval_every, steps),
                                      checkpoint_every=min(cfg.checkpoint_every, steps))
        out.append(cfg)
    return out


def _data_key(cfg: TrainConfig) -> tuple:
    return tuple(sorted(dataset_args(cfg).items()))


def _datasets(cells: list[_Cell]) -> dict[tuple, data_lib.Dataset]:
    out: dict[tuple, data_lib.Dataset] = {}
    for c in cells:
        if _data_key(c.cfg) not in out:
            out[_data_key(c.cfg)] = load_dataset(c.cfg)
    return out


def stale_runs(arms: Mapping[str, TrainConfig], seeds: Sequence[int] | Mapping[str, Sequence[int]], pool: str, *,
               steps: int | None = None) -> dict[str, list[str]]:
    """The stored runs of these arms that differ from what is asked now (`differences`),
    run directory -> what differs; nothing is trained or moved. An invocation of several
    experiments asks this for all of them before the first trains (``--stale refuse``)."""
    cells = _cells(arms, seeds, pool, steps)
    return _stale(cells, _datasets(cells))


def _stale(cells: list[_Cell], datasets: dict) -> dict[str, list[str]]:
    import jax

    code, now = runlog.code_version(), {"versions": runlog.versions(), "backend": jax.default_backend()}
    found = {c.rdir: differences(c.rdir, c.cfg, datasets[_data_key(c.cfg)].fingerprint, code, now,
                                 datasets[_data_key(c.cfg)].split)
             for c in cells if not runlog.is_locked(c.rdir)}  # a held run is another process's: waited for later
    return {d: why for d, why in found.items() if why}


def _sort_out(cells: list[_Cell], datasets: dict, stale: str) -> tuple[dict[str, Run], list[_Cell]]:
    """Finished matching runs (read back) and the cells still to train; stale runs are
    refused or set aside here, before any training."""
    bad = _stale(cells, datasets)
    if bad and stale == "refuse":
        raise StaleRunError(bad)
    for d, why in bad.items():
        try:
            print(f"stale run {d} ({', '.join(why)}): moved to {set_aside(d)}, training it again", flush=True)
        except (runlog.RunLockedError, FileNotFoundError):
            pass  # another process sharing the pool set it aside first, and trains it
    done, todo = {}, []
    for c in cells:
        if c.rdir in done or any(t.rdir == c.rdir for t in todo):
            continue  # two arms with one config share the run
        if not bad.get(c.rdir) and os.path.exists(os.path.join(c.rdir, "results.json")):
            done[c.rdir] = _read(c)
        else:
            todo.append(c)
    return done, todo
