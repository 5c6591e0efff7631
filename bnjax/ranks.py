"""The exact rank rule: the Hodges-Lehmann shift, its distribution-free interval and the
p-value that agrees with that interval, all from the pairwise differences of two samples.

For samples x (n values) and y (m values) let ``d = {x_i - y_j}`` (N = n m pairwise
differences) and ``F(u) = P(U <= u)`` the exact null distribution of the Mann-Whitney
statistic without ties (`u_cdf`). The 95% interval is ``[d_(k), d_(N-k+1)]`` with k the
largest integer such that ``F(k - 1) <= 2.5%`` (Bauer 1972). The two-sided p-value of a
shift ``delta`` is

    p(delta) = min(1, 2 min(F(L), F(G))),  L = #{d <= delta},  G = #{d >= delta},

ties counted against rejecting on both sides. Then ``p(delta) <= 5%`` exactly when delta lies
outside the interval (L <= k - 1 iff delta < d_(k)), so an interval and its p-value never
disagree, with or without ties; without ties the test has exactly the Mann-Whitney test's
level, with ties it is conservative. Infinite values are allowed (a diverged seed's loss):
two infinities of the same sign tie.

numpy only.
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95


def pairwise(x, y) -> np.ndarray:
    """All differences ``x_i - y_j`` (flattened); ``inf - inf`` counts as 0 (a tie)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    with np.errstate(invalid="ignore"):
        d = x[..., :, None] - y[..., None, :]
    d = np.where(np.isnan(d), 0.0, d)
    return d.reshape(*d.shape[:-2], -1)


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


def hodges_lehmann(x, y) -> tuple[float, float, float]:
    """The Hodges-Lehmann shift of ``x`` over ``y`` (median of the pairwise differences)
    and its exact distribution-free 95% interval ``[d_(k), d_(N-k+1)]`` (module docstring).
    Returns ``(estimate, low, high)``; the interval is (-inf, inf) when no k exists (3 vs 3)."""
    d = np.sort(pairwise(x, y))
    cdf = u_cdf(len(x), len(y))
    ks = np.flatnonzero(cdf <= (1 - LEVEL) / 2)  # u with P(U <= u) <= alpha/2; k = u + 1
    est = float(np.median(d))
    if ks.size == 0:
        return est, -math.inf, math.inf
    k = int(ks[-1]) + 1
    return est, float(d[k - 1]), float(d[d.size - k])


def rank_p(x, y, delta: float = 0.0) -> float | np.ndarray:
    """The two-sided p-value of the shift ``delta`` (module docstring): at most 5% exactly
    when delta lies outside `hodges_lehmann`'s interval. ``x``, ``y`` may carry leading batch
    axes (many designs at once: shapes (..., n) and (..., m)); returns a float or an array."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    d = pairwise(x, y)
    cdf = u_cdf(x.shape[-1], y.shape[-1])
    below, above = np.sum(d <= delta, axis=-1), np.sum(d >= delta, axis=-1)
    p = np.minimum(1.0, 2 * np.minimum(cdf[below], cdf[above]))
    return float(p) if p.ndim == 0 else p
