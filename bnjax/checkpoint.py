"""Checkpoints of the whole `TrainState` with orbax-checkpoint's CheckpointManager.

Keeps the last ``keep`` checkpoints plus the best one by a metric (test accuracy).
Saving is asynchronous; `Checkpoints.close` waits for pending saves. Restoring reads
arrays into the structure of a freshly built state (``StandardRestore`` with a target),
so nothing from the checkpoint is executed (no pickle). A latest checkpoint that cannot
be read is reported with a warning and the next older one is tried.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

log = logging.getLogger(__name__)
BEST_METRIC = "test_accuracy"


class Checkpoints:
    """A run's checkpoint directory (``WORKDIR/checkpoints``).

    Args:
      directory: where step folders live.
      keep: how many of the latest checkpoints to keep (the best is kept too).
    """

    def __init__(self, directory: str, *, keep: int = 2):
        self.directory = os.path.abspath(directory)
        policy = ocm.AnyPreservationPolicy([
            ocm.LatestN(n=keep),
            ocm.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
                      keep_checkpoints_without_metrics=False),
        ])
        # Multi-host: only process 0 keeps checkpoints (of host copies of the replicated
        # state), so the manager must not wait for the other processes.
        multi = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0}) if (
            jax.process_count() > 1) else ocp.options.MultiprocessingOptions()
        os.makedirs(self.directory, exist_ok=True)
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(preservation_policy=policy, create=False,
                                                 multiprocessing_options=multi),
        )

    def steps(self) -> list[int]:
        """Steps with a saved checkpoint, ascending."""
        return sorted(self._mngr.all_steps())

    def save(self, step: int, state: Any, metrics: dict[str, float]) -> None:
        """Save ``state`` at ``step`` asynchronously, ranked by ``metrics``."""
        if jax.process_count() > 1:
            state = jax.device_get(state)  # replicated: every process holds all of it
        self._mngr.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)

    def restore_latest(self, target: Any) -> tuple[Any, int] | None:
        """Restore the newest readable checkpoint into ``target``'s structure.

        Returns:
          ``(state, step)``, or None when no checkpoint can be read.
        """
        for step in reversed(self.steps()):
            try:
                state = self._mngr.restore(step, args=ocp.args.StandardRestore(target))
                _check_finite_structure(state, target)
                return state, step
            except Exception as e:  # orbax raises many types for unreadable files
                warnings.warn(f"checkpoint at step {step} in {self.directory} cannot be restored "
                              f"({type(e).__name__}: {str(e)[:200]}); trying an older one", stacklevel=2)
        return None

    def restore(self, step: int, target: Any) -> Any:
        """Restore the checkpoint of ``step`` into ``target``'s structure (raises if it
        cannot be read or has another structure)."""
        state = self._mngr.restore(step, args=ocp.args.StandardRestore(target))
        _check_finite_structure(state, target)
        return state

    def set_aside(self, after: int) -> list[str]:
        """Move the checkpoints of steps later than ``after`` out of the way (into
        ``checkpoints_aside/`` beside this directory; kept, never deleted), so a run that
        fell back to step ``after`` can save those steps again. Returns the new paths."""
        moved = []
        aside = os.path.join(os.path.dirname(self.directory), "checkpoints_aside")
        for step in [s for s in self.steps() if s > after]:
            os.makedirs(aside, exist_ok=True)
            dest = os.path.join(aside, f"{step}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}")
            os.replace(os.path.join(self.directory, str(step)), dest)
            moved.append(dest)
        if moved:
            self._mngr.reload()
        return moved

    def best_step(self) -> int | None:
        """Step of the best checkpoint by ``test_accuracy`` (None if unknown)."""
        return self._mngr.best_step()

    def wait(self) -> None:
        """Wait for pending asynchronous saves."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Wait for pending asynchronous saves and release the manager."""
        self._mngr.wait_until_finished()
        self._mngr.close()


def _check_finite_structure(state: Any, target: Any) -> None:
    got = jax.tree.structure(state)
    want = jax.tree.structure(target)
    if got != want:
        raise ValueError(f"restored structure {got} differs from expected {want}")
