"""Progress of a whole invocation (a suite of experiments, or one experiment): one bar for
all its runs — done / total, elapsed, and an ETA from the runs already trained — beside
each run's own bar; with ``bar=False`` (``--quiet``) one line per finished run instead.
"""

from __future__ import annotations

import math
import time

from tqdm.auto import tqdm


class SuiteProgress:
    """Counts an invocation's runs as they finish (trained now, or read back).

    Args:
      total: the invocation's distinct runs.
      bar: show a bar (else print one line per finished run).
      parallel: how many processes train at once (``reproduce --workers``): the ETA
        divides by it.
    """

    def __init__(self, total: int, *, bar: bool = True, parallel: int = 1):
        self.total, self.done, self.trained_s, self.trained, self.parallel = total, 0, 0.0, 0, parallel
        self.seen: set[str] = set()  # a run shared by two experiments counts once
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=total, desc="all runs", unit="run", position=0, dynamic_ncols=True) if bar else None

    def eta_s(self) -> float:
        """Seconds left: the mean time of the runs trained so far times the runs left,
        over the processes training at once (NaN before the first run is trained)."""
        if not self.trained:
            return math.nan
        return self.trained_s / self.trained * (self.total - self.done) / self.parallel

    def finished(self, key: str, label: str, seconds: float, *, trained: bool, accuracy: float | None = None) -> None:
        """Record one finished run (``key``: its run directory, counted once; ``seconds``:
        its training time; ``trained``: False when read back from the pool)."""
        if key in self.seen:
            return
        self.seen.add(key)
        self.done += 1
        if trained:
            self.trained, self.trained_s = self.trained + 1, self.trained_s + seconds
        eta = self.eta_s()
        eta_text = "—" if math.isnan(eta) else f"{eta / 60:.1f} min"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"ETA {eta_text}")
            return
        acc = f", final test accuracy {accuracy * 100:.2f}%" if accuracy is not None and accuracy == accuracy else ""
        how = f"trained in {seconds:.1f} s" if trained else "read back"
        print(f"[{self.done}/{self.total}] {label}: {how}{acc}; elapsed "
              f"{(time.perf_counter() - self.t0) / 60:.1f} min, ETA {eta_text}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
