"""Verdicts: a claim about finished runs, tested by one written rule, as a value.

A `Verdict` holds the claim, its outcome (Supported / Contradicted / Inconclusive), the
estimate and its 95% interval, n and the diverged and at-chance seeds per arm, the rule
that decided it, its p-value, the smallest effect of interest (SESOI) and the design's power
at it. The report renders it (`bnjax.report.verdict_line`); results.json stores it
(`Verdict.to_dict`). The rules, stated in every report by `RULES`:

* **The rule is the design's, not the data's.** Each claim names its rule before the runs:
  Welch for arms that cannot collapse, the exact rank rule where an arm can (diverge or end
  at chance) and for discrete statistics. A worse competitor never switches the rule.
* **Comparisons of per-seed values** (`compare`): a two-sided 95% interval for the
  difference, against the claim's margin: **Supported** when the whole interval lies beyond
  the margin in the claimed direction, **Contradicted** when it lies wholly on the other
  side, **Inconclusive** otherwise; for a claim of any gain (margin 0), an interval wholly
  below the SESOI is **Contradicted** as negligible ("any gain is smaller than 0.5 points",
  an equivalence-style outcome). The p-value is that of the test that decided (against the
  margin, or against the SESOI), at most 5% exactly when its bar lies outside the interval.
  - Welch: the difference of means with Welch's interval
    (``scipy.stats.ttest_ind(equal_var=False)``), clipped to what the metric allows. A seed
    with an infinite value, or no spread in either arm, leaves it without an interval.
  - Rank (`bnjax.ranks`): the Hodges-Lehmann shift with its exact distribution-free
    interval and the p-value that inverts it; a diverged seed ranks worst. Where seeds
    collapse, the line also gives the counts and the mean difference over all seeds, so a
    shift of the typical seed is not read as the arm's mean. At 3 vs 3 seeds its smallest
    attainable p is 0.10: such a design cannot decide, and its line says so.
* **Spans of good settings** (`span`): a setting is good for a seed when its accuracy is
  within the tolerance of its arm's reference, the best mean accuracy the arm reaches at any
  setting (widths, not levels); a seed's span is its longest run of consecutive good
  settings. Per-seed spans are compared by the rank rule.
* **Speed-ups** (`speedup`): the exact rank rule on log steps to the target (a seed that
  never reached: infinitely many), the ratio ``exp`` of the shift; SESOI 1.2x.
* **Divergence** (`divergence`): the exact binomial test of the divergence rate against 1/2.
* **Power** (`bnjax.power.design`): each verdict carries its design's power at the SESOI,
  the smallest effect it detects with 80% power and its smallest attainable p.
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

from bnjax import lazy, power, ranks

sps = lazy.module("scipy.stats")  # imported when a test first runs

OUTCOMES = ("Supported", "Contradicted", "Inconclusive")
LEVEL = 0.95
FDR_Q = 0.05
AT_CHANCE = 1.5  # a seed is "at chance" when its accuracy is at most 1.5x chance (15% for 10 classes)
# The smallest effect of interest per unit (docs/reproducing.md argues each): 0.5 points of
# accuracy, 0.05 nats of loss, one setting of a sweep's grid, a 1.2x speed-up, a divergence
# rate 0.4 away from one half (the seed-count rule's test is against 1/2). None: no SESOI.
SESOI = {"points": 0.005, "nats": 0.05, "settings": 1.0, "x": 1.2, "seeds": 0.4}

RULES = ("Verdicts are values (claim, outcome, estimate, 95% interval, n, diverged and at-chance seeds, rule, "
         "p-value, smallest effect of interest and power), stored in each section's results.json. Each claim's rule "
         "is fixed by its design before the runs, never by their values: Welch's interval for the difference of "
         "means where no arm can collapse; the exact rank rule (Hodges-Lehmann shift, its exact Mann-Whitney "
         "interval and the p-value that inverts it) where an arm can diverge or end at chance "
         f"(accuracy at most {AT_CHANCE:g}x chance) and for discrete statistics, with the collapsed seeds counted "
         "and the mean difference given beside it. A comparison is **Supported** when its two-sided 95% interval "
         "lies wholly beyond the claim's margin in the claimed direction, **Contradicted** when it lies wholly on "
         "the other side, and, for a claim of any gain, also when it lies wholly below the smallest effect of "
         "interest (SESOI: 0.5 points of accuracy, 0.05 nats of loss, one grid setting of a span, a 1.2x speed-up; "
         "the line says that any gain is smaller), **Inconclusive** otherwise. Spans of good learning rates are "
         "measured per seed against each arm's own best mean accuracy (widths, not levels) and compared by the "
         "rank rule. Speed-ups: the exact rank rule on log steps to the target. Divergence: the exact binomial "
         "test of the rate against 1/2. Every verdict states its design's power at the SESOI; an Inconclusive one "
         "says what its design could detect with 80% power, or that its design cannot reach p < 0.05 at all. A "
         f"report's p-values are controlled for a false-discovery rate of {FDR_Q:g} (Benjamini-Hochberg): a "
         "Supported or Contradicted verdict that does not survive it says so.")


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
      sesoi: the smallest effect of interest (in ``unit``s; a ratio for "x").
      negligible: a Contradicted outcome because any effect is smaller than the SESOI.
      sd: per arm, the standard deviation over its seeds (finite values; for speed-ups,
        of log steps), the spread the power is computed from.
      power: the design's power at the SESOI (`bnjax.power.design`); None without one.
      detectable: the smallest effect the design detects with 80% power (None: none it
        can, e.g. a rank design whose smallest p is above 5%).
      min_p: the smallest p-value the design can give (rank rules; None: no floor).
      arms: the arm whose seeds alone decide the claim (a seed count), so a protocol can
        give that arm alone the seeds its rule needs; () otherwise.
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
    sesoi: float | None = None
    negligible: bool = False
    sd: tuple[float, ...] = ()
    power: float | None = None
    detectable: float | None = None
    min_p: float | None = None
    arms: tuple[str, ...] = ()

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
        for k in ("n", "diverged", "at_chance", "sd", "arms"):
            v[k] = tuple(v.get(k, ()))
        return cls(**v)


def _json_number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return list(v) if isinstance(v, tuple) else v


def _outcome(low: float, high: float, *, margin: float, higher: bool, sesoi: float | None = None
             ) -> tuple[str, bool]:
    """``(outcome, negligible)``: Supported when [low, high] lies beyond the bar in the
    claimed direction (above ``+margin`` when ``higher``, below ``-margin`` otherwise),
    Contradicted when wholly on the other side, else Inconclusive (an interval that touches
    the bar included); for a claim of any gain (margin 0), an interval wholly below the
    ``sesoi`` in the claimed direction is Contradicted too, as negligible (an
    equivalence-style outcome: any gain is smaller than the smallest effect of interest)."""
    sign = 1.0 if higher else -1.0
    if math.isnan(low) or math.isnan(high):
        return "Inconclusive", False
    lo, hi = sorted((sign * low - margin, sign * high - margin))  # the claim, turned to "above margin"
    if lo > 0:
        return "Supported", False
    if hi < 0:
        return "Contradicted", False
    if sesoi is not None and margin == 0 and hi < sesoi:
        return "Contradicted", True
    return "Inconclusive", False


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
            chance: float | None = None, bounds: tuple[float, float] | None = None, rule: str = "welch",
            sesoi: float | None = None) -> Verdict:
    """Test the claim that ``ours`` is higher (``higher``) or lower than ``other`` by more
    than ``margin``, from per-seed values, by the ``rule`` the design chose (module docstring).

    Args:
      ours, other: per-seed values; a diverged seed must already hold its worst value
        (chance accuracy, ``inf`` loss): NaN is refused.
      claim: the claim in words.
      higher, margin: the claim is ``mean(ours) - mean(other) > margin`` (``< -margin``
        when not ``higher``); margin in the values' units (0.01: one point).
      unit: how the values read (see `Verdict`).
      diverged: per arm, how many seeds diverged.
      chance: chance accuracy, to count seeds at chance (accuracy metrics only).
      bounds: the range of the values (accuracy: (0, 1), the default for "points"):
        intervals are clipped to the range of a difference.
      rule: "welch" (arms that cannot collapse) or "rank" (arms that can, and discrete
        statistics), chosen by the design before the runs, never by their values.
      sesoi: the smallest effect of interest (default `SESOI` of the unit).
    Returns:
      The `Verdict`, with the design's power at the SESOI.
    Raises:
      ValueError: an arm without values, a NaN value, a value outside ``bounds``, an
        unknown rule.
    """
    if rule not in ("welch", "rank"):
        raise ValueError(f"rule must be 'welch' or 'rank', got {rule!r}")
    x, y = _values("ours", ours), _values("other", other)
    bounds = bounds if bounds is not None else ((0.0, 1.0) if unit == "points" else None)
    _check_bounds(x, y, bounds, unit)
    div = (max(diverged[0], int(np.sum(~np.isfinite(x)))), max(diverged[1], int(np.sum(~np.isfinite(y)))))
    chance_n = (_at_chance(x, chance, div[0]), _at_chance(y, chance, div[1]))
    sesoi = SESOI.get(unit) if sesoi is None else sesoi
    bar = (1.0 if higher else -1.0) * margin  # the claim: the difference beyond ``bar`` in its direction
    sds = _sds(x, y)
    common = dict(claim=claim, unit=unit, n=(x.size, y.size), diverged=div, at_chance=chance_n, margin=margin,
                  higher=higher, rule=rule, sesoi=sesoi, sd=sds, **power.design(rule, sds, (x.size, y.size),
                                                                                 effect=sesoi))
    bimodal = _bimodal_text(x, y, div, chance_n, unit) if any(div) or any(chance_n) else ""
    if x.size < 2 or y.size < 2:
        return Verdict(outcome="Inconclusive", estimate=float(np.median(ranks.pairwise(x, y))), low=math.nan,
                       high=math.nan, detail="too few seeds for an interval", **common)
    if rule == "welch" and _welch_undefined(x, y):
        return Verdict(outcome="Inconclusive", estimate=float(x.mean() - y.mean()), low=math.nan, high=math.nan,
                       detail=_welch_undefined(x, y), **common)
    est, low, high, p_at = _welch(x, y) if rule == "welch" else _rank(x, y)
    if bounds is not None:
        span = bounds[1] - bounds[0]
        low, high = max(low, -span), min(high, span)
    return _decide(est, low, high, p_at, bar=bar, detail=bimodal, **common)


def _welch(x: np.ndarray, y: np.ndarray):
    """Welch's difference of means, its 95% interval and its p-value as a function of the bar."""
    ci = sps.ttest_ind(x, y, equal_var=False).confidence_interval(confidence_level=LEVEL)
    return (float(x.mean() - y.mean()), float(ci.low), float(ci.high),
            lambda b: float(sps.ttest_ind(x, y + b, equal_var=False).pvalue))


def _rank(x: np.ndarray, y: np.ndarray):
    """The Hodges-Lehmann shift, its exact interval and the p-value that inverts it (`bnjax.ranks`)."""
    return (*ranks.hodges_lehmann(x, y), lambda b: ranks.rank_p(x, y, b))


def _decide(est: float, low: float, high: float, p_at, *, bar: float, detail: str = "", **common) -> Verdict:
    """The verdict of an interval against the claim's bar and the SESOI (`_outcome`), with
    the p-value of the test that decided it: against the bar, or against the SESOI for the
    equivalence outcome (each at most 5% exactly when its bar lies outside the interval)."""
    outcome, negligible = _outcome(low, high, margin=common["margin"], higher=common["higher"], sesoi=common["sesoi"])
    sign = 1.0 if common["higher"] else -1.0
    p = p_at(bar + sign * common["sesoi"]) if negligible else p_at(bar)
    return Verdict(outcome=outcome, estimate=est, low=low, high=high, p=p, negligible=negligible, detail=detail,
                   **common)


def _check_bounds(x: np.ndarray, y: np.ndarray, bounds: tuple[float, float] | None, unit: str) -> None:
    if bounds is None:
        return
    for name, v in (("ours", x), ("other", y)):
        out = v[np.isfinite(v) & ((v < bounds[0]) | (v > bounds[1]))]
        if out.size:
            raise ValueError(f"{name}: value {out[0]:g} outside the range {bounds} of unit {unit!r}"
                             + (" (accuracies are fractions, not percent)" if unit == "points" else ""))


def _sds(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Each arm's sample standard deviation over its finite values (0 with fewer than 2)."""
    def sd(v):
        v = v[np.isfinite(v)]
        return float(np.std(v, ddof=1)) if v.size >= 2 else 0.0
    return sd(x), sd(y)


def _welch_undefined(x: np.ndarray, y: np.ndarray) -> str:
    """Why Welch's interval does not exist for these seeds ("" when it does)."""
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return "a seed's value is infinite (it diverged): the design's Welch rule has no interval"
    if np.ptp(x) == 0 and np.ptp(y) == 0:  # exact: [0.9] * 3 has a std of 1e-16
        return "every seed of each arm has the same value: Welch's interval is undefined"
    return ""


def _bimodal_text(x: np.ndarray, y: np.ndarray, div: tuple[int, int], chance_n: tuple[int, int], unit: str) -> str:
    """Words for outcomes that split into trained and collapsed seeds: the mean difference
    over all seeds (which way the collapsed seeds pull) beside the rule's estimate."""
    with np.errstate(invalid="ignore"):
        d = float(np.mean(x) - np.mean(y))
    scale, name = (100.0, " points") if unit == "points" else (1.0, f" {unit}" if unit else "")
    mean = "undefined (infinite values)" if math.isnan(d) else f"{d * scale:+.2f}{name}"
    return (f"seeds collapsed (diverged or at chance): {div[0] + chance_n[0]}/{x.size} of ours, "
            f"{div[1] + chance_n[1]}/{y.size} of the other; the mean difference over all seeds is {mean}")


def compare_arms(ours: Mapping, other: Mapping, metric: str, *, claim: str, higher: bool = True,
                 margin: float = 0.0, unit: str = "points", rule: str = "welch") -> Verdict:
    """`compare` of two arms' summaries (`bnjax.stats.summarize`): their per-seed
    ``metric``, their diverged seeds and, for accuracies, their chance level."""
    acc = metric.endswith("accuracy")
    return compare(ours["per_seed"][metric], other["per_seed"][metric], claim=claim, higher=higher, margin=margin,
                   unit=unit, chance=ours.get("chance") if acc else None, rule=rule,
                   diverged=tuple(sum(d is not None for d in a["diverged_at"]) for a in (ours, other)))


def good_span(values: np.ndarray, reference: float, *, within: float) -> tuple[int, int] | None:
    """The longest run of consecutive settings whose value is within ``within`` of
    ``reference`` (the first of equal runs), as ``(first, last)`` column indices; None
    when no setting is good (an infinite value never is)."""
    values = np.asarray(values, float)
    good = np.isfinite(values) & (values >= reference - within - 1e-12)
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


def span(a: np.ndarray, b: np.ndarray, *, claim: str, within: float, diverged: tuple[int, int] = (0, 0),
         chance: float | None = None) -> tuple[Verdict, dict]:
    """The claim that arm ``b``'s span of good settings is wider than arm ``a``'s.

    Each arm is measured against its own reference, the best mean accuracy it reaches at
    any setting, so the rule compares widths, not levels (two flat arms are equally wide
    whatever their accuracy); a setting where a seed ends at chance (at most `AT_CHANCE`
    times ``chance``) is never good, so an arm that collapses everywhere has no span. The
    per-seed widths go to the rank rule.

    Args:
      a, b: (seeds, settings) per-seed accuracies (a diverged seed at chance).
      within: the tolerance below an arm's reference (0.01: one point).
      chance: chance accuracy (None: no floor).
    Returns:
      The verdict (estimate in settings: the Hodges-Lehmann shift of b's per-seed spans
      over a's) and ``{"reference": {"a", "b"}, "spans": {"a": (first, last) or None, "b":
      ...}, "seed_widths": {"a": [...], "b": [...]}}``, the spans of the mean accuracies.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0 or b.size == 0:
        raise ValueError("span: an arm without values")
    if chance is not None:  # a collapsed setting is never good: it sinks below any reference
        a, b = (np.where(v <= AT_CHANCE * chance, -np.inf, v) for v in (a, b))
    with np.errstate(invalid="ignore"):
        ref = {k: float(np.nanmax(np.nanmean(v, axis=0))) for k, v in (("a", a), ("b", b))}
    wa = [span_width(row, ref["a"], within=within) for row in a]
    wb = [span_width(row, ref["b"], within=within) for row in b]
    v = compare(wb, wa, claim=claim, unit="settings", bounds=(0.0, float(a.shape[1])), diverged=diverged,
                rule="rank")
    spans = {"a": good_span(np.nanmean(a, axis=0), ref["a"], within=within),
             "b": good_span(np.nanmean(b, axis=0), ref["b"], within=within)}
    return v, {"reference": ref, "spans": spans, "seed_widths": {"a": wa, "b": wb}}


def speedup(base: Sequence[int | None], arm: Sequence[int | None], *, claim: str) -> Verdict:
    """The claim that ``arm`` needs fewer steps to the target than ``base`` (a seed that
    never reached: infinitely many steps), by the exact rank rule on log steps: the
    speed-up is ``exp`` of the Hodges-Lehmann shift of log(base steps) over log(arm
    steps), with its exact interval; Supported when the interval lies above 1x,
    Contradicted when below, negligible when wholly below the SESOI (1.2x). Distribution
    free, so its error rate is at most nominal at any n (`bnjax.ranks`); a design whose
    smallest attainable p is above 5% (3 vs 3 seeds) says it cannot decide."""
    if not base or not arm:
        raise ValueError("speedup: an arm without seeds")
    a = np.log(np.asarray([math.inf if s is None else s for s in base], float))
    b = np.log(np.asarray([math.inf if s is None else s for s in arm], float))
    sds = _sds(a, b)
    common = dict(claim=claim, unit="x", n=(len(b), len(a)), margin=1.0, rule="rank", sesoi=SESOI["x"],
                  sd=sds, **power.design("rank", sds, (len(b), len(a)), effect=math.log(SESOI["x"])))
    common["detectable"] = None if common["detectable"] is None else math.exp(common["detectable"])
    if math.isinf(np.median(a)) and math.isinf(np.median(b)):
        return Verdict(outcome="Inconclusive", estimate=math.nan, low=math.nan, high=math.nan,
                       detail="neither arm's median seed reached the target, so there is no ratio", **common)
    if len(a) < 2 or len(b) < 2:
        est = math.exp(float(np.median(ranks.pairwise(a, b))))
        return Verdict(outcome="Inconclusive", estimate=est, low=math.nan, high=math.nan,
                       detail="too few seeds for an interval", **common)
    est, low, high = (math.exp(t) for t in ranks.hodges_lehmann(a, b))
    outcome, _ = _outcome(low, high, margin=1.0, higher=True)
    negligible = outcome == "Inconclusive" and high < SESOI["x"]  # any speed-up is below the SESOI
    outcome = "Contradicted" if negligible else outcome
    p = ranks.rank_p(a, b, math.log(SESOI["x"]) if negligible else 0.0)
    detail = "" if math.isfinite(np.median(b)) else "the arm's median seed never reached the target"
    return Verdict(outcome=outcome, estimate=est, low=low, high=high, p=p, negligible=negligible, detail=detail,
                   **common)


def divergence(diverged_at: Sequence[int | None], *, claim: str, arm: str = "") -> Verdict:
    """The claim that an arm diverges: an exact binomial test of its seeds' divergence rate
    against 1/2 (``scipy.stats.binomtest``), two-sided at 5%: Supported when the rate is
    significantly above 1/2, Contradicted when below, else Inconclusive. The estimate is the
    count; the interval, Clopper-Pearson's for the rate. It needs 6 seeds to decide (6 of 6
    gives p = 0.031; 5 of 5, 0.0625).

    Raises:
      ValueError: no seeds.
    """
    if not diverged_at:
        raise ValueError("divergence: no seeds to count")
    k, n = sum(d is not None for d in diverged_at), len(diverged_at)
    test = sps.binomtest(k, n, 0.5)
    ci = test.proportion_ci(confidence_level=LEVEL, method="exact")
    outcome = "Supported" if ci.low > 0.5 else "Contradicted" if ci.high < 0.5 else "Inconclusive"
    first = f"first at step {min(d for d in diverged_at if d is not None)}" if k else ""
    design = power.design("seed count", (), (n,), effect=SESOI["seeds"])
    return Verdict(claim=claim, outcome=outcome, estimate=float(k), low=float(ci.low), high=float(ci.high),
                   unit="seeds", n=(n,), diverged=(k,), rule="seed count", p=float(test.pvalue), detail=first,
                   sesoi=SESOI["seeds"], arms=(arm,) if arm else (), **design)


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
