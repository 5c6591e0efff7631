"""Verdict rules (`bnjax.verdicts`) against independent references (scipy, brute-force
enumeration, hand computations) and the cases in which the old rules misled."""

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from bnjax import report, verdicts
from bnjax.verdicts import Verdict


def test_welch_interval_by_hand_and_the_three_outcomes():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.90, 0.01, 5), rng.normal(0.88, 0.01, 5)
    v = verdicts.compare(a, b, claim="a above b")
    va, vb = a.var(ddof=1) / 5, b.var(ddof=1) / 5  # Welch-Satterthwaite by hand
    dof = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 4)
    half = sps.t.ppf(0.975, dof) * math.sqrt(va + vb)
    diff = a.mean() - b.mean()
    assert (v.estimate, v.low, v.high) == pytest.approx((diff, diff - half, diff + half))
    assert v.rule == "welch" and v.outcome == "Supported" and v.n == (5, 5)
    assert v.p == pytest.approx(2 * sps.t.sf(diff / math.sqrt(va + vb), dof))
    assert verdicts.compare(b, a, claim="b above a").outcome == "Contradicted"
    assert verdicts.compare(a, a + rng.normal(0, 0.02, 5), claim="x").outcome == "Inconclusive"
    assert verdicts.compare(b, a, claim="b lower", higher=False).outcome == "Supported"
    assert verdicts.compare([0.9], [0.8], claim="one seed").outcome == "Inconclusive"  # no interval from n = 1


def test_margin_shifts_the_bar():
    rng = np.random.default_rng(0)
    a, b = 0.970 + rng.normal(0, 0.002, 6), 0.965 + rng.normal(0, 0.002, 6)
    assert verdicts.compare(a, b, claim="c").outcome == "Supported"
    assert verdicts.compare(a, b, claim="c", margin=0.01).outcome == "Contradicted"  # not 1 point above
    assert verdicts.compare(a, b, claim="c", margin=-0.01).outcome == "Supported"
    assert "needs it above +1.00" in report.verdict_line(verdicts.compare(a, b, claim="c", margin=0.01))


def test_exact_u_distribution_equals_brute_force_enumeration():
    for n, m in ((3, 3), (4, 5), (5, 5)):
        counts = np.zeros(n * m + 1)
        for xs in itertools.combinations(range(n + m), n):  # ranks of the first sample
            u = sum(r for r in xs) - n * (n - 1) / 2
            counts[int(u)] += 1
        np.testing.assert_allclose(verdicts.u_cdf(n, m), np.cumsum(counts) / counts.sum())


def test_hodges_lehmann_interval_inverts_the_exact_mann_whitney_test():
    """The interval is the set of shifts d for which the exact two-sided test of x vs
    y + d does not reject at 5% (scipy's exact test, on a fine grid)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(1.0, 0.3, 5), rng.normal(0.0, 0.3, 5)
    est, low, high = verdicts.hodges_lehmann(x, y)
    assert est == pytest.approx(np.median(x[:, None] - y[None, :]))
    grid = np.linspace(low - 0.5, high + 0.5, 4001)
    kept = [d for d in grid if sps.mannwhitneyu(x, y + d, method="exact").pvalue > 0.05]
    assert min(kept) == pytest.approx(low, abs=1e-3) and max(kept) == pytest.approx(high, abs=1e-3)
    assert verdicts.hodges_lehmann(x[:3], y[:3])[1:] == (-math.inf, math.inf)  # n = 3 vs 3: nothing excluded


def test_case1_span_of_a_collapsed_arm_is_not_the_whole_grid():
    plain = np.array([[0.97, 0.97, 0.5, 0.1]] * 5) + np.arange(5)[:, None] * 1e-4
    bn_dead = np.full((5, 4), 0.1)  # at chance at every rate
    v, spans = verdicts.span(plain, bn_dead, within=0.01, claim="BN wider")
    assert spans["spans"] == {"a": (0, 1), "b": None} and spans["seed_widths"]["b"] == [0] * 5
    assert v.outcome == "Contradicted" and v.estimate == -2  # the old rule said Supported, +2.00 decades
    holes = np.array([0.97, 0.5, 0.97, 0.97])  # a bad setting between good ones breaks the span
    assert verdicts.good_span(holes, 0.97, within=0.01) == (2, 3)
    # n = 3 vs 3 identical widths: no zero-width interval, the rank rule cannot decide
    v3, _ = verdicts.span(np.array([[0.97, 0.97, 0.1]] * 3), np.array([[0.97, 0.97, 0.97]] * 3), within=0.01,
                          claim="c")
    assert v3.outcome == "Inconclusive" and v3.low < 0 < v3.high


def test_case2_neither_arm_reaching_is_inconclusive_in_words():
    v = verdicts.speedup([None, None, None], [None, None, None], claim="faster")
    assert v.outcome == "Inconclusive" and math.isnan(v.estimate)
    assert "neither arm's median seed reached the target" in report.verdict_line(v)
    fast = verdicts.speedup([1000, 1100, 1200, 1000, 1100], [200, 250, 300, 200, 220], claim="faster")
    assert fast.estimate == pytest.approx(1100 / 220) and 1 < fast.low <= fast.estimate <= fast.high
    assert fast.outcome == "Supported"
    # the percentile bootstrap by hand: resample each arm's seeds, ratio of medians, 2.5/97.5%
    rng = np.random.default_rng(7)
    a, b = np.array([1000, 1100, 1200, 1000, 1100.0]), np.array([200, 250, 300, 200, 220.0])
    boot = [np.median(rng.choice(a, 5)) / np.median(rng.choice(b, 5)) for _ in range(4000)]
    assert fast.low == pytest.approx(np.percentile(boot, 2.5), rel=0.08)
    assert fast.high == pytest.approx(np.percentile(boot, 97.5), rel=0.08)
    slow = verdicts.speedup([1000, 1100, 1200], [None, None, None], claim="faster")
    assert slow.outcome == "Contradicted" and slow.estimate == 0.0


def test_case3_diverged_seed_ranks_worst_in_a_loss_verdict():
    v = verdicts.compare([0.10, 0.11, math.inf], [0.20, 0.21, 0.22], claim="lower loss", higher=False, unit="nats")
    assert v.outcome != "Supported" and v.diverged == (1, 0) and v.rule == "rank"  # the old rule: Supported, n = 2
    with pytest.raises(ValueError, match="NaN"):
        verdicts.compare([0.1, math.nan], [0.2, 0.3], claim="c")  # a dropped seed is refused, not ignored


def test_case4_empty_input_is_refused():
    with pytest.raises(ValueError, match="no seeds"):
        verdicts.divergence([], claim="d")
    with pytest.raises(ValueError, match="no values"):
        verdicts.compare([], [0.5, 0.6], claim="c")
    assert verdicts.divergence([10, 20, 30], claim="d").outcome == "Supported"
    assert verdicts.divergence([None, 20, None], claim="d").outcome == "Inconclusive"
    assert verdicts.divergence([None, None], claim="d").outcome == "Contradicted"


def test_case5_false_discovery_control_by_hand():
    def v(p, outcome="Supported"):
        return Verdict(claim="c", outcome=outcome, estimate=1.0, low=0.5, high=1.5, unit="", n=(5, 5), rule="welch",
                       p=p)

    # Benjamini-Hochberg by hand: sorted p * m / rank, then the running minimum from the top
    out = verdicts.control_fdr([v(0.01), v(0.04), v(0.045), v(0.9, "Inconclusive"), v(None, "Supported")])
    assert [o.fdr_survives for o in out] == [True, False, False, None, None]  # 0.04, 0.06, 0.06, 0.9
    lines = {"s": {"report": ["text", *out]}}
    counts = report.finalize(lines)
    assert counts == {"tested": 5, "with_p": 4, "decided": 4, "decided_with_p": 3, "survive": 1}
    assert "Does **not** survive" in lines["s"]["report"][2] and "survive" not in lines["s"]["report"][1]
    assert [Verdict.from_dict(d).fdr_survives for d in lines["s"]["verdicts"]] == [True, False, False, None, None]


def test_case6_bimodal_seeds_stay_within_accuracy_and_count_chance():
    # the example: two seeds at chance beside trained ones
    ours, other = [0.95, 0.96, 0.10], [0.10, 0.11, 0.12]
    v = verdicts.compare(ours, other, claim="c", chance=0.1)
    assert v.rule == "rank" and -1.0 <= v.low <= v.high <= 1.0
    assert v.at_chance == (1, 3) and v.outcome == "Inconclusive"  # n = 3: the rank interval excludes nothing
    # even Welch (every seed trained) never reaches past what accuracy allows
    w = verdicts.compare([0.99, 0.2, 0.98], [0.3, 0.25, 0.31], claim="c")
    assert w.rule == "welch" and w.high <= 1.0


def test_verdict_round_trips_through_strict_json():
    v = verdicts.compare([0.10, 0.11, math.inf], [0.2, 0.21, 0.22], claim="c", higher=False, unit="nats")
    d = json.loads(json.dumps(v.to_dict(), allow_nan=False))
    assert d["claim"] == "c" and d["outcome"] in verdicts.OUTCOMES
    assert Verdict.from_dict(d) == v


def test_an_interval_that_touches_the_bar_decides_nothing():
    for margin in (0.0, 1.0):
        assert verdicts._outcome(margin, margin + 2, margin=margin, higher=True) == "Inconclusive"
        assert verdicts._outcome(margin - 2, margin, margin=margin, higher=True) == "Inconclusive"
        assert verdicts._outcome(margin + 1e-9, margin + 2, margin=margin, higher=True) == "Supported"
        assert verdicts._outcome(-margin - 2, -margin, margin=margin, higher=False) == "Inconclusive"
        assert verdicts._outcome(-margin, -margin + 2, margin=margin, higher=False) == "Inconclusive"
    # whole-number spans: an interval [0, 1] settings is not "wider"
    v = verdicts.compare([4, 4, 4, 4, 4], [3, 3, 4, 4, 4], claim="wider", unit="settings", rank=True,
                         bounds=(0.0, 8.0))
    assert v.low == 0 and v.outcome == "Inconclusive"


def test_a_claim_of_lower_values_is_judged_against_minus_the_margin():
    """Review case 4: ``higher=False, margin=m`` is the claim ``ours - other < -m``."""
    y = np.array([.800, .802, .804, .806, .808])
    for ours in (y - 0.005, y + 0.005):  # 0.5 points lower, or higher: neither is 1 point lower
        v = verdicts.compare(ours, y, claim="lower by a point", higher=False, margin=0.01)
        assert v.outcome == "Contradicted", (v.low, v.high)
        assert "below -1.00" in report.verdict_line(v)
    assert verdicts.compare(y - 0.02, y, claim="c", higher=False, margin=0.01).outcome == "Supported"


def test_p_values_test_against_the_margin_on_the_claimed_side():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.92, 0.01, 6), rng.normal(0.90, 0.01, 6)
    for higher, margin in ((True, 0.01), (True, -0.01), (False, 0.01), (False, 0.0)):
        v = verdicts.compare(x, y, claim="c", higher=higher, margin=margin)
        bar = margin if higher else -margin  # the difference the claim must clear
        assert v.rule == "welch" and v.p == pytest.approx(sps.ttest_ind(x - bar, y, equal_var=False).pvalue)
        r = verdicts.compare(x, y, claim="c", higher=higher, margin=margin, rank=True)
        assert r.rule == "rank" and r.p == pytest.approx(sps.mannwhitneyu(x - bar, y, method="exact").pvalue)


def test_span_reference_is_the_best_mean_of_either_arm():
    """The reference comes from whichever arm is better: here b (arm a alone would set it
    6 points lower and count every setting of a as good)."""
    a = np.tile([0.80, 0.82, 0.84, 0.82, 0.80], (3, 1))
    b = np.tile([0.60, 0.89, 0.90, 0.89, 0.60], (3, 1))
    v, info = verdicts.span(a, b, claim="b wider", within=0.02)
    assert info["reference"] == pytest.approx(0.90)
    assert info["seed_widths"] == {"a": [0, 0, 0], "b": [3, 3, 3]}
    assert info["spans"] == {"a": None, "b": (1, 3)}


def test_speedup_p_value_is_two_sided_over_the_bootstrap_distribution():
    base, arm = [400, 500, 900, 300], [300, 200, 600, 400]
    v = verdicts.speedup(base, arm, claim="faster", seed=5)
    a, b = np.asarray(base, float), np.asarray(arm, float)
    res = sps.bootstrap((a, b), lambda x, y, axis=-1: np.median(x, axis=axis) / np.median(y, axis=axis),
                        vectorized=True, paired=False, method="percentile", n_resamples=2000,
                        rng=np.random.default_rng(5))
    dist = res.bootstrap_distribution
    assert 0 < np.mean(dist <= 1.0) < 0.5  # both sides occur: one- and two-sided differ
    assert v.p == pytest.approx(2 * min(np.mean(dist <= 1.0), np.mean(dist >= 1.0)))
    assert (v.low, v.high) == pytest.approx((res.confidence_interval.low, res.confidence_interval.high))
    assert v.estimate == pytest.approx(np.median(a) / np.median(b))


def test_compare_arms_passes_chance_and_diverged_seeds_of_each_arm():
    ours = {"per_seed": {"final_test_accuracy": [0.95, 0.96, 0.12, 0.94]}, "chance": 0.1,
            "diverged_at": [None, None, None, None]}
    other = {"per_seed": {"final_test_accuracy": [0.10, 0.90, 0.91, 0.92], "final_train_loss": [math.inf, 1, 1, 1]},
             "chance": 0.1, "diverged_at": [120, None, None, None]}
    ours["per_seed"]["final_train_loss"] = [0.1, 0.1, 0.2, 0.1]
    v = verdicts.compare_arms(ours, other, "final_test_accuracy", claim="c")
    assert v.diverged == (0, 1) and v.at_chance == (1, 0) and v.rule == "rank" and v.n == (4, 4)
    loss = verdicts.compare_arms(ours, other, "final_train_loss", claim="c", higher=False, unit="nats")
    assert loss.at_chance == (0, 0) and loss.diverged == (0, 1)  # no chance level for a loss
    trained = {"per_seed": {"final_test_accuracy": [0.95, 0.96, 0.97]}, "chance": 0.1, "diverged_at": [None] * 3}
    assert verdicts.compare_arms(trained, {**trained, "per_seed": {"final_test_accuracy": [0.9, 0.91, 0.92]}},
                                 "final_test_accuracy", claim="c").rule == "welch"


def test_one_seed_in_an_arm_gives_no_interval_and_says_so():
    for ours, other in (([0.9], [0.8, 0.7]), ([0.9, 0.8], [0.7]), ([0.9], [0.7])):
        v = verdicts.compare(ours, other, claim="c")
        assert v.outcome == "Inconclusive" and v.rule == "rank" and v.p is None
        assert v.detail == "too few seeds for an interval" and math.isnan(v.low) and math.isnan(v.high)
        assert v.estimate == pytest.approx(float(np.median(np.subtract.outer(ours, other))))  # Hodges-Lehmann
        assert v.n == (len(ours), len(other))


def test_an_empty_or_nan_arm_is_named():
    with pytest.raises(ValueError, match="^ours: no values"):
        verdicts.compare([], [0.5, 0.6], claim="c")
    with pytest.raises(ValueError, match="^other: no values"):
        verdicts.compare([0.5, 0.6], [], claim="c")
    with pytest.raises(ValueError, match="^ours: a missing \\(NaN\\) value"):
        verdicts.compare([0.5, math.nan], [0.5, 0.6], claim="c")
    with pytest.raises(ValueError, match="^other: a missing \\(NaN\\) value"):
        verdicts.compare([0.5, 0.6], [0.5, math.nan], claim="c")


def test_welch_needs_two_seeds_per_arm_and_some_spread_else_the_rank_rule():
    assert verdicts.compare([0.9, 0.8], [0.7, 0.6], claim="c").rule == "welch"  # n = 2 each is enough
    assert verdicts.compare([0.9, 0.9], [0.8, 0.7], claim="c").rule == "welch"  # one arm without spread
    assert verdicts.compare([0.8, 0.7], [0.9, 0.9], claim="c").rule == "welch"
    same = verdicts.compare([0.9, 0.9, 0.9], [0.8, 0.8, 0.8], claim="c")  # no spread at all: Welch is undefined
    assert same.rule == "rank" and same.estimate == pytest.approx(0.1)
    wide = verdicts.compare([3.0, 1.0], [0.0, 0.0], claim="c", unit="x")  # spread above 1 in the values' units
    assert wide.rule == "welch"


def test_intervals_are_clipped_to_the_range_of_a_difference_only_where_one_is_known():
    # n = 2 per arm: Welch's interval is wide (t with about 1 degree of freedom)
    x, y = [0.9, 0.2], [0.1, 0.8]
    raw = sps.ttest_ind(x, y, equal_var=False).confidence_interval(confidence_level=0.95)
    assert raw.low < -1 and raw.high > 1
    points = verdicts.compare(x, y, claim="c")  # accuracies: a difference lies in [-1, 1]
    assert (points.low, points.high) == (-1.0, 1.0)
    big = [100 * v for v in x], [100 * v for v in y]
    unbounded = verdicts.compare(*big, claim="c", unit="x")  # no range for other units
    assert unbounded.low == pytest.approx(100 * raw.low) and unbounded.high == pytest.approx(100 * raw.high)
    given = verdicts.compare([2 + 3 * v for v in x], [2 + 3 * v for v in y], claim="c", unit="x", bounds=(2.0, 5.0))
    assert (given.low, given.high) == (-3.0, 3.0)  # the width of the range, not its end
    mine = verdicts.compare(*big, claim="c", bounds=(0.0, 100.0))  # given bounds win over the points default
    assert mine.low == pytest.approx(max(100 * raw.low, -100)) and mine.high == pytest.approx(min(100 * raw.high, 100))


def test_an_exact_rank_interval_that_cannot_exclude_any_shift_says_so():
    v = verdicts.compare([0.9, 0.91, 0.92], [0.5, 0.51, 0.52], claim="c", rank=True, unit="x")  # n = 3 vs 3
    assert math.isinf(v.low) and math.isinf(v.high) and v.outcome == "Inconclusive"
    assert v.detail == "at n = 3 vs 3 the exact rank interval cannot exclude any shift"
    one_sided = verdicts.compare([1.0, 1.0, 1.0, 1.0, math.inf], [2.0] * 5, claim="c", higher=False, unit="nats")
    assert math.isfinite(one_sided.low) and math.isinf(one_sided.high) and one_sided.detail == ""


def test_compare_arms_claims_higher_values_by_default():
    hi = {"per_seed": {"final_test_accuracy": [0.95, 0.96, 0.97]}, "chance": 0.1, "diverged_at": [None] * 3}
    lo = {**hi, "per_seed": {"final_test_accuracy": [0.90, 0.91, 0.92]}}
    v = verdicts.compare_arms(hi, lo, "final_test_accuracy", claim="c")
    assert v.higher is True and v.outcome == "Supported"


def test_the_rank_p_value_equals_exact_enumeration_with_ties_and_beyond_the_default_resamples():
    """Two-sided exact permutation p-value of U, by enumerating every split of the pooled
    values: with ties (where an asymptotic method would differ) and at 8 vs 8 (12,870
    splits, more than scipy's default 9,999 random resamples); all-equal arms give p = 1."""
    def brute(x, y):
        z, n = np.concatenate([x, y]), len(x)

        def u(a, b):
            return float(np.sum((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])))
        obs = u(np.asarray(x, float), np.asarray(y, float))
        us = []
        for idx in itertools.combinations(range(len(z)), n):
            mask = np.zeros(len(z), bool)
            mask[list(idx)] = True
            us.append(u(z[mask], z[~mask]))
        us = np.asarray(us)
        return min(1.0, 2 * min(np.mean(us <= obs + 1e-9), np.mean(us >= obs - 1e-9)))

    ties = (np.array([1.0, 1.0, 2.0, 3.0, 3.0]), np.array([1.0, 2.0, 2.0, 2.0, 4.0]))
    wide = (np.arange(8.0) + 0.5, np.array([0.0, 1, 2, 3, 8, 9, 10, 11]) + 0.25)
    for x, y in (ties, wide):
        assert verdicts._rank_p(x, y) == pytest.approx(brute(x, y), abs=1e-12)
    assert verdicts._rank_p(np.array([0.5, 0.5]), np.array([0.5, 0.5, 0.5])) == 1.0


def test_a_ratio_of_two_arms_that_never_reached_is_one():
    inf = math.inf
    got = verdicts._ratio(np.array([[inf, inf, 4.0], [2.0, 3.0, 6.0]]), np.array([[inf, inf, 9.0], [1.0, 2.0, 2.0]]))
    assert got.tolist() == [1.0, 1.5]
    assert verdicts._outcome(math.nan, 1.0, margin=0.0, higher=True) == "Inconclusive"
    assert verdicts._outcome(0.5, math.nan, margin=0.0, higher=False) == "Inconclusive"


def test_verdicts_refuse_unknown_outcomes_and_fields_and_write_lists():
    with pytest.raises(ValueError, match="outcome 'Maybe' is not one of"):
        Verdict(claim="c", outcome="Maybe", estimate=0.0, low=0.0, high=0.0, unit="points", n=(1, 1), rule="welch")
    v = verdicts.compare([0.9, 0.8, 0.85], [0.7, 0.6, 0.65], claim="c")
    d = v.to_dict()
    assert d["n"] == [3, 3] and d["diverged"] == [0, 0] and d["at_chance"] == [0, 0]
    with pytest.raises(ValueError, match=r"unknown verdict fields \['colour'\]"):
        Verdict.from_dict({**d, "colour": "red"})
    div = verdicts.divergence([10, None], claim="d")
    assert div.rule == "seed count" and div.unit == "seeds"


def test_good_span_takes_the_longest_run_and_the_first_of_equal_ones():
    assert verdicts.good_span([1, 1, 0, 1, 1], 1.0, within=0.0) == (0, 1)  # equal runs: the first
    assert verdicts.good_span([1, 1, 1, 0, 1, 1], 1.0, within=0.0) == (0, 2)  # a shorter later run loses
    assert verdicts.good_span([0, 1, 1, 0, 1, 1, 1], 1.0, within=0.0) == (4, 6)  # a longer later run wins
    assert verdicts.good_span([0, 1, 1, 1, 0, 1, 1], 1.0, within=0.0) == (1, 3)
    assert verdicts.good_span([1.0, 0.5, 0.25], 1.0, within=0.5) == (0, 1)  # exactly at the tolerance: good
    assert verdicts.good_span([0.2, 0.3], 1.0, within=0.5) is None


def test_span_verdict_is_a_rank_comparison_of_per_seed_widths_in_settings():
    peaked = np.array([[0.60, 0.89, 0.90, 0.89, 0.60],  # widths within 0.02 of 0.90: 3, 2, 2
                       [0.60, 0.60, 0.90, 0.89, 0.60],
                       [0.60, 0.89, 0.90, 0.60, 0.60]])
    flat = np.tile([0.80, 0.82, 0.84, 0.82, 0.80], (3, 1))  # never within 0.02 of 0.90
    v, info = verdicts.span(flat, peaked, claim="peaked wider", within=0.02, diverged=(1, 0))
    assert info["reference"] == pytest.approx(0.90) and info["seed_widths"] == {"a": [0, 0, 0], "b": [3, 2, 2]}
    assert v.claim == "peaked wider" and v.unit == "settings" and v.rule == "rank" and v.diverged == (1, 0)
    assert (v.low, v.high) == (-5.0, 5.0)  # n = 3 vs 3: no finite rank interval, clipped to +-5 settings
    # the better arm first: the reference is still its best column mean (not a row mean, not the grand mean)
    v2, info2 = verdicts.span(peaked, flat, claim="flat wider", within=0.02)
    assert info2["reference"] == pytest.approx(0.90) and info2["seed_widths"] == {"a": [3, 2, 2], "b": [0, 0, 0]}


def test_values_outside_their_unit_s_range_are_refused():
    """Case 9 of issue 30: accuracies given in percent made an inverted interval and a Supported verdict."""
    with pytest.raises(ValueError, match=r"^ours: value 95 outside the range \(0.0, 1.0\) of unit 'points' "
                                         r"\(accuracies are fractions, not percent\)"):
        verdicts.compare([95.0, 96.0, 97.0], [0.90, 0.91, 0.92], claim="c")
    with pytest.raises(ValueError, match=r"^other: value -1 outside the range \(0.0, 5.0\) of unit 'settings'"):
        verdicts.compare([1, 2, 3], [-1, 2, 3], claim="c", unit="settings", bounds=(0.0, 5.0))
    assert verdicts.compare([1.0, 1.0, 0.99], [0.0, 0.01, 0.0], claim="c").outcome == "Supported"  # the ends are in
    assert verdicts.compare([300.0, 310.0], [5.0, 6.0], claim="c", unit="x").rule == "welch"  # no range: no check


def test_the_rank_p_value_is_one_only_when_every_seed_of_both_arms_is_equal():
    def exact(x, y):  # every split of the pooled values, as in the enumeration test above
        z, n = np.concatenate([x, y]), len(x)
        u = lambda a, b: float(np.sum((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])))  # noqa: E731
        us = np.asarray([u(z[list(i)], z[[j for j in range(len(z)) if j not in i]])
                         for i in itertools.combinations(range(len(z)), n)])
        obs = u(np.asarray(x), np.asarray(y))
        return min(1.0, 2 * min(np.mean(us <= obs + 1e-9), np.mean(us >= obs - 1e-9)))

    for x, y in (([1.0, 1.0, 1.0, 1.0], [2.0, 3.0, 4.0, 5.0]), ([2.0, 3.0, 4.0, 5.0], [1.0] * 4),
                 ([1.0] * 4, [2.0] * 4), ([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0])):
        x, y = np.asarray(x), np.asarray(y)
        assert verdicts._rank_p(x, y) == pytest.approx(exact(x, y)) and verdicts._rank_p(x, y) < 1.0


def test_compare_arms_passes_the_claim_unit_margin_and_direction_through():
    a = {"per_seed": {"final_train_loss": [0.10, 0.11, 0.12]}, "chance": 0.1, "diverged_at": [None] * 3}
    b = {**a, "per_seed": {"final_train_loss": [0.30, 0.31, 0.33]}}
    v = verdicts.compare_arms(a, b, "final_train_loss", claim="lower loss", higher=False, margin=0.05, unit="nats")
    assert (v.claim, v.unit, v.margin, v.higher, v.outcome) == ("lower loss", "nats", 0.05, False, "Supported")


def test_divergence_names_the_first_diverged_step():
    assert verdicts.divergence([300, None, 120], claim="d").detail == "first at step 120"
    assert verdicts.divergence([None, None], claim="d").detail == ""


def test_span_uses_the_rank_rule_even_when_every_seed_trained():
    peaked = np.array([[0.60, 0.89, 0.90, 0.89, 0.60], [0.60, 0.60, 0.90, 0.89, 0.60],
                       [0.60, 0.89, 0.90, 0.60, 0.60], [0.60, 0.89, 0.90, 0.89, 0.89]])
    flat = np.array([[0.80, 0.82, 0.84, 0.82, 0.80], [0.80, 0.82, 0.88, 0.82, 0.80],
                     [0.80, 0.82, 0.84, 0.82, 0.80], [0.80, 0.82, 0.84, 0.82, 0.80]])
    v, info = verdicts.span(flat, peaked, claim="c", within=0.02)
    assert info["seed_widths"] == {"a": [0, 1, 0, 0], "b": [3, 2, 2, 4]} and v.rule == "rank" and v.diverged == (0, 0)


def test_speedup_with_one_seed_or_an_unreached_median_says_so():
    one = verdicts.speedup([1000], [400, 500], claim="faster")
    assert (one.outcome, one.rule, one.unit, one.detail, one.claim) == ("Inconclusive", "bootstrap", "x",
                                                                         "too few seeds for an interval", "faster")
    assert one.estimate == pytest.approx(1000 / 450) and math.isnan(one.low) and math.isnan(one.high)
    assert one.n == (2, 1) and one.margin == 1.0
    neither = verdicts.speedup([None, None], [None, 3], claim="faster")
    assert math.isnan(neither.estimate) and math.isnan(neither.low) and math.isnan(neither.high)
    never = verdicts.speedup([100, 120, 130], [None, None, 50], claim="faster")
    assert never.detail == "the arm's median seed never reached the target" and never.estimate == 0.0
    reached = verdicts.speedup([100, 120, 130], [50, 60, 70], claim="faster")
    assert reached.detail == ""
    # the default seed is 0: the interval is the percentile bootstrap drawn with default_rng(0) (arms of 8 seeds, so
    # that another seed moves the percentiles)
    a, b = np.asarray([100.0, 113, 121, 130, 142, 155, 161, 178]), np.asarray([50.0, 57, 61, 70, 74, 83, 90, 99])
    res = sps.bootstrap((a, b), lambda x, y, axis=-1: np.median(x, axis=axis) / np.median(y, axis=axis),
                        vectorized=True, paired=False, method="percentile", n_resamples=2000,
                        rng=np.random.default_rng(0))
    v = verdicts.speedup(a.tolist(), b.tolist(), claim="faster")
    assert (v.low, v.high) == pytest.approx((res.confidence_interval.low, res.confidence_interval.high), rel=1e-12)
    other = verdicts.speedup(a.tolist(), b.tolist(), claim="faster", seed=1)
    assert (other.low, other.high) != (v.low, v.high)
