"""Power of the verdict rules' designs: how likely n vs m seeds decide a claim whose true
effect is ``delta``, and how many seeds a design needs (issue 30's building blocks).

* Welch's t (`bnjax.verdicts.compare`'s rule for arms that cannot collapse): by formula
  (`welch_power_exact`: the rejection probability integrated over the two sample variances,
  which decide Welch's degrees of freedom and critical value) and by simulation
  (`welch_power`, seeded: the rejection rate of scipy's Welch test on normal samples). The
  textbook shortcut, noncentral t with the Welch-Satterthwaite degrees of freedom of the
  population spreads (`welch_power_approx`), is close for many seeds but overstates power at
  the designs used here: at 3 vs 3 seeds, 0.29 against a simulated 0.23.
* The exact rank rule (for arms that can collapse, and for discrete statistics) and the
  speed-up rule (the exact rank rule on log steps): by simulation (`rank_power`, seeded),
  normal seeds shifted by the effect.
* The exact rank rule (Mann-Whitney, two-sided, exact over all arrangements): its smallest
  attainable p-value is that of two arms that do not overlap, ``2 / C(n + m, n)``. Below
  0.05 from 4 vs 4 seeds (2 / 70 = 0.029); at 3 vs 3 it is 2 / 20 = 0.10, so no outcome
  of such a design can be significant, whatever the seeds show.
"""

from __future__ import annotations

import math

import numpy as np

from bnjax import lazy, ranks

sps = lazy.module("scipy.stats")  # imported when a power is first computed


def welch_power(delta: float, sd_a: float, sd_b: float, n_a: int, n_b: int, *, alpha: float = 0.05,
                sims: int = 20_000, seed: int = 0) -> float:
    """Power of the two-sided Welch test at level ``alpha`` to detect a true difference of
    means ``delta`` for per-seed standard deviations ``sd_a``, ``sd_b`` (e.g. a pilot's) and
    ``n_a``, ``n_b`` seeds: the share of ``sims`` simulated designs (normal seeds, the
    generator seeded with ``seed``) whose Welch test rejects."""
    if n_a < 2 or n_b < 2:
        raise ValueError(f"Welch's test needs at least 2 seeds per arm, got {n_a} and {n_b}")
    rng = np.random.default_rng(seed)
    a = rng.normal(delta, sd_a, (sims, n_a))
    b = rng.normal(0.0, sd_b, (sims, n_b))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = sps.ttest_ind(a, b, axis=1, equal_var=False).pvalue
    return float(np.mean(p <= alpha))


def welch_power_approx(delta: float, sd_a: float, sd_b: float, n_a: int, n_b: int, *, alpha: float = 0.05) -> float:
    """The noncentral-t approximation of `welch_power`: ``T' ~ nct(df, delta / se)``,
    ``se^2 = sd_a^2 / n_a + sd_b^2 / n_b``, ``df`` Welch-Satterthwaite's from the population
    spreads, power ``P(T' > t_crit) + P(T' < -t_crit)``, ``t_crit = t_{1-alpha/2, df}``."""
    va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    crit = sps.t.ppf(1 - alpha / 2, df)
    return float(sps.nct.sf(crit, df, delta / se) + sps.nct.cdf(-crit, df, delta / se))


def welch_seeds_for(delta: float, sd_a: float, sd_b: float, *, power: float = 0.8, alpha: float = 0.05,
                    max_n: int = 200) -> int | None:
    """The fewest seeds per arm (equal arms) for which `welch_power` reaches ``power``;
    None if not within ``max_n``."""
    lo, hi = 2, max_n  # power grows with n (the simulation's noise aside): bisect
    if welch_power(delta, sd_a, sd_b, hi, hi, alpha=alpha) < power:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if welch_power(delta, sd_a, sd_b, mid, mid, alpha=alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def welch_power_exact(delta: float, sd_a: float, sd_b: float, n_a: int, n_b: int, *, alpha: float = 0.05,
                      grid: int = 128) -> float:
    """Power of the two-sided Welch test by formula: with normal seeds the difference of
    means ``D ~ N(delta, sd_a^2/n_a + sd_b^2/n_b)`` is independent of the sample variances
    ``s_i^2 ~ sd_i^2 chi^2_{n_i-1} / (n_i - 1)``, which fix the test's standard error ``se`` and
    Welch-Satterthwaite degrees of freedom ``df``; so

        power = E[ Phi((delta - c) / sigma) + Phi((-delta - c) / sigma) ],  c = t_{1-alpha/2, df} se,

    the expectation over the two chi-square variables, taken on a ``grid`` x ``grid`` of their
    quantiles (midpoints in probability). Deterministic; equal to `welch_power` within the
    simulation's error."""
    return welch_power_curve(sd_a, sd_b, n_a, n_b, alpha=alpha, grid=grid)(delta)


def welch_power_curve(sd_a: float, sd_b: float, n_a: int, n_b: int, *, alpha: float = 0.05, grid: int = 128):
    """`welch_power_exact` as a function of the shift ``delta``: the thresholds ``c`` on the
    grid do not depend on it and are computed once (a bisection over the effect calls the
    curve about 20 times; the grid's ``grid^2`` t quantiles were most of its time)."""
    if n_a < 2 or n_b < 2:
        raise ValueError(f"Welch's test needs at least 2 seeds per arm, got {n_a} and {n_b}")
    if sd_a < 0 or sd_b < 0 or sd_a + sd_b == 0:
        raise ValueError(f"Welch's power needs spreads >= 0, not both 0 (got {sd_a}, {sd_b})")
    u = (np.arange(grid) + 0.5) / grid
    va = (sd_a ** 2 / n_a) * sps.chi2.ppf(u, n_a - 1)[:, None] / (n_a - 1)  # s_a^2 / n_a
    vb = (sd_b ** 2 / n_b) * sps.chi2.ppf(u, n_b - 1)[None, :] / (n_b - 1)
    se = np.sqrt(va + vb)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    c = sps.t.ppf(1 - alpha / 2, np.where(np.isfinite(df), df, np.inf)) * se
    sigma = math.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b)
    return lambda delta: float(np.mean(sps.norm.cdf((delta - c) / sigma) + sps.norm.cdf((-delta - c) / sigma)))


def rank_power(delta: float, sd_a: float, sd_b: float, n_a: int, n_b: int, *, alpha: float = 0.05,
               sims: int = 2_000, seed: int = 0) -> float:
    """Power of the exact two-sided rank rule (`bnjax.ranks.rank_p`) to detect a shift
    ``delta`` of normal seeds with spreads ``sd_a``, ``sd_b``: the share of ``sims`` simulated
    designs (generator seeded with ``seed``) it rejects. 0 when no outcome of an n_a vs n_b
    design can reach ``alpha`` (`rank_can_decide`); with both spreads 0 the arms separate
    exactly, so 1 for any nonzero shift."""
    if not rank_can_decide(n_a, n_b, alpha=alpha):
        return 0.0
    if sd_a == 0 and sd_b == 0:
        return float(delta != 0)
    rng = np.random.default_rng(seed)
    a = rng.normal(delta, sd_a, (sims, n_a))
    b = rng.normal(0.0, sd_b, (sims, n_b))
    return float(np.mean(ranks.rank_p(a, b) <= alpha))


def detectable(power_at, *, target: float = 0.8, hi: float, tol: float = 1e-3) -> float | None:
    """The smallest effect ``d`` in (0, ``hi``] with ``power_at(d) >= target`` (bisection;
    power grows with the effect), to ``tol`` times ``hi``; None when even ``hi`` falls short."""
    if power_at(hi) < target:
        return None
    lo, stop = 0.0, tol * hi
    while hi - lo > stop:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if power_at(mid) >= target else (mid, hi)
    return hi


def binom_power(rate: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of the seed-count rule (`bnjax.verdicts.divergence`: the exact two-sided
    binomial test of a divergence rate against 1/2) when each seed diverges with ``rate``."""
    k = np.arange(n + 1)
    rejects = np.array([sps.binomtest(int(i), n, 0.5).pvalue <= alpha for i in k])
    return float(np.sum(sps.binom.pmf(k, n, rate)[rejects]))


def power_curve(rule: str, sds: tuple[float, ...], n: tuple[int, ...], *, alpha: float = 0.05):
    """The power of a design as a function of the effect (see `design`), or None where the
    rule has no answer (fewer than 2 seeds an arm; Welch without any spread)."""
    if rule == "seed count":
        (m,) = n
        return lambda d: binom_power(0.5 + d, m, alpha=alpha)
    if min(n) < 2:
        return None
    sd_a, sd_b = sds
    if rule == "welch":
        if sd_a == 0 and sd_b == 0:
            return None
        return welch_power_curve(sd_a, sd_b, n[0], n[1], alpha=alpha)
    return lambda d: rank_power(d, sd_a, sd_b, n[0], n[1], alpha=alpha)


def design(rule: str, sds: tuple[float, ...], n: tuple[int, ...], *, effect: float | None,
           alpha: float = 0.05, target: float = 0.8) -> dict:
    """What a verdict's design can do: ``{"power": at effect, "detectable": the smallest
    effect with ``target`` power, "min_p": the smallest attainable p}`` for a rule of
    `bnjax.verdicts` ("welch", "rank" or "seed count"), the arms' per-seed spreads ``sds`` and
    seeds ``n``. Effects are shifts of the arms' difference in their units (a log ratio for a
    speed-up; for the seed count, the divergence rate's distance from 1/2). Welch: by formula
    (`welch_power_exact`); rank: by seeded simulation (`rank_power`); seed count: exactly
    (`binom_power`). None where a rule has no answer (no spread for Welch; no effect)."""
    mp = min_p(rule, n)
    curve = power_curve(rule, sds, n, alpha=alpha)
    if curve is None:
        return {"power": None, "detectable": None, "min_p": mp if rule == "seed count" else None}
    hi = 0.5 if rule == "seed count" else 20 * math.hypot(*sds) + (abs(effect) if effect else 0.0) + 1e-9
    return {"power": None if effect is None else curve(effect), "min_p": mp,
            "detectable": detectable(curve, target=target, hi=hi)}


def seeds_for(rule: str, sds: tuple[float, ...], *, effect: float, target: float = 0.8, alpha: float = 0.05,
              max_n: int = 100) -> int | None:
    """The fewest seeds per arm (equal arms) whose design reaches ``target`` power at
    ``effect``; None if none up to ``max_n`` does (a linear scan: a rank or count rule's power
    is not monotone in n at every step)."""
    for n in range(2, max_n + 1):
        curve = power_curve(rule, sds, (n,) if rule == "seed count" else (n, n), alpha=alpha)
        if curve is not None and curve(effect) >= target:
            return n
    return None


def min_p(rule: str, n: tuple[int, ...]) -> float | None:
    """The smallest p-value a design of ``rule`` with seeds ``n`` can give: ``2 / 2^n`` for the
    seed count (every seed, or none, diverged), `rank_min_p` for the rank rule, None for Welch
    (no floor)."""
    if rule == "seed count":
        return min(1.0, 2 * 0.5 ** n[0])
    return rank_min_p(*n) if rule == "rank" and min(n) >= 1 else None


def rank_min_p(n: int, m: int) -> float:
    """The smallest two-sided p-value the exact rank rule can give for n vs m seeds:
    ``2 / C(n + m, n)`` (the arms do not overlap), at most 1."""
    return min(1.0, 2.0 / math.comb(n + m, n))


def rank_can_decide(n: int, m: int, *, alpha: float = 0.05) -> bool:
    """Whether any outcome of an n vs m exact rank test can reach ``p <= alpha``."""
    return rank_min_p(n, m) <= alpha
