"""Where a program's time goes: wall-clock phases (data, setup, training steps,
evaluation, checkpoints, finishing) with XLA compilation split out of whichever phase
triggered it, so the phases add up to the wall time they cover.

Compilation is measured by JAX's own monitoring events (tracing, lowering and backend
compilation durations) while a `Phases` is active; an executable loaded from the
persistent XLA cache (`bnjax.xla_cache`) counts as "cache" (its retrieval time, which
JAX's backend-compile event includes) and as a program loaded, not compiled. Nothing
here changes what is computed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping

import jax

#: The phases, in report order. "compile" and "cache" are never timed directly: they are
#: the JAX compilation time, and the time loading programs from the persistent cache,
#: that fell inside the other phases (and are subtracted from them).
PHASES = ("data", "setup", "compile", "cache", "train", "eval", "checkpoint", "finish")
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # a compile, or a cache lookup and load
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   _BACKEND_COMPILE)
_CACHE_LOAD = "/jax/compilation_cache/cache_retrieval_time_sec"  # inside _BACKEND_COMPILE, on a hit
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_DERIVED = ("compile", "cache")


class Phases:
    """Accumulates seconds per phase. Use as ``with phases.of("eval"): ...``; phases do
    not nest (each second is counted once)."""

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        #: XLA programs this breakdown saw compiled, and loaded from the persistent cache.
        self.programs = {"compiled": 0, "loaded": 0}
        self._compiled = self._loaded = 0.0
        self._active: str | None = None

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event in _COMPILE_EVENTS:
            self._compiled += duration
        if event == _BACKEND_COMPILE:
            self.programs["compiled"] += 1  # a hit is moved to "loaded" by its own event
        elif event == _CACHE_LOAD:
            self._loaded += duration

    def _count_hit(self, event: str, **kwargs) -> None:
        if event == _CACHE_HIT:
            self.programs["loaded"] += 1
            self.programs["compiled"] -= 1  # its backend-compile event follows (it wraps the load)

    @contextlib.contextmanager
    def of(self, phase: str) -> Iterator[None]:
        """Time the block as ``phase`` (its compilation as "compile", loads from the XLA
        cache as "cache")."""
        if phase not in PHASES or phase in _DERIVED:
            raise ValueError(f"unknown phase {phase!r}; choose from {[p for p in PHASES if p not in _DERIVED]}")
        if self._active:
            raise RuntimeError(f"phase {phase!r} inside phase {self._active!r}: phases do not nest")
        self._active = phase
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        jax.monitoring.register_event_listener(self._count_hit)
        t0, c0, l0 = time.perf_counter(), self._compiled, self._loaded
        try:
            yield
        finally:
            jax.monitoring.unregister_event_duration_listener(self._listen)
            jax.monitoring.unregister_event_listener(self._count_hit)
            wall, compiled, loaded = time.perf_counter() - t0, self._compiled - c0, self._loaded - l0
            self._active = None
            self.seconds[phase] += max(wall - compiled, 0.0)
            self.seconds["cache"] += min(loaded, wall)
            self.seconds["compile"] += min(max(compiled - loaded, 0.0), wall)

    def total(self) -> float:
        return float(sum(self.seconds.values()))

    def add(self, other: Mapping[str, float], programs: Mapping[str, int] | None = None) -> None:
        """Add another breakdown (a dict of phase -> seconds, and its program counts) to this one."""
        for k, v in other.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + float(v)
        for k, v in (programs or {}).items():
            self.programs[k] = self.programs.get(k, 0) + int(v)


def programs_text(programs: Mapping[str, int]) -> str:
    """``"12 XLA programs compiled, 30 loaded from the persistent cache"``."""
    return (f"{programs.get('compiled', 0)} XLA programs compiled, {programs.get('loaded', 0)} loaded from the "
            "persistent cache")


def text(seconds: Mapping[str, float], *, unit: str = "min") -> str:
    """``"training steps 12.1 min, evaluation 2.0 min, ..."`` in `PHASES` order, then any
    other entries (e.g. analysis)."""
    names = {"data": "data loading and fingerprints", "setup": "setup and restore", "compile": "compilation",
             "cache": "loading compiled programs from the XLA cache",
             "train": "training steps", "eval": "evaluation", "checkpoint": "checkpoint writes",
             "finish": "population statistics and summaries"}
    div = 60.0 if unit == "min" else 1.0
    keys = [k for k in PHASES if k in seconds] + [k for k in seconds if k not in PHASES]
    return ", ".join(f"{names.get(k, k)} {seconds[k] / div:.{2 if unit == 'min' else 1}f} {unit}" for k in keys)
