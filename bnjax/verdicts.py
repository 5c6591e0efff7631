"""Verdicts: a claim about finished runs, tested by one written rule, as a value.

A `Verdict` holds the claim, its outcome (Supported / Contradicted / Inconclusive), the
estimate and its 95% interval, n and the diverged and at-chance seeds per arm, the rule
that decided it and its p-value. The report renders it (`bnjax.report.verdict_line`);
results.json stores it (`Verdict.to_dict`). The rules, stated in every report by `RULES`:

* **Comparisons of per-seed values** (`compare`). Two one-sided tests at 2.5% each,
  i.e. a two-sided 95% interval for the difference, against the claim's margin:
  **Supported** when the whole interval lies beyond the margin in the claimed direction,
  **Contradicted** when it lies wholly on the other side, **Inconclusive** otherwise.
  - When every seed of both arms trained (none diverged, none at chance) the interval is
    Welch's for the difference of means (``scipy.stats.ttest_ind(equal_var=False)``),
    clipped to what the metric allows (an accuracy difference lies in [-100, +100]
    points).
  - Otherwise the outcomes are bimodal and a mean misleads: a diverged seed is the worst
    outcome (chance accuracy, infinite loss), every seed is ranked, and the estimate is
    the Hodges-Lehmann shift (median of all pairwise differences) with its exact
    distribution-free interval from the Mann-Whitney U distribution (Bauer 1972; the
    order statistics of the pairwise differences). At n = 3 vs 3 no such interval is
    narrower than everything, so such a claim is Inconclusive whatever the values.
* **Spans of good settings** (`span`): a setting is good for a seed when its accuracy is
  within the tolerance of a common reference, the best mean accuracy either arm reaches
  at any setting; a seed's span is its longest run of consecutive good settings (none if
  it has no good setting). Per-seed spans are compared by the rank rule above.
* **Speed-ups** (`speedup`): the ratio of median steps to a target, a seed that never
  reached counting as infinitely many steps; a percentile bootstrap 95% interval over
  seeds. When neither arm's median seed reaches the target there is no ratio:
  Inconclusive, said in words.
* **Divergence** (`divergence`): by counting seeds; Supported only when every seed
  diverged.
* **Multiplicity** (`control_fdr`): over all verdicts of a report that have a p-value,
  Benjamini-Hochberg at q = 0.05 (``scipy.stats.false_discovery_control``); a Supported
  or Contradicted verdict whose adjusted p-value exceeds q is marked as not surviving.

numpy and scipy only: no training code is imported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

OUTCOMES = ("Supported", "Contradicted", "Inconclusive")
LEVEL = 0.95
FDR_Q = 0.05
AT_CHANCE = 1.5  # a seed is "at chance" when its accuracy is at most 1.5x chance (15% for 10 classes)

RULES = ("Verdicts are values (claim, outcome, estimate, 95% interval, n, diverged and at-chance seeds, rule, "
         "p-value), stored in each section's results.json. A comparison is **Supported** when its two-sided 95% "
         "interval lies wholly beyond the claim's margin in the claimed direction, **Contradicted** when it lies "
         "wholly on the other side, **Inconclusive** otherwise. When every seed of both arms trained, the interval "
         "is Welch's for the difference of means, clipped to what accuracy allows; when any seed diverged or ended "
         f"at chance (accuracy at most {AT_CHANCE:g}x chance), outcomes are bimodal: a diverged seed ranks worst "
         "(chance accuracy, infinite loss) and the estimate is the Hodges-Lehmann shift with its exact Mann-Whitney "
         "interval, which at n = 3 vs 3 cannot exclude anything. Spans of good learning rates are measured against "
         "one reference for both arms (the best mean accuracy either reaches), per seed, as the longest run of "
         "consecutive good settings, and compared by that rank rule. Speed-ups: ratio of median steps to the "
         "target with a percentile-bootstrap interval; neither median reaching is Inconclusive. A report's "
         f"p-values are controlled for a false-discovery rate of {FDR_Q:g} (Benjamini-Hochberg): a Supported or "
         "Contradicted verdict that does not survive it says so.")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One claim tested by one rule.

    Attributes:
      claim: the claim in words.
      outcome: one of `OUTCOMES`.
      estimate, low, high: the estimate and its 95% interval (in ``unit``s, unscaled:
        0.01 is one point of accuracy); NaN when there is none.
      unit: "points" (accuracy, shown x100), "nats", "x" (a ratio), "settings",
        "seeds" or "" (a plain number).
      n: seeds per arm.
      diverged, at_chance: per arm, the seeds that diverged / that ended at chance
        accuracy without diverging.
      rule: the rule that decided it ("welch", "rank", "bootstrap", "seed count").
      p: the two-sided p-value of the test against the margin, where the rule has one.
      margin: the claim's margin (the estimate must clear it), in ``unit``s.
      higher: whether the claim is that the estimate is above the margin (else below).
      detail: words the rule adds (e.g. that neither arm reached the target).
      fdr_survives: after `control_fdr`: whether a Supported / Contradicted outcome
        survives the report's false-discovery-rate control; None when not assessed.
    """

    claim: str
    outcome: str
    estimate: float
    low: float
    high: float
    unit: str
    n: tuple[int, ...]
    rule: str
    diverged: tuple[int, ...] = ()
    at_chance: tuple[int, ...] = ()
    p: float | None = None
    margin: float = 0.0
    higher: bool = True
    detail: str = ""
    fdr_survives: bool | None = None

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of {OUTCOMES}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (infinities and NaN as strings, so the file stays strict JSON)."""
        return {k: _json_number(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown verdict fields {sorted(unknown)}")
        v = {k: (float(x) if isinstance(x, str) and x in ("inf", "-inf", "nan") else x) for k, x in d.items()}
        for k in ("n", "diverged", "at_chance"):
            v[k] = tuple(v.get(k, ()))
        return cls(**v)


def _json_number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return list(v) if isinstance(v, tuple) else v


def _outcome(low: float, high: float, *, margin: float, higher: bool) -> str:
    """Supported when [low, high] lies beyond the bar in the claimed direction (above
    ``+margin`` when ``higher``, below ``-margin`` otherwise), Contradicted when wholly on
    the other side, else Inconclusive (an interval that touches the bar included)."""
    sign = 1.0 if higher else -1.0
    if math.isnan(low) or math.isnan(high):
        return "Inconclusive"
    lo, hi = sorted((sign * low - margin, sign * high - margin))  # the claim, turned to "above margin"
    return "Supported" if lo > 0 else "Contradicted" if hi < 0 else "Inconclusive"


def _values(name: str, values: Sequence[float]) -> np.ndarray:
    v = np.asarray(list(values), float)
    if v.size == 0:
        raise ValueError(f"{name}: no values to compare (an arm without seeds)")
    if np.isnan(v).any():
        raise ValueError(f"{name}: a missing (NaN) value; a diverged seed must be given its worst value "
                         "(chance accuracy, infinite loss), not dropped")
    return v


def _at_chance(v: np.ndarray, chance: float | None, diverged: int) -> int:
    """Seeds at chance accuracy that did not diverge (diverged seeds score chance too)."""
    return 0 if chance is None else max(0, int(np.sum(np.isfinite(v) & (v <= AT_CHANCE * chance))) - diverged)


def compare(ours: Sequence[float], other: Sequence[float], *, claim: str, higher: bool = True,
            margin: float = 0.0, unit: str = "points", diverged: tuple[int, int] = (0, 0),
            chance: float | None = None, bounds: tuple[float, float] | None = None, rank: bool = False) -> Verdict:
    """Test the claim that ``ours`` is higher (``higher``) or lower than ``other`` by more
    than ``margin``, from per-seed values (the module's comparison rule).

    Args:
      ours, other: per-seed values; a diverged seed must already hold its worst value
        (chance accuracy, ``inf`` loss): NaN is refused.
      claim: the claim in words.
      higher, margin: the claim is ``mean(ours) - mean(other) > margin`` (``< -margin``
        when not ``higher``); margin in the values' units (0.01: one point).
      unit: how the values read (see `Verdict`).
      diverged: per arm, how many seeds diverged (they force the rank rule).
      chance: chance accuracy, to count seeds at chance (accuracy metrics only).
      bounds: the range of the values (accuracy: (0, 1), the default for "points"):
        intervals are clipped to the range of a difference.
      rank: use the rank rule even when every seed trained (discrete statistics).
    Returns:
      The `Verdict`.
    Raises:
      ValueError: an arm without values, a NaN value, or a value outside ``bounds``.
    """
    x, y = _values("ours", ours), _values("other", other)
    sign = 1.0 if higher else -1.0
    bounds = bounds if bounds is not None else ((0.0, 1.0) if unit == "points" else None)
    if bounds is not None:
        for name, v in (("ours", x), ("other", y)):
            out = v[np.isfinite(v) & ((v < bounds[0]) | (v > bounds[1]))]
            if out.size:
                raise ValueError(f"{name}: value {out[0]:g} outside the range {bounds} of unit {unit!r}"
                                 + (" (accuracies are fractions, not percent)" if unit == "points" else ""))
    div = (max(diverged[0], int(np.sum(~np.isfinite(x)))), max(diverged[1], int(np.sum(~np.isfinite(y)))))
    chance_n = (_at_chance(x, chance, div[0]), _at_chance(y, chance, div[1]))
    spread = x.size >= 2 and y.size >= 2 and np.isfinite(x).all() and np.isfinite(y).all() and (
        np.ptp(x) > 0 or np.ptp(y) > 0)  # exact: [0.9] * 3 has a std of 1e-16
    common = dict(claim=claim, unit=unit, n=(x.size, y.size), diverged=div, at_chance=chance_n, margin=margin,
                  higher=higher)
    if x.size < 2 or y.size < 2:
        with np.errstate(invalid="ignore"):
            est = float(np.median(_pairwise(x, y)))
        return Verdict(outcome="Inconclusive", estimate=est, low=math.nan, high=math.nan, rule="rank",
                       detail="too few seeds for an interval", **common)
    if not rank and not any(div) and not any(chance_n) and spread:
        est = float(x.mean() - y.mean())
        ci = sps.ttest_ind(x, y, equal_var=False).confidence_interval(confidence_level=LEVEL)
        low, high = float(ci.low), float(ci.high)
        p = float(sps.ttest_ind(x, y + sign * margin, equal_var=False).pvalue)
        rule = "welch"
    else:
        est, low, high = hodges_lehmann(x, y)
        p = _rank_p(x, y + sign * margin)
        rule = "rank"
        if math.isinf(low) and math.isinf(high):
            common["detail"] = f"at n = {x.size} vs {y.size} the exact rank interval cannot exclude any shift"
    if bounds is not None:
        span = bounds[1] - bounds[0]
        low, high = max(low, -span), min(high, span)
    return Verdict(outcome=_outcome(low, high, margin=margin, higher=higher), estimate=est, low=low, high=high,
                   rule=rule, p=p, **common)


def compare_arms(ours: Mapping, other: Mapping, metric: str, *, claim: str, higher: bool = True,
                 margin: float = 0.0, unit: str = "points") -> Verdict:
    """`compare` of two arms' summaries (`bnjax.stats.summarize`): their per-seed
    ``metric``, their diverged seeds and, for accuracies, their chance level."""
    acc = metric.endswith("accuracy")
    return compare(ours["per_seed"][metric], other["per_seed"][metric], claim=claim, higher=higher, margin=margin,
                   unit=unit, chance=ours.get("chance") if acc else None,
                   diverged=tuple(sum(d is not None for d in a["diverged_at"]) for a in (ours, other)))


def _pairwise(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        d = x[:, None] - y[None, :]
    return np.where(np.isnan(d), 0.0, d).ravel()  # inf - inf: two diverged seeds tie


def u_cdf(n: int, m: int) -> np.ndarray:
    """The exact null distribution of the Mann-Whitney U statistic for samples of sizes
    ``n`` and ``m`` without ties: ``P(U <= u)`` for u = 0 .. n*m (the count of
    arrangements by the recurrence c(n, m, u) = c(n-1, m, u-m) + c(n, m-1, u))."""
    table = [[None] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 or j == 0:
                table[i][j] = np.array([1.0])
                continue
            a, b = table[i - 1][j], table[i][j - 1]
            c = np.zeros(i * j + 1)
            c[j:j + a.size] += a
            c[:b.size] += b
            table[i][j] = c
    counts = table[n][m]
    return np.cumsum(counts) / counts.sum()


def hodges_lehmann(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """The Hodges-Lehmann shift of ``x`` over ``y`` (median of the pairwise differences)
    and its exact distribution-free 95% interval: the k-th smallest and k-th largest
    pairwise differences, k the largest with P(U <= k - 1) <= 2.5% (Bauer 1972). Returns
    ``(estimate, low, high)``; the interval is (-inf, inf) when no k exists (n = 3 vs 3)."""
    d = np.sort(_pairwise(np.asarray(x, float), np.asarray(y, float)))
    cdf = u_cdf(len(x), len(y))
    ks = np.flatnonzero(cdf <= (1 - LEVEL) / 2)  # u with P(U <= u) <= alpha/2; k = u + 1
    est = float(np.median(d))
    if ks.size == 0:
        return est, -math.inf, math.inf
    k = int(ks[-1]) + 1
    return est, float(d[k - 1]), float(d[d.size - k])


def _rank_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p-value of the Mann-Whitney U test, exact over all arrangements (ties
    and infinite values allowed)."""
    if np.all(x == x[0]) and np.all(y == x[0]):
        return 1.0
    res = sps.mannwhitneyu(x, y, alternative="two-sided",
                           method=sps.PermutationMethod(n_resamples=20_000, rng=np.random.default_rng(0)))
    return float(res.pvalue)


def good_span(values: np.ndarray, reference: float, *, within: float) -> tuple[int, int] | None:
    """The longest run of consecutive settings whose value is within ``within`` of
    ``reference`` (the first of equal runs), as ``(first, last)`` column indices; None
    when no setting is good."""
    good = np.asarray(values, float) >= reference - within - 1e-12
    best, start = None, None
    for j, g in enumerate(list(good) + [False]):
        if g and start is None:
            start = j
        elif not g and start is not None:
            if best is None or j - start > best[1] - best[0] + 1:
                best = (start, j - 1)
            start = None
    return best


def span_width(values: np.ndarray, reference: float, *, within: float) -> int:
    """How many settings `good_span` covers (0 when none is good)."""
    s = good_span(values, reference, within=within)
    return 0 if s is None else s[1] - s[0] + 1


def span(a: np.ndarray, b: np.ndarray, *, claim: str, within: float, diverged: tuple[int, int] = (0, 0)
         ) -> tuple[Verdict, dict]:
    """The claim that arm ``b``'s span of good settings is wider than arm ``a``'s.

    Args:
      a, b: (seeds, settings) per-seed accuracies (a diverged seed at chance).
      within: the tolerance below the common reference (0.01: one point).
    Returns:
      The verdict (estimate in settings: the Hodges-Lehmann shift of b's per-seed spans
      over a's) and ``{"reference", "spans": {"a": (first, last) or None, "b": ...},
      "seed_widths": {"a": [...], "b": [...]}}``, the spans of the mean accuracies.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0 or b.size == 0:
        raise ValueError("span: an arm without values")
    ref = float(max(np.nanmax(np.nanmean(a, axis=0)), np.nanmax(np.nanmean(b, axis=0))))
    wa = [span_width(row, ref, within=within) for row in a]
    wb = [span_width(row, ref, within=within) for row in b]
    v = compare(wb, wa, claim=claim, unit="settings", bounds=(0.0, float(a.shape[1])), diverged=diverged,
                rank=True)
    spans = {"a": good_span(np.nanmean(a, axis=0), ref, within=within),
             "b": good_span(np.nanmean(b, axis=0), ref, within=within)}
    return v, {"reference": ref, "spans": spans, "seed_widths": {"a": wa, "b": wb}}


def speedup(base: Sequence[int | None], arm: Sequence[int | None], *, claim: str, seed: int = 0) -> Verdict:
    """The claim that ``arm`` needs fewer steps to the target than ``base``: the ratio of
    median steps (a seed that never reached: infinitely many) with a percentile-bootstrap
    95% interval over seeds; Supported when the interval lies above 1. The p-value is
    twice the bootstrap share of ratios on the far side of 1."""
    if not base or not arm:
        raise ValueError("speedup: an arm without seeds")
    a = np.asarray([math.inf if s is None else s for s in base], float)
    b = np.asarray([math.inf if s is None else s for s in arm], float)
    common = dict(claim=claim, unit="x", n=(len(b), len(a)), margin=1.0, rule="bootstrap")
    if math.isinf(np.median(a)) and math.isinf(np.median(b)):
        return Verdict(outcome="Inconclusive", estimate=math.nan, low=math.nan, high=math.nan,
                       detail="neither arm's median seed reached the target, so there is no ratio", **common)
    point = float(_ratio(a, b))
    if len(a) < 2 or len(b) < 2:
        return Verdict(outcome="Inconclusive", estimate=point, low=math.nan, high=math.nan,
                       detail="too few seeds for an interval", **common)
    res = sps.bootstrap((a, b), _ratio, vectorized=True, paired=False, method="percentile", n_resamples=2000,
                        confidence_level=LEVEL, rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    dist = res.bootstrap_distribution
    p = float(min(1.0, max(2 * min(np.mean(dist <= 1.0), np.mean(dist >= 1.0)), 1.0 / dist.size)))
    detail = "" if math.isfinite(np.median(b)) else "the arm's median seed never reached the target"
    return Verdict(outcome=_outcome(low, high, margin=1.0, higher=True), estimate=point, low=low, high=high, p=p,
                   detail=detail, **common)


def _ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Median of x over median of y; a resample where neither reaches counts as 1 (equal)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.median(x, axis=axis) / np.median(y, axis=axis)
    return np.where(np.isnan(r), 1.0, r)


def divergence(diverged_at: Sequence[int | None], *, claim: str) -> Verdict:
    """The claim that an arm diverges, by counting seeds: Supported when every seed
    diverged, Contradicted when none did, Inconclusive otherwise.

    Raises:
      ValueError: no seeds.
    """
    if not diverged_at:
        raise ValueError("divergence: no seeds to count")
    k, n = sum(d is not None for d in diverged_at), len(diverged_at)
    first = f"first at step {min(d for d in diverged_at if d is not None)}" if k else ""
    return Verdict(claim=claim, outcome="Supported" if k == n else "Contradicted" if k == 0 else "Inconclusive",
                   estimate=float(k), low=math.nan, high=math.nan, unit="seeds", n=(n,), diverged=(k,),
                   rule="seed count", detail=first)


def control_fdr(verdicts: Sequence[Verdict], *, q: float = FDR_Q) -> list[Verdict]:
    """Benjamini-Hochberg over the verdicts that have a p-value: each Supported or
    Contradicted one gets ``fdr_survives`` (adjusted p <= q); the others are unchanged."""
    idx = [i for i, v in enumerate(verdicts) if v.p is not None and math.isfinite(v.p)]
    out = list(verdicts)
    if not idx:
        return out
    adjusted = sps.false_discovery_control([verdicts[i].p for i in idx], method="bh")
    for i, adj in zip(idx, adjusted, strict=True):
        if verdicts[i].outcome != "Inconclusive":
            out[i] = dataclasses.replace(verdicts[i], fdr_survives=bool(adj <= q))
    return out
