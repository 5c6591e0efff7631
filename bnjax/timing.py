"""Where a program's time goes: wall-clock phases (data, setup, training steps,
evaluation, checkpoints, finishing) with XLA compilation split out of whichever phase
triggered it, so the phases add up to the wall time they cover.

Compilation is measured by JAX's own monitoring events (tracing, lowering and backend
compilation durations) while a `Phases` is active; nothing here changes what is
computed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping

import jax

#: The phases, in report order. "compile" is never timed directly: it is the JAX
#: compilation time that fell inside the other phases (and is subtracted from them).
PHASES = ("data", "setup", "compile", "train", "eval", "checkpoint", "finish")
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


class Phases:
    """Accumulates seconds per phase. Use as ``with phases.of("eval"): ...``; phases do
    not nest (each second is counted once)."""

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._compiled = 0.0
        self._active: str | None = None

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event in _COMPILE_EVENTS:
            self._compiled += duration

    @contextlib.contextmanager
    def of(self, phase: str) -> Iterator[None]:
        """Time the block as ``phase`` (its compilation as "compile")."""
        if phase not in PHASES or phase == "compile":
            raise ValueError(f"unknown phase {phase!r}; choose from {[p for p in PHASES if p != 'compile']}")
        if self._active:
            raise RuntimeError(f"phase {phase!r} inside phase {self._active!r}: phases do not nest")
        self._active = phase
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        t0, c0 = time.perf_counter(), self._compiled
        try:
            yield
        finally:
            jax.monitoring.unregister_event_duration_listener(self._listen)
            wall, compiled = time.perf_counter() - t0, self._compiled - c0
            self._active = None
            self.seconds[phase] += max(wall - compiled, 0.0)
            self.seconds["compile"] += min(compiled, wall)

    def total(self) -> float:
        return float(sum(self.seconds.values()))

    def add(self, other: Mapping[str, float]) -> None:
        """Add another breakdown (a dict of phase -> seconds) to this one."""
        for k, v in other.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + float(v)


def text(seconds: Mapping[str, float], *, unit: str = "min") -> str:
    """``"training steps 12.1 min, evaluation 2.0 min, ..."`` in `PHASES` order, then any
    other entries (e.g. analysis)."""
    names = {"data": "data loading and fingerprints", "setup": "setup and restore", "compile": "compilation",
             "train": "training steps", "eval": "evaluation", "checkpoint": "checkpoint writes",
             "finish": "population statistics and summaries"}
    div = 60.0 if unit == "min" else 1.0
    keys = [k for k in PHASES if k in seconds] + [k for k in seconds if k not in PHASES]
    return ", ".join(f"{names.get(k, k)} {seconds[k] / div:.{2 if unit == 'min' else 1}f} {unit}" for k in keys)
