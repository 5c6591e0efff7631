"""Checkpoints of the whole `TrainState` with orbax-checkpoint's CheckpointManager.

Keeps the last ``keep`` checkpoints plus the best one by validation accuracy.

* Saving is synchronous: a failing save (an unwritable directory, a full disk) raises a
  `CheckpointError` at once. orbax's asynchronous saving left non-daemon threads waiting
  after such a failure, so the process never exited; for bnjax's states (0.1-0.5 M
  parameters) a synchronous save costs the same (~60-110 ms measured, async included).
* Every saved array's BLAKE2b checksum is part of its step: ``<directory>/<step>/``
  `SUMS`, written right after orbax's save returns, and a step counts as saved only with
  it. Restoring verifies them; a mismatch (a flipped bit), a step without its checksums
  (a crash between the two writes) or an unreadable checksum file makes the checkpoint
  unreadable, with a message that says which.
* ``read_only=True`` (reloading for analysis) writes nothing and needs read access only.
* Restoring reads arrays into the structure of a freshly built state (``StandardRestore``
  with a target), so nothing from the checkpoint is executed (no pickle).
* `set_aside` moves checkpoints that cannot be used out of the way (kept, never deleted).
* Typed PRNG keys (``TrainState.keys``) are stored as their key data (uint32, what orbax
  can write; the same bytes a legacy ``PRNGKey`` array held, so older checkpoints restore)
  and wrapped again, with the target's implementation, on restore.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from bnjax import prng, runlog

BEST_METRIC = "val_accuracy"  # selection never looks at the test split
SUMS = "bnjax_checksums.json"  # inside each step's directory


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or read back intact."""


def multiprocessing_options(process_count: int) -> ocp.options.MultiprocessingOptions:
    """Orbax's options for ``process_count`` processes: with several (multi-host), only
    process 0 keeps checkpoints (of host copies of the replicated state), so the manager
    must not wait for the other processes; alone, orbax's defaults."""
    if process_count > 1:
        return ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
    return ocp.options.MultiprocessingOptions()


class Checkpoints:
    """A run's checkpoint directory (``WORKDIR/checkpoints``).

    Args:
      directory: where step folders live.
      keep: how many of the latest checkpoints to keep (the best is kept too).
      read_only: only read (needs read access only; nothing is created or written).
    Raises:
      CheckpointError: the directory cannot be created or written (unless read-only).
    """

    def __init__(self, directory: str, *, keep: int = 2, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        policy = ocm.AnyPreservationPolicy([
            ocm.LatestN(n=keep),
            ocm.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
                      keep_checkpoints_without_metrics=False),
        ])
        multi = multiprocessing_options(jax.process_count())
        if not read_only:
            _check_writable(self.directory)
        elif not os.path.isdir(self.directory):
            raise FileNotFoundError(f"no checkpoint directory {self.directory}")
        with _absl_errors_only(read_only):  # orbax warns that a read-only manager is read-only
            self._mngr = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(preservation_policy=policy, create=False, read_only=read_only,
                                                     enable_async_checkpointing=False, multiprocessing_options=multi),
            )

    def steps(self) -> list[int]:
        """Steps with a saved checkpoint, ascending."""
        return sorted(self._mngr.all_steps())

    def save(self, step: int, state: Any, metrics: dict[str, float]) -> None:
        """Save ``state`` at ``step``, ranked by ``metrics``, with its arrays' checksums.

        Raises:
          CheckpointError: the save failed (named, with the directory).
        """
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read-only: cannot save step {step}")
        state = jax.device_get(prng.key_data(state))  # host copies: checksummed, and saved by process 0 alone
        sums = tree_checksums(state)
        try:
            self._mngr.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
            runlog.write_json(os.path.join(self.directory, str(step), SUMS), sums)  # now the step counts as saved
        except Exception as e:  # orbax raises many types
            raise CheckpointError(f"cannot save the checkpoint of step {step} in {self.directory}: "
                                  f"{type(e).__name__}: {short_error(e)}") from None

    def restore(self, step: int, target: Any) -> Any:
        """Restore the checkpoint of ``step`` into ``target``'s structure.

        Raises:
          CheckpointError: the step has no readable checksums (it cannot be verified), or an
            array differs from the checksum recorded when it was saved.
          Exception: whatever orbax raises for a checkpoint it cannot read.
        """
        want = self._checksums(step)
        on_disk = prng.key_data(target)
        state = self._mngr.restore(step, args=ocp.args.StandardRestore(on_disk))
        _check_structure(state, on_disk)
        got = tree_checksums(state)
        bad = sorted(k for k in set(want) | set(got) if got.get(k) != want.get(k))
        if bad:
            raise CheckpointError(f"checkpoint of step {step} in {self.directory} fails its checksums "
                                  f"({len(bad)} arrays, e.g. {bad[0]}): the files changed after saving")
        return prng.rewrap(state, target)

    def restore_latest(self, target: Any) -> tuple[Any, int] | None:
        """Restore the newest readable checkpoint into ``target``'s structure (each
        unreadable newer one reported with a warning).

        Returns:
          ``(state, step)``, or None when no checkpoint can be read.
        """
        for step in reversed(self.steps()):
            try:
                return self.restore(step, target), step
            except Exception as e:  # orbax raises many types for unreadable files
                warnings.warn(f"checkpoint at step {step} in {self.directory} cannot be restored "
                              f"({type(e).__name__}: {str(e)[:200]}); trying an older one", stacklevel=2)
        return None

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

    def wait(self) -> None:
        """Wait for pending writes (none: saves are synchronous; kept for callers)."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Release the manager."""
        self._mngr.close()

    def _checksums(self, step: int) -> dict[str, str]:
        """The checksums saved with ``step``; a step without them cannot be verified."""
        path = os.path.join(self.directory, str(step), SUMS)
        if not os.path.exists(path):
            raise CheckpointError(f"checkpoint of step {step} in {self.directory} has no checksums (its save did "
                                  "not finish): it cannot be verified, so it is not used")
        try:
            return runlog.read_json(path)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint of step {step} in {self.directory}: its checksum file cannot be "
                                  f"read ({type(e).__name__}: {e}), so it cannot be verified") from None


def short_error(e: BaseException, limit: int = 300) -> str:
    """An exception's message without tensorstore's JSON spec, at most ``limit`` characters
    (the cause, e.g. "No space left on device", stays)."""
    text = str(e).split(" [tensorstore_spec=")[0]
    if "No space left on device" in str(e) and "No space left on device" not in text[:limit]:
        return "No space left on device: " + text[:limit]
    return text if len(text) <= limit else text[:limit] + " ..."


@contextlib.contextmanager
def _absl_errors_only(active: bool) -> Iterator[None]:
    """Within the block, absl logging (orbax's) shows errors only, when ``active``."""
    from absl import logging as absl_logging

    before = absl_logging.get_verbosity()
    if active:
        absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(before)


def tree_checksums(tree: Any) -> dict[str, str]:
    """``{leaf path: BLAKE2b of dtype, shape and bytes}`` for every array of a tree."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h = hashlib.blake2b(f"{a.dtype.str}{a.shape}".encode(), digest_size=16)
        h.update(a.data)
        out[jax.tree_util.keystr(path)] = h.hexdigest()
    return out


def _check_writable(directory: str) -> None:
    try:
        runlog.check_writable(directory)
    except PermissionError as e:
        raise CheckpointError(f"cannot write checkpoints: {e}") from None


def _check_structure(state: Any, target: Any) -> None:
    got = jax.tree.structure(state)
    want = jax.tree.structure(target)
    if got != want:
        raise ValueError(f"restored structure {got} differs from expected {want}")
