"""Power of the verdict rules' designs, against simulation and brute-force enumeration."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from bnjax import power, ranks, verdicts


def test_welch_power_is_the_rejection_rate_of_welch_tests_and_the_formula_where_it_holds():
    """Simulated power against an independent simulation (another generator, scipy's test
    one design at a time would be slow: the vectorised test is the same function) and, with
    many seeds, against the noncentral-t formula; with no effect, the test's level."""
    for delta, sd_a, sd_b, n_a, n_b in [(0.01, 0.008, 0.012, 5, 5), (0.02, 0.01, 0.03, 3, 6), (0.03, 0.02, 0.02, 3, 3)]:
        rng = np.random.default_rng(99)
        a, b = rng.normal(delta, sd_a, (20_000, n_a)), rng.normal(0.0, sd_b, (20_000, n_b))
        rate = float(np.mean(sps.ttest_ind(a, b, axis=1, equal_var=False).pvalue <= 0.05))
        assert power.welch_power(delta, sd_a, sd_b, n_a, n_b) == pytest.approx(rate, abs=0.012)  # 3.5 SE at p=.5
    assert power.welch_power(0.003, 0.01, 0.012, 40, 40) == pytest.approx(
        power.welch_power_approx(0.003, 0.01, 0.012, 40, 40), abs=0.012)
    assert power.welch_power_approx(0.03, 0.02, 0.02, 3, 3) - power.welch_power(0.03, 0.02, 0.02, 3, 3) > 0.04
    assert power.welch_power(0.0, 0.01, 0.01, 12, 12) == pytest.approx(0.05, abs=0.006)  # the level (n large
    assert power.welch_power(0.0, 0.01, 0.01, 12, 12, alpha=0.2) == pytest.approx(0.2, abs=0.01)  # enough to hold)


def test_seeds_for_power_is_the_first_n_that_reaches_it():
    n = power.welch_seeds_for(0.0257, 0.0165, 0.0228)  # CIFAR-10 hflip vs none, final accuracy (issue 30)
    assert power.welch_power(0.0257, 0.0165, 0.0228, n, n) >= 0.8 > power.welch_power(0.0257, 0.0165, 0.0228, n - 1,
                                                                                         n - 1)
    rng = np.random.default_rng(1)  # simulated at that n: about 80% of Welch tests reject
    a, b = rng.normal(0.0257, 0.0165, (20_000, n)), rng.normal(0.0, 0.0228, (20_000, n))
    assert float(np.mean(sps.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05)) == pytest.approx(0.8, abs=0.03)
    assert power.welch_seeds_for(0.0001, 0.05, 0.05, max_n=50) is None
    with pytest.raises(ValueError, match="at least 2 seeds per arm"):
        power.welch_power(0.1, 0.1, 0.1, 1, 5)


@pytest.mark.parametrize("n, m", [(3, 3), (4, 4), (3, 5), (2, 6)])
def test_the_rank_rule_s_smallest_p_is_that_of_separated_arms(n, m):
    """By enumeration: the smallest p-value verdicts' exact rank test gives over every way
    the n + m seeds can rank equals 2 / C(n + m, n)."""
    smallest = min(ranks.rank_p(np.asarray([float(i) for i in idx]),
                                    np.asarray([float(i) for i in range(n + m) if i not in idx]))
                   for idx in itertools.combinations(range(n + m), n))
    assert power.rank_min_p(n, m) == pytest.approx(smallest)
    assert power.rank_can_decide(n, m) == (smallest <= 0.05)
    assert power.rank_can_decide(3, 3) is False and power.rank_can_decide(4, 4) is True
    assert math.isclose(power.rank_min_p(1, 1), 1.0)


@pytest.mark.parametrize("delta, sd_a, sd_b, n_a, n_b", [(0.03, 0.02, 0.02, 3, 3), (0.02, 0.01, 0.03, 3, 6),
                                                         (0.01, 0.008, 0.012, 5, 5), (0.005, 0.004, 0.004, 8, 8)])
def test_welch_power_by_formula_agrees_with_simulation(delta, sd_a, sd_b, n_a, n_b):
    """The formula integrates over the sample variances; an independent simulation of the
    same design (another generator, 40,000 designs: SE <= 0.0025) agrees within 0.01, where
    the noncentral-t shortcut is off by up to 0.06 at 3 vs 3."""
    rng = np.random.default_rng(2024)
    a, b = rng.normal(delta, sd_a, (40_000, n_a)), rng.normal(0.0, sd_b, (40_000, n_b))
    rate = float(np.mean(sps.ttest_ind(a, b, axis=1, equal_var=False).pvalue <= 0.05))
    assert power.welch_power_exact(delta, sd_a, sd_b, n_a, n_b) == pytest.approx(rate, abs=0.01)
    assert power.welch_power_exact(0.0, sd_a, sd_b, n_a, n_b) <= 0.05 + 0.002  # Welch's level holds (conservative)


def test_rank_power_is_the_rejection_rate_of_the_exact_test_and_reproducible():
    rng = np.random.default_rng(77)  # independent: scipy's exact Mann-Whitney test, one design at a time
    a, b = rng.normal(0.01, 0.01, (1500, 5)), rng.normal(0.0, 0.012, (1500, 5))
    rate = np.mean([sps.mannwhitneyu(x, y, method="exact").pvalue <= 0.05 for x, y in zip(a, b, strict=True)])
    got = power.rank_power(0.01, 0.01, 0.012, 5, 5, sims=4000)
    assert got == pytest.approx(rate, abs=0.04)  # two simulations: SE about 0.013 each
    assert power.rank_power(0.01, 0.01, 0.012, 5, 5, seed=3) == power.rank_power(0.01, 0.01, 0.012, 5, 5, seed=3)
    assert power.rank_power(0.01, 0.01, 0.012, 3, 3) == 0.0  # the 3 vs 3 design can never reject
    assert power.rank_power(1.0, 0.0, 0.0, 4, 4) == 1.0 and power.rank_power(0.0, 0.0, 0.0, 4, 4) == 0.0


def test_a_speedup_design_s_power_is_simulated_reproducibly():
    """The speed-up rule is the rank rule on log steps: its design's power at 1.2x from the
    pilot's spread of log steps, the same in every call (seeded), growing with seeds."""
    sds = (0.15, 0.2)
    first = power.design("rank", sds, (5, 5), effect=math.log(1.2))
    assert first == power.design("rank", sds, (5, 5), effect=math.log(1.2))
    more = power.design("rank", sds, (10, 10), effect=math.log(1.2))
    assert more["power"] > first["power"] and more["detectable"] < first["detectable"]
    assert power.rank_power(first["detectable"], *sds, 5, 5) >= 0.8 > power.rank_power(first["detectable"] * 0.97,
                                                                                         *sds, 5, 5)
    assert power.design("rank", sds, (3, 3), effect=0.1) == {"power": 0.0, "detectable": None, "min_p": 0.1}


def test_seed_count_power_is_binomial():
    assert power.binom_power(0.9, 6) == pytest.approx(0.9 ** 6 + 0.1 ** 6)  # 6/6 or 0/6 reject at 5%
    assert power.binom_power(0.9, 5) == 0.0  # 5/5 gives p = 0.0625
    d = power.design("seed count", (), (8,), effect=0.4)
    assert d["min_p"] == pytest.approx(2 / 256) and d["power"] == pytest.approx(power.binom_power(0.9, 8))
    assert power.binom_power(0.5 + d["detectable"], 8) >= 0.8
