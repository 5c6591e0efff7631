"""Per-run bookkeeping of the driver (`bnjax.loop.fit`): one `RunRecord` per run of a
group holds its config, run directory, checkpoints, evaluation history, divergence and
its share of the wall time; the functions below make its evaluation records and summary.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnjax import runlog
from bnjax.checkpoint import BEST_METRIC, Checkpoints
from bnjax.config import TrainConfig
from bnjax.evaluation import evaluate, fetch, probe_percentiles, recompute_batch_stats
from bnjax.train import DATA, TrainState

PROBE_QS = (15.0, 50.0, 85.0)
PARTIAL = "partial_metrics.json"  # training metrics between the last evaluation and the last checkpoint


@dataclasses.dataclass
class RunRecord:
    """The driver's view of one run.

    ``seconds`` is this run's share of the training wall time: every interval between
    two boundaries is divided equally among the runs still training in the group, so the
    runs' times add up to the group's wall time (a run alone gets all of it).
    """

    cfg: TrainConfig
    workdir: str | None
    store: Checkpoints | None = None
    history: list[dict] = dataclasses.field(default_factory=list)
    diverged_at: int | None = None
    seconds: float = 0.0
    lock: runlog.RunLock | None = None
    best: dict | None = None  # the validation-selected evaluation: step, val_accuracy, and its variables (device)
    test_at_best: float | None = None

    @classmethod
    def open(cls, cfg: TrainConfig, workdir: str | None) -> RunRecord:
        """Lock the run directory (`bnjax.runlog.RunLock`), check or create it
        (`bnjax.runlog.prepare`) and open its checkpoints."""
        if not workdir:
            return cls(cfg, None)
        runlog.check_writable(workdir)
        lock = runlog.RunLock(workdir)
        try:
            runlog.prepare(workdir, cfg)
            store = Checkpoints(os.path.join(workdir, "checkpoints"), keep=cfg.keep_checkpoints)
        except BaseException:
            lock.release()
            raise
        return cls(cfg, workdir, store, lock=lock)

    @property
    def live(self) -> bool:
        return self.diverged_at is None

    def resume_at(self, step: int) -> dict | None:
        """Continue from ``step``: keep the metrics up to it, drop the rest. Returns the
        per-step training metrics since the last evaluation saved with that step's
        checkpoint (``{"loss", "accuracy"}`` float32 arrays), or None."""
        if not self.workdir:
            return None
        self.history = runlog.read_metrics(self.workdir, up_to_step=step) if step else []
        runlog.rewrite_metrics(self.workdir, self.history)
        vals = [r for r in self.history if "val_accuracy" in r]
        if vals:  # its variables are read back from its checkpoint at the end, if one was kept
            top = max(vals, key=lambda r: r["val_accuracy"])
            self.best = {"step": top["step"], "val_accuracy": top["val_accuracy"], "variables": None}
        self.seconds = self.history[-1].get("elapsed_s", 0.0) if self.history else 0.0
        part = self._partials().get(str(step))
        return {k: np.asarray(part[k], np.float32) for k in ("loss", "accuracy")} if step and part else None

    def _partials(self) -> dict:
        path = os.path.join(self.workdir, PARTIAL)
        return runlog.read_json(path) if os.path.exists(path) else {}

    def log(self, rec: dict) -> None:
        """Append an evaluation (or divergence) record to the history and ``metrics.jsonl``."""
        self.history.append(rec)
        if self.workdir:
            runlog.append_metrics(self.workdir, rec)

    def track_best(self, rec: dict, state: TrainState) -> None:
        """Keep the variables of the evaluation with the highest validation accuracy (the
        first maximum), so its test accuracy can be measured once, at the end, instead
        of the test split at every evaluation."""
        if "val_accuracy" in rec and (self.best is None or rec["val_accuracy"] > self.best["val_accuracy"]):
            self.best = {"step": rec["step"], "val_accuracy": rec["val_accuracy"],
                         "variables": jax.tree.map(jnp.copy, state.variables)}

    def diverge(self, at: int, step: int) -> None:
        self.diverged_at = at
        self.log({"step": step, "diverged_at": at})

    def save(self, step: int, state: TrainState, *, interrupted: bool = False, partial: dict | None = None) -> None:
        """Checkpoint ``state``, ranked by its validation accuracy when it was evaluated at this
        step and by -1 otherwise (a checkpoint between evaluations, or on Ctrl-C), so a
        state never inherits an earlier evaluation's rank. ``partial``: the per-step
        training metrics since the last evaluation, kept beside the checkpoint (exactly:
        float32 values are exact in JSON) for a resume from it."""
        if self.store is None or (interrupted and step in self.store.steps()):
            return
        if partial is not None:  # one entry per kept checkpoint
            parts = {s: v for s, v in self._partials().items() if int(s) in self.store.steps()}
            parts[str(step)] = {k: [float(v) for v in partial[k]] for k in ("loss", "accuracy")}
            runlog.write_json(os.path.join(self.workdir, PARTIAL), parts)
        last = self.history[-1] if self.history else {}
        metric = last["val_accuracy"] if last.get("step") == step and "val_accuracy" in last else -1.0
        self.store.save(step, state, {BEST_METRIC: metric})

    def wait(self) -> None:
        """Wait for pending asynchronous checkpoint writes."""
        if self.store is not None:
            self.store.wait()

    def close(self, summary: dict | None = None) -> None:
        """Release the checkpoints and the lock; with ``summary``, write ``results.json`` first."""
        if self.workdir and summary is not None:
            runlog.write_json(os.path.join(self.workdir, "results.json"), summary)
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def probe_inputs(cfg: TrainConfig, dev: dict) -> Any:
    """The test images the internal-covariate-shift probes run on (None: no probes)."""
    if not cfg.probe_examples:
        return None
    n_probe = min(cfg.probe_examples, dev["x_test"].shape[0])
    if cfg.model.norm == "ghost":  # the probe runs the normaliser in training mode: whole virtual batches
        n_probe = max(n_probe // cfg.model.virtual_batch_size, 1) * cfg.model.virtual_batch_size
    return dev["x_test"][:n_probe]


def tests_at(cfg: TrainConfig, dev: dict, step: int) -> bool:
    """Whether the evaluation after ``step`` measures the test split: with ``test_curve``,
    without a validation split (nothing else to draw), and at the end."""
    return cfg.test_curve or not dev["x_val"].shape[0] or step == cfg.steps


def evaluation_record(cfg: TrainConfig, model: Any, state: TrainState, dev: dict, probe_x: Any, step: int,
                      losses: np.ndarray, accs: np.ndarray, elapsed: float) -> dict:
    """One line of ``metrics.jsonl``: the training loss and accuracy averaged over the
    ``train_steps`` steps since the last evaluation (carried over a resume when the
    checkpoint kept them), validation loss and accuracy (when there is a split), test
    loss and accuracy where `tests_at` says so, probe percentiles (when
    ``probe_examples``). One host sync for all of them."""
    bs = cfg.data.eval_batch_size
    splits = {}
    if dev["x_val"].shape[0]:
        splits["val"] = evaluate(model, state.variables, dev["x_val"], dev["y_val"], batch_size=bs)
    if tests_at(cfg, dev, step):
        splits["test"] = evaluate(model, state.variables, dev["x_test"], dev["y_test"], batch_size=bs)
    probes = probe_percentiles(model, state.variables, probe_x, unit=cfg.probe_unit, qs=PROBE_QS) \
        if probe_x is not None else None
    out = fetch({"splits": splits, "probes": probes})
    rec = {"step": step, "train_loss": float(losses.mean()), "train_accuracy": float(accs.mean()),
           "train_steps": int(losses.size)}
    for split, m in sorted(out["splits"].items(), key=lambda kv: kv[0] != "test"):  # test first, as before
        rec[f"{split}_loss"], rec[f"{split}_accuracy"] = m["loss"], m["accuracy"]
    if probes is not None:
        rec |= {"probes": out["probes"], "probe_qs": list(PROBE_QS)}
    return {**rec, "elapsed_s": round(elapsed, 3)}


def test_at_best(rec: RunRecord, model: Any, dev: dict, template: TrainState) -> float:
    """Test accuracy of the validation-selected evaluation: read from the history when
    that evaluation measured it, else measured now on the kept variables (or on its
    checkpoint after a resume); NaN when neither is there."""
    if rec.best is None:
        return math.nan
    logged = [r["test_accuracy"] for r in rec.history if r.get("step") == rec.best["step"] and "test_accuracy" in r]
    if logged:
        return logged[0]
    variables = rec.best["variables"]
    if variables is None and rec.store is not None and rec.best["step"] in rec.store.steps():
        variables = rec.store.restore(rec.best["step"], template).variables
    if variables is None:
        return math.nan
    acc = evaluate(model, variables, dev["x_test"], dev["y_test"], batch_size=rec.cfg.data.eval_batch_size)
    return float(acc["accuracy"])


def summary(rec: RunRecord, group_size: int) -> dict:
    """``results.json`` of a run.

    ``final_test_accuracy`` follows the project's one rule: chance (1 / classes) for a
    run that diverged, else the test accuracy at the end; ``last_evaluated_*`` are the
    last evaluation's values (for a diverged run, before it diverged), ``final_step`` its
    step. ``best_step`` is the evaluation selected by validation accuracy (the first
    maximum; the final one when there is no validation split: nothing is ever selected on
    the test split), ``test_accuracy_at_best`` its test accuracy (`test_at_best`). Also
    divergence and the run's share of the training time (``train_seconds``) in a group of
    ``group_size``."""
    evals = [r for r in rec.history if "val_accuracy" in r or "test_accuracy" in r]
    last = evals[-1] if evals else {}
    nan = math.nan
    if rec.best is not None:
        best = {"step": rec.best["step"], "val_accuracy": rec.best["val_accuracy"], "test_accuracy": rec.test_at_best}
    else:
        best = {"step": last.get("step"), "test_accuracy": last.get("test_accuracy", nan)}
    chance = 1.0 / rec.cfg.model.num_classes
    return {
        "steps": rec.cfg.steps,
        "seed": rec.cfg.seed,
        "diverged_at": rec.diverged_at,
        "final_step": last.get("step", 0),
        "final_test_accuracy": chance if rec.diverged_at is not None else last.get("test_accuracy", nan),
        "last_evaluated_test_accuracy": last.get("test_accuracy", nan),
        "last_evaluated_val_accuracy": last.get("val_accuracy", nan),
        "last_evaluated_train_loss": last.get("train_loss", nan),
        "best_step": best.get("step"),
        "best_val_accuracy": best.get("val_accuracy", nan),
        "test_accuracy_at_best": best.get("test_accuracy", nan),
        "train_seconds": round(rec.seconds, 3),
        "group_size": group_size,
    }


def population_stats(cfg: TrainConfig, model: Any, state: TrainState, dev: dict) -> tuple[TrainState, float]:
    """Algorithm 2 at the end of training: the state with population statistics, and
    its test accuracy."""
    stats = recompute_batch_stats(model, state.variables, dev["x_train"], key=state.keys[DATA],
                                  batch_size=cfg.data.batch_size, num_batches=cfg.population_stats_batches)
    new = state.replace(batch_stats=stats)
    acc = evaluate(model, new.variables, dev["x_test"], dev["y_test"], batch_size=cfg.data.eval_batch_size)
    return new, float(acc["accuracy"])
