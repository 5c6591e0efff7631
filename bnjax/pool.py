"""A pool of runs shared between experiments, that never reuses a stale result.

A run lives in ``POOL/<config hash>/seed_S``, the hash taken over the complete resolved
config (every field, defaults included; the seed names the sub-directory). Before a run
in the pool is reused (read back when finished, resumed when not), three things stored
with it are compared with the present:

* its ``config.json`` with the complete config asked for;
* the data fingerprint in its ``meta.json`` (`bnjax.data.fingerprint`: source, shapes,
  checksum of the arrays) with that of the data loaded now;
* the code version in its ``meta.json`` (`bnjax.runlog.code_version`: package version
  and a hash of the ``bnjax/`` sources) with the running code's.

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
from bnjax import runlog
from bnjax.config import TrainConfig
from bnjax.loop import fit, load_dataset
from bnjax.programs import program_key
from bnjax.stats import Run
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


def differences(rdir: str, cfg: TrainConfig, fingerprint: dict, code: dict) -> list[str] | None:
    """What differs between the run stored in ``rdir`` and the run asked for: None when
    nothing is stored there, [] when config, data and code all match."""
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
    if meta.get("code_version") != code:
        old = meta.get("code_version")
        why.append(f"code version ({old['sources'] if isinstance(old, dict) else 'not recorded'} -> "
                   f"{code['sources']})")
    return why


def set_aside(rdir: str) -> str:
    """Move a stale run out of the pool's way (kept, never deleted); returns its new path."""
    dest = os.path.join(os.path.dirname(rdir), "stale", f"{os.path.basename(rdir)}-{time.strftime('%Y%m%dT%H%M%S')}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.replace(rdir, dest)
    return dest


@dataclasses.dataclass
class _Cell:
    arm: str
    cfg: TrainConfig
    rdir: str


def run_arms(arms: Mapping[str, TrainConfig], seeds: Sequence[int] | Mapping[str, Sequence[int]], pool: str, *,
             runs: str = "sequential",
             stale: str = "retrain", progress: bool = True, steps: int | None = None,
             timing: dict | None = None, phases: Phases | None = None) -> dict[str, list[Run]]:
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
        and fingerprints here, the rest in `bnjax.loop.fit`).
    Returns:
      arm -> list of `bnjax.stats.Run`, one per seed.
    Raises:
      StaleRunError: with ``stale="refuse"``, before any training.
    """
    if stale not in STALE_POLICIES:
        raise ValueError(f"unknown stale policy {stale!r}; choose from {STALE_POLICIES}")
    mode = resolve_runs(runs)
    per_arm = seeds if isinstance(seeds, Mapping) else {arm: seeds for arm in arms}
    cells = [_Cell(arm, c, run_dir(pool, c)) for arm, base in arms.items() for c in _seeded(base, per_arm[arm], steps)]
    phases = phases if phases is not None else Phases()
    with phases.of("data"):
        datasets = _datasets(cells)
    done, todo = _sort_out(cells, datasets, stale)
    groups: dict = {}
    for cell in todo:  # one program per group when training together, else one per run
        groups.setdefault(program_key(cell.cfg) if mode == "together" else cell.rdir, []).append(cell)
    k = len(done)
    for group in groups.values():
        ds = datasets[_data_key(group[0].cfg)]
        with phases.of("data"):
            dev = data_lib.to_device(ds)
        names = ", ".join(sorted({c.arm for c in group}))
        desc = (f"[{k + 1}-{k + len(group)}/{len(cells)}] {names}" if len(group) > 1 else
                f"[{k + 1}/{len(cells)}] {group[0].arm} seed {group[0].cfg.seed}")
        t0 = time.perf_counter()
        results = fit([c.cfg for c in group], [c.rdir for c in group], dataset=ds, device_data=dev,
                      progress=progress, desc=desc, runs=mode, phases=phases)
        if timing is not None:
            timing["train_wall_s"] = timing.get("train_wall_s", 0.0) + time.perf_counter() - t0
        for c, res in zip(group, results, strict=True):
            done[c.rdir] = Run(c.arm, c.cfg.seed, c.cfg, res.history, res.summary, c.rdir)
        k += len(group)
        del dev  # keep one data set on the device at a time
    out: dict[str, list[Run]] = {}
    for c in cells:
        out.setdefault(c.arm, []).append(done[c.rdir])
    return out


def read_runs(arms: Mapping[str, TrainConfig], seeds: Sequence[int] | Mapping[str, Sequence[int]], pool: str, *,
              steps: int | None = None) -> dict[str, list[Run]]:
    """The finished runs of every arm and seed, read from the pool's records
    (``config.json``, ``metrics.jsonl``, ``results.json``) without loading data, training
    or checking staleness: for re-rendering a report from committed run records.

    Raises:
      MissingRunsError: listing every run that has no finished record, before reading any.
    """
    per_arm = seeds if isinstance(seeds, Mapping) else {arm: seeds for arm in arms}
    cells = [_Cell(arm, c, run_dir(pool, c)) for arm, base in arms.items() for c in _seeded(base, per_arm[arm], steps)]
    missing = [f"{c.arm} seed {c.cfg.seed}: {c.rdir}" for c in cells
               if not os.path.exists(os.path.join(c.rdir, "results.json"))]
    if missing:
        raise MissingRunsError(missing)
    out: dict[str, list[Run]] = {}
    for c in cells:
        out.setdefault(c.arm, []).append(Run(c.arm, c.cfg.seed, c.cfg, runlog.read_metrics(c.rdir),
                                             runlog.read_json(os.path.join(c.rdir, "results.json")), c.rdir))
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
    d = cfg.data
    return d.source, d.data_dir, d.image_size, cfg.model.num_classes, d.val_fraction, d.val_seed


def _datasets(cells: list[_Cell]) -> dict[tuple, data_lib.Dataset]:
    out: dict[tuple, data_lib.Dataset] = {}
    for c in cells:
        if _data_key(c.cfg) not in out:
            out[_data_key(c.cfg)] = load_dataset(c.cfg)
    return out


def _sort_out(cells: list[_Cell], datasets: dict, stale: str) -> tuple[dict[str, Run], list[_Cell]]:
    """Finished matching runs (read back) and the cells still to train; stale runs are
    refused or set aside here, before any training."""
    code = runlog.code_version()
    found = {c.rdir: differences(c.rdir, c.cfg, datasets[_data_key(c.cfg)].fingerprint, code) for c in cells}
    bad = {d: why for d, why in found.items() if why}
    if bad and stale == "refuse":
        raise StaleRunError(bad)
    for d, why in bad.items():
        print(f"stale run {d} ({', '.join(why)}): moved to {set_aside(d)}, training it again", flush=True)
    done, todo = {}, []
    for c in cells:
        if c.rdir in done or any(t.rdir == c.rdir for t in todo):
            continue  # two arms with one config share the run
        if not bad.get(c.rdir) and os.path.exists(os.path.join(c.rdir, "results.json")):
            done[c.rdir] = Run(c.arm, c.cfg.seed, c.cfg, runlog.read_metrics(c.rdir),
                               runlog.read_json(os.path.join(c.rdir, "results.json")), c.rdir)
        else:
            todo.append(c)
    return done, todo
