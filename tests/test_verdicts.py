"""Verdict rules (`bnjax.verdicts`) against independent references (scipy, brute-force
enumeration, hand computations) and the cases in which the old rules misled."""

import itertools
import json
import math
import re

import numpy as np
import pytest
from scipy import stats as sps

from bnjax import power, ranks, report, verdicts
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
        np.testing.assert_allclose(ranks.u_cdf(n, m), np.cumsum(counts) / counts.sum())


def test_hodges_lehmann_interval_inverts_the_exact_mann_whitney_test():
    """The interval is the set of shifts d for which the exact two-sided test of x vs
    y + d does not reject at 5% (scipy's exact test, on a fine grid)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(1.0, 0.3, 5), rng.normal(0.0, 0.3, 5)
    est, low, high = ranks.hodges_lehmann(x, y)
    assert est == pytest.approx(np.median(x[:, None] - y[None, :]))
    grid = np.linspace(low - 0.5, high + 0.5, 4001)
    kept = [d for d in grid if sps.mannwhitneyu(x, y + d, method="exact").pvalue > 0.05]
    assert min(kept) == pytest.approx(low, abs=1e-3) and max(kept) == pytest.approx(high, abs=1e-3)
    assert ranks.hodges_lehmann(x[:3], y[:3])[1:] == (-math.inf, math.inf)  # n = 3 vs 3: nothing excluded


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


def test_a_claim_of_lower_values_is_judged_against_minus_the_margin():
    """Review case 4: ``higher=False, margin=m`` is the claim ``ours - other < -m``."""
    y = np.array([.800, .802, .804, .806, .808])
    for ours in (y - 0.005, y + 0.005):  # 0.5 points lower, or higher: neither is 1 point lower
        v = verdicts.compare(ours, y, claim="lower by a point", higher=False, margin=0.01)
        assert v.outcome == "Contradicted", (v.low, v.high)
        assert "below -1.00" in report.verdict_line(v)
    assert verdicts.compare(y - 0.02, y, claim="c", higher=False, margin=0.01).outcome == "Supported"


def test_an_empty_or_nan_arm_is_named():
    with pytest.raises(ValueError, match="^ours: no values"):
        verdicts.compare([], [0.5, 0.6], claim="c")
    with pytest.raises(ValueError, match="^other: no values"):
        verdicts.compare([0.5, 0.6], [], claim="c")
    with pytest.raises(ValueError, match="^ours: a missing \\(NaN\\) value"):
        verdicts.compare([0.5, math.nan], [0.5, 0.6], claim="c")
    with pytest.raises(ValueError, match="^other: a missing \\(NaN\\) value"):
        verdicts.compare([0.5, 0.6], [0.5, math.nan], claim="c")


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


def test_compare_arms_claims_higher_values_by_default():
    hi = {"per_seed": {"final_test_accuracy": [0.95, 0.96, 0.97]}, "chance": 0.1, "diverged_at": [None] * 3}
    lo = {**hi, "per_seed": {"final_test_accuracy": [0.90, 0.91, 0.92]}}
    v = verdicts.compare_arms(hi, lo, "final_test_accuracy", claim="c")
    assert v.higher is True and v.outcome == "Supported"


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


def test_values_outside_their_unit_s_range_are_refused():
    """Case 9 of issue 30: accuracies given in percent made an inverted interval and a Supported verdict."""
    with pytest.raises(ValueError, match=r"^ours: value 95 outside the range \(0.0, 1.0\) of unit 'points' "
                                         r"\(accuracies are fractions, not percent\)"):
        verdicts.compare([95.0, 96.0, 97.0], [0.90, 0.91, 0.92], claim="c")
    with pytest.raises(ValueError, match=r"^other: value -1 outside the range \(0.0, 5.0\) of unit 'settings'"):
        verdicts.compare([1, 2, 3], [-1, 2, 3], claim="c", unit="settings", bounds=(0.0, 5.0))
    assert verdicts.compare([1.0, 1.0, 0.99], [0.0, 0.01, 0.0], claim="c").outcome == "Supported"  # the ends are in
    assert verdicts.compare([300.0, 310.0], [5.0, 6.0], claim="c", unit="x").rule == "welch"  # no range: no check


def test_compare_arms_passes_the_claim_unit_margin_and_direction_through():
    a = {"per_seed": {"final_train_loss": [0.10, 0.11, 0.12]}, "chance": 0.1, "diverged_at": [None] * 3}
    b = {**a, "per_seed": {"final_train_loss": [0.30, 0.31, 0.33]}}
    v = verdicts.compare_arms(a, b, "final_train_loss", claim="lower loss", higher=False, margin=0.05, unit="nats")
    assert (v.claim, v.unit, v.margin, v.higher, v.outcome) == ("lower loss", "nats", 0.05, False, "Supported")




def test_case1_span_of_a_collapsed_arm_is_empty():
    plain = np.array([[0.97, 0.97, 0.5, 0.1]] * 5) + np.arange(5)[:, None] * 1e-4
    bn_dead = np.full((5, 4), 0.1)  # at chance at every rate: flat, but never a good setting
    v, spans = verdicts.span(plain, bn_dead, within=0.01, claim="BN wider", chance=0.1)
    assert spans["spans"] == {"a": (0, 1), "b": None} and spans["seed_widths"]["b"] == [0] * 5
    assert v.outcome == "Contradicted" and v.estimate == -2
    holes = np.array([0.97, 0.5, 0.97, 0.97])  # a bad setting between good ones breaks the span
    assert verdicts.good_span(holes, 0.97, within=0.01) == (2, 3)
    v3, _ = verdicts.span(np.array([[0.97, 0.97, 0.1]] * 3), np.array([[0.97, 0.97, 0.97]] * 3), within=0.01,
                          claim="c")  # n = 3 vs 3: the rank rule cannot decide, and says so
    assert v3.outcome == "Inconclusive" and v3.min_p == pytest.approx(0.1)
    assert "The design cannot decide" in report.verdict_line(v3)


def test_case8_the_span_rule_compares_widths_not_levels():
    """Two arms flat over all 8 rates, one 2 points lower: equally wide (the old common
    reference made the lower arm's span empty and called the other's wider, Supported)."""
    high = np.full((5, 8), 0.95) + np.arange(5)[:, None] * 1e-4
    low = high - 0.02
    v, info = verdicts.span(low, high, within=0.01, claim="high wider", chance=0.1)
    assert info["seed_widths"] == {"a": [8] * 5, "b": [8] * 5}
    assert info["reference"] == pytest.approx({"a": 0.9302, "b": 0.9502})
    assert v.outcome == "Contradicted" and v.negligible and (v.low, v.high) == (0.0, 0.0)
    peaked = np.tile([0.60, 0.89, 0.90, 0.89, 0.60], (5, 1))  # own best 0.90: 3 settings within 0.02
    flat = np.tile([0.80, 0.82, 0.84, 0.82, 0.80], (5, 1))  # own best 0.84: every setting within 0.04
    _, both = verdicts.span(flat, peaked, within=0.04, claim="c")
    assert both["seed_widths"] == {"a": [5] * 5, "b": [3] * 5} and both["spans"] == {"a": (0, 4), "b": (1, 3)}


def test_speedup_is_the_exact_rank_rule_on_log_steps():
    assert verdicts.speedup([None] * 3, [None] * 3, claim="faster").outcome == "Inconclusive"
    assert "neither arm's median seed reached the target" in report.verdict_line(
        verdicts.speedup([None] * 3, [None] * 3, claim="faster"))
    base, arm = [1000, 1100, 1200, 1000, 1150], [200, 250, 300, 210, 220]
    v = verdicts.speedup(base, arm, claim="faster")
    la, lb = np.log(base), np.log(arm)
    assert v.estimate == pytest.approx(math.exp(np.median(np.subtract.outer(la, lb))))
    grid = np.linspace(0.0, 3.0, 3001)  # the interval: log ratios scipy's exact test does not reject
    kept = [d for d in grid if sps.mannwhitneyu(la, lb + d, method="exact").pvalue > 0.05]
    assert math.log(v.low) == pytest.approx(min(kept), abs=2e-3) and math.log(v.high) == pytest.approx(max(kept),
                                                                                                       abs=2e-3)
    assert v.outcome == "Supported" and v.p == pytest.approx(sps.mannwhitneyu(la, lb, method="exact").pvalue)
    slow = verdicts.speedup([1000, 1100, 1200, 1050, 1000], [None] * 5, claim="faster")
    assert slow.outcome == "Contradicted" and slow.estimate == 0.0
    assert "the arm's median seed never reached the target" in slow.detail
    same = verdicts.speedup([1000, 1010, 990, 1005, 995, 1002], [1001, 1009, 991, 1004, 996, 1003], claim="faster")
    assert same.outcome == "Contradicted" and same.negligible and same.high < 1.2
    assert "any gain is smaller than 1.20x" in report.verdict_line(same)
    three = verdicts.speedup([1000, 1100, 1200], [100, 110, 120], claim="faster")  # 3 vs 3: min p 0.10
    assert three.outcome == "Inconclusive" and three.p == pytest.approx(0.1) and three.power == 0.0
    one = verdicts.speedup([1000], [400, 500], claim="faster")
    assert (one.outcome, one.detail, one.n) == ("Inconclusive", "too few seeds for an interval", (2, 1))
    assert one.estimate == pytest.approx(math.exp(np.median(np.log(1000) - np.log([400, 500]))))


def test_case5_the_speedup_rule_decides_at_most_at_its_level_without_a_true_difference():
    """Lognormal steps, no difference: the share of designs whose rule decides (p <= 5%) at
    the protocol's sizes is at most 5% (the bootstrap rule decided 10.0% at n = 3, 7.5% at
    n = 4). The rule's decision is its p-value's: checked on the first designs."""
    rng = np.random.default_rng(11)
    for n in (4, 5, 6):
        a, b = rng.lognormal(7.0, 0.3, (20_000, n)), rng.lognormal(7.0, 0.3, (20_000, n))
        p = ranks.rank_p(np.log(a), np.log(b))
        assert np.mean(p <= 0.05) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 20_000), n
        for i in range(10):
            v = verdicts.speedup(a[i].tolist(), b[i].tolist(), claim="c")
            assert (v.outcome != "Inconclusive" and not v.negligible) == (p[i] <= 0.05)


def test_case6_a_worse_competitor_never_makes_a_claim_harder():
    v = verdicts.compare([.90, .91, .92], [.50, .51, .52], claim="c", chance=0.1)
    worse = verdicts.compare([.90, .91, .92], [.10, .11, .12], claim="c", chance=0.1)  # now at chance
    assert v.rule == worse.rule == "welch" and v.outcome == worse.outcome == "Supported"
    assert worse.p <= v.p and worse.at_chance == (0, 3)
    ranked = verdicts.compare([.90, .91, .92, .93], [.50, .51, .52, .53], claim="c", rule="rank")
    ranked_worse = verdicts.compare([.90, .91, .92, .93], [.10, .11, .12, .13], claim="c", rule="rank", chance=0.1)
    assert ranked.p == ranked_worse.p == pytest.approx(2 / 70) and ranked_worse.outcome == "Supported"
    with pytest.raises(ValueError, match="rule must be 'welch' or 'rank'"):
        verdicts.compare([.9, .9], [.8, .8], claim="c", rule="auto")


def test_case7_bimodal_outcomes_are_described_by_counts_and_the_mean_difference():
    ours, other = [.95, .95, .96, .10, .10], [.90, .90, .91, .91, .92]
    v = verdicts.compare(ours, other, claim="c", chance=0.1, rule="rank")
    assert v.estimate > 0 and v.at_chance == (2, 0) and v.outcome == "Inconclusive"  # the typical seed: +4 points
    line = report.verdict_line(v)
    assert "2/5 of ours" in line and "the mean difference over all seeds is -29.60 points" in line
    welch = verdicts.compare([.95, .96, .10], [.10, .11, .12], claim="c", chance=0.1)  # Welch: the counts too
    assert "1/3 of ours, 3/3 of the other" in welch.detail and welch.rule == "welch"


def test_case9_p_values_agree_with_their_intervals_with_ties():
    """The issue's example (CI [0, 4] printed beside p = 0.040), then random integer seeds
    with many ties: at every bar, p <= 5% exactly when the bar lies outside the interval."""
    v = verdicts.compare([2, 2, 3, 3, 4], [0, 0, 0, 3, 0], claim="c", unit="settings", bounds=(0.0, 8.0), rule="rank")
    assert (v.low, v.high) == (0.0, 4.0) and v.p > 0.05 and v.outcome == "Inconclusive"
    rng = np.random.default_rng(5)
    for _ in range(200):
        n, m = rng.integers(4, 7, 2)
        x, y = rng.integers(0, 5, n).astype(float), rng.integers(0, 5, m).astype(float)
        _, low, high = ranks.hodges_lehmann(x, y)
        for bar in np.arange(-6.0, 6.5, 0.5):
            assert (ranks.rank_p(x, y, bar) <= 0.05) == (bar < low or bar > high), (x, y, bar)


def test_the_rank_p_value_equals_scipy_s_exact_test_without_ties():
    rng = np.random.default_rng(8)
    for n, m in ((4, 5), (6, 6), (8, 8)):
        x, y = rng.normal(0.5, 1, n), rng.normal(0, 1, m)
        for bar in (0.0, 0.3):
            assert ranks.rank_p(x, y, bar) == pytest.approx(sps.mannwhitneyu(x - bar, y, method="exact").pvalue)
    assert ranks.rank_p([0.5, 0.5], [0.5, 0.5, 0.5]) == 1.0
    batch = ranks.rank_p(rng.normal(size=(3, 4)), rng.normal(size=(3, 5)))
    assert batch.shape == (3,) and np.all((0 < batch) & (batch <= 1))


def test_an_interval_inside_the_sesoi_is_the_equivalence_outcome():
    y = np.array([.9801, .9803, .9799, .9800, .9805, .9798])
    v = verdicts.compare(y + 0.0003, y, claim="A beats B")  # +0.03 points, CI well inside +-0.5 points
    assert (v.outcome, v.negligible, v.sesoi) == ("Contradicted", True, 0.005) and v.high < 0.005
    assert v.p == pytest.approx(sps.ttest_ind(y + 0.0003 - 0.005, y, equal_var=False).pvalue) and v.p < 0.05
    assert "**Contradicted** (any gain is smaller than 0.50 points, the smallest effect of interest)" in \
        report.verdict_line(v)
    wide = verdicts.compare(y + 0.0003, y - np.array([0, 0.01, 0, 0.01, 0, 0.01]), claim="c")
    assert wide.outcome == "Inconclusive" and not wide.negligible  # reaches past the SESOI: undecided
    lower = verdicts.compare(y - 0.0003, y, claim="lower", higher=False)  # the same for a claim of a drop
    assert lower.negligible and "any drop is smaller than 0.50 points" in report.verdict_line(lower)
    margin = verdicts.compare(y + 0.0003, y, claim="c", margin=-0.01)  # not a claim of a gain: no equivalence
    assert margin.outcome == "Supported" and not margin.negligible


def test_every_verdict_carries_its_design_s_power():
    x, y = [.95, .96, .97, .955, .965], [.94, .95, .945, .935, .96]
    v = verdicts.compare(x, y, claim="c")
    sds = (np.std(x, ddof=1), np.std(y, ddof=1))
    assert v.sd == pytest.approx(sds) and v.min_p is None
    assert v.power == pytest.approx(power.welch_power_exact(0.005, *sds, 5, 5))
    assert power.welch_power_exact(v.detectable, *sds, 5, 5) == pytest.approx(0.8, abs=0.01)
    r = verdicts.compare(x, y, claim="c", rule="rank")
    assert r.min_p == pytest.approx(2 / 252) and r.power == pytest.approx(power.rank_power(0.005, *sds, 5, 5))
    line = report.verdict_line(verdicts.compare([.95, .90, .97], [.94, .95, .93], claim="c"))
    assert re.search(r"Power at the SESOI \(0\.50 points\): 0\.\d\d; the design detects \d+\.\d\d points with 80% "
                     r"power\.$", line), line
    assert verdicts.divergence([None] * 6, claim="d").power == pytest.approx(power.binom_power(0.9, 6))


def test_verdict_round_trips_through_strict_json():
    v = verdicts.compare([0.10, 0.11, 0.12, math.inf], [0.2, 0.21, 0.22, 0.23], claim="c", higher=False, unit="nats",
                         rule="rank")
    d = json.loads(json.dumps(v.to_dict(), allow_nan=False))
    assert d["claim"] == "c" and d["outcome"] in verdicts.OUTCOMES and d["sd"] == pytest.approx(list(v.sd))
    assert Verdict.from_dict(d) == v
    old = {k: x for k, x in d.items() if k not in ("sesoi", "negligible", "sd", "power", "detectable", "min_p")}
    assert Verdict.from_dict(old).power is None  # results.json written before power was recorded


def test_an_interval_that_touches_the_bar_decides_nothing():
    for margin in (0.0, 1.0):
        assert verdicts._outcome(margin, margin + 2, margin=margin, higher=True) == ("Inconclusive", False)
        assert verdicts._outcome(margin - 2, margin, margin=margin, higher=True) == ("Inconclusive", False)
        assert verdicts._outcome(margin + 1e-9, margin + 2, margin=margin, higher=True) == ("Supported", False)
        assert verdicts._outcome(-margin - 2, -margin, margin=margin, higher=False) == ("Inconclusive", False)
        assert verdicts._outcome(-margin, -margin + 2, margin=margin, higher=False) == ("Inconclusive", False)
    assert verdicts._outcome(-0.2, 0.5, margin=0.0, higher=True, sesoi=0.5) == ("Inconclusive", False)  # touches
    assert verdicts._outcome(-0.2, 0.4999, margin=0.0, higher=True, sesoi=0.5) == ("Contradicted", True)
    assert verdicts._outcome(math.nan, 1.0, margin=0.0, higher=True) == ("Inconclusive", False)
    v = verdicts.compare([4, 4, 4, 4, 4], [3, 3, 4, 4, 4], claim="wider", unit="settings", rule="rank",
                         bounds=(0.0, 8.0))  # whole-number spans: an interval [0, 1] settings is not "wider"
    assert v.low == 0 and v.outcome == "Inconclusive"


def test_p_values_test_against_the_margin_on_the_claimed_side():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.92, 0.01, 6), rng.normal(0.90, 0.01, 6)
    for higher, margin in ((True, 0.01), (True, -0.01), (False, 0.01), (False, 0.02)):
        v = verdicts.compare(x, y, claim="c", higher=higher, margin=margin)
        bar = margin if higher else -margin  # the difference the claim must clear
        assert v.rule == "welch" and v.p == pytest.approx(sps.ttest_ind(x - bar, y, equal_var=False).pvalue)
        r = verdicts.compare(x, y, claim="c", higher=higher, margin=margin, rule="rank")
        assert r.rule == "rank" and r.p == pytest.approx(sps.mannwhitneyu(x - bar, y, method="exact").pvalue)


def test_compare_arms_passes_chance_diverged_seeds_and_the_rule():
    ours = {"per_seed": {"final_test_accuracy": [0.95, 0.96, 0.12, 0.94], "final_train_loss": [0.1, 0.1, 0.2, 0.1]},
            "chance": 0.1, "diverged_at": [None, None, None, None]}
    other = {"per_seed": {"final_test_accuracy": [0.10, 0.90, 0.91, 0.92], "final_train_loss": [math.inf, 1, 1, 1]},
             "chance": 0.1, "diverged_at": [120, None, None, None]}
    v = verdicts.compare_arms(ours, other, "final_test_accuracy", claim="c", rule="rank")
    assert v.diverged == (0, 1) and v.at_chance == (1, 0) and v.rule == "rank" and v.n == (4, 4)
    assert verdicts.compare_arms(ours, other, "final_test_accuracy", claim="c").rule == "welch"  # the default
    loss = verdicts.compare_arms(ours, other, "final_train_loss", claim="c", higher=False, unit="nats")
    assert loss.at_chance == (0, 0) and loss.diverged == (0, 1)  # no chance level for a loss
    assert loss.outcome == "Inconclusive" and "infinite" in loss.detail  # Welch has no interval for an infinity


def test_welch_without_an_interval_says_why():
    assert verdicts.compare([0.9, 0.8], [0.7, 0.6], claim="c").low == pytest.approx(
        sps.ttest_ind([0.9, 0.8], [0.7, 0.6], equal_var=False).confidence_interval().low)  # n = 2 each is enough
    assert verdicts.compare([0.9, 0.9], [0.8, 0.7], claim="c").p is not None  # one arm without spread
    same = verdicts.compare([0.9, 0.9, 0.9], [0.8, 0.8, 0.8], claim="c")
    assert (same.outcome, same.rule, same.p) == ("Inconclusive", "welch", None) and same.estimate == pytest.approx(0.1)
    assert same.detail == "every seed of each arm has the same value: Welch's interval is undefined"
    for ours, other in (([0.9], [0.8, 0.7]), ([0.9, 0.8], [0.7]), ([0.9], [0.7])):
        v = verdicts.compare(ours, other, claim="c")
        assert v.outcome == "Inconclusive" and v.p is None and v.detail == "too few seeds for an interval"
        assert math.isnan(v.low) and v.n == (len(ours), len(other))


def test_an_exact_rank_interval_that_cannot_exclude_any_shift_says_so():
    v = verdicts.compare([0.9, 0.91, 0.92], [0.5, 0.51, 0.52], claim="c", rule="rank", unit="x")  # n = 3 vs 3
    assert math.isinf(v.low) and math.isinf(v.high) and v.outcome == "Inconclusive" and v.p == pytest.approx(0.1)
    assert v.min_p == pytest.approx(0.1) and "cannot decide" not in v.detail  # said once, by the report line
    assert "The design cannot decide: at n = 3 vs 3 the rule's smallest attainable p is 0.1" in report.verdict_line(v)
    one_sided = verdicts.compare([1.0, 1.0, 1.0, 1.0, math.inf], [2.0] * 5, claim="c", higher=False, unit="nats",
                                 rule="rank")
    assert math.isfinite(one_sided.low) and math.isinf(one_sided.high)
    assert "cannot decide" not in report.verdict_line(one_sided)  # 5 vs 5 can


def test_divergence_is_an_exact_binomial_test_against_one_half():
    six = verdicts.divergence([300, 120, 5, 6, 7, 8], claim="d")
    assert (six.outcome, six.p, six.detail) == ("Supported", pytest.approx(1 / 32), "first at step 5")
    assert verdicts.divergence([None] * 6, claim="d").outcome == "Contradicted"
    three = verdicts.divergence([10, 20, 30], claim="d")
    assert three.outcome == "Inconclusive" and three.min_p == pytest.approx(0.25) and three.power == 0.0
    assert "The design cannot decide: at n = 3 the rule's smallest attainable p is 0.25" in report.verdict_line(three)
    with pytest.raises(ValueError, match="no seeds"):
        verdicts.divergence([], claim="d")
    assert sps.binomtest(6, 6, 0.5).proportion_ci(method="exact").low == pytest.approx(six.low)


def test_span_uses_the_rank_rule_even_when_every_seed_trained():
    peaked = np.array([[0.60, 0.89, 0.90, 0.89, 0.60], [0.60, 0.60, 0.90, 0.89, 0.60],
                       [0.60, 0.89, 0.90, 0.60, 0.60], [0.60, 0.89, 0.90, 0.89, 0.89]])
    flat = np.array([[0.80, 0.82, 0.84, 0.82, 0.80], [0.80, 0.82, 0.88, 0.82, 0.80],
                     [0.80, 0.82, 0.84, 0.82, 0.80], [0.80, 0.82, 0.84, 0.82, 0.80]])
    v, info = verdicts.span(flat, peaked, claim="c", within=0.02, diverged=(1, 0))
    assert info["reference"] == pytest.approx({"a": 0.85, "b": 0.90})
    assert info["seed_widths"] == {"a": [1, 1, 1, 1], "b": [3, 2, 2, 4]} and v.rule == "rank" and v.diverged == (1, 0)
    assert v.unit == "settings" and v.low >= -5 and v.high <= 5
