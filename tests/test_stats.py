"""Statistics on finished runs, against scipy and hand-built histories."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps

from bnjax import stats


def _cfg(steps=400, eval_every=100, classes=10):
    return SimpleNamespace(steps=steps, eval_every=eval_every, model=SimpleNamespace(num_classes=classes))


def _run(val, test=None, diverged_at=None, seed=0):
    hist = [{"step": 100 * (i + 1), "val_accuracy": v, "test_accuracy": (test or val)[i], "train_loss": 1.0 / (i + 1)}
            for i, v in enumerate(val)]
    if diverged_at is not None:
        hist.append({"step": 100 * (len(val) + 1), "diverged_at": diverged_at})
    return stats.Run("arm", seed, _cfg(), hist, {"diverged_at": diverged_at, "train_seconds": 1.0})


def test_welch_interval_equals_scipy_and_the_three_verdicts():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.90, 0.01, 5), rng.normal(0.88, 0.01, 5)
    diff, low, high = stats.welch_ci(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (diff, low, high) == pytest.approx((a.mean() - b.mean(), ref.low, ref.high))
    # by hand: Welch-Satterthwaite degrees of freedom and the t quantile
    va, vb = a.var(ddof=1) / 5, b.var(ddof=1) / 5
    dof = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 4)
    half = sps.t.ppf(0.975, dof) * math.sqrt(va + vb)
    assert (low, high) == pytest.approx((diff - half, diff + half))
    assert stats.compare(a, b, claim="a above b").startswith("**Supported**")
    assert "n = 5 vs 5" in stats.compare(a, b, claim="x") and "95% CI" in stats.compare(a, b, claim="x")
    assert stats.compare(b, a, claim="b above a").startswith("**Contradicted**")
    assert stats.compare(a, a + rng.normal(0, 0.02, 5), claim="x").startswith("**Inconclusive**")
    assert stats.compare(b, a, claim="b lower", higher=False).startswith("**Supported**")
    assert stats.compare([0.9], [0.8], claim="one seed").startswith("**Inconclusive**")  # no interval from n = 1


def test_diverged_seed_scores_chance_and_never_reaches_a_target():
    ok = _run([0.5, 0.8, 0.9, 0.95])
    slow = _run([0.3, 0.5, 0.6, 0.7], seed=1)
    div = _run([0.6, 0.92], diverged_at=230, seed=2)  # reached 0.9 at step 200, then diverged
    assert stats.series(div, "val_accuracy") == ([100, 200, 300, 400], [0.6, 0.92, 0.1, 0.1])
    assert stats.final(div, "test_accuracy") == pytest.approx(0.1)
    assert stats.selected(div) == pytest.approx(0.92)  # validation picks the step before divergence
    assert [stats.steps_to_target(r, 0.9) for r in (ok, slow, div)] == [300, None, None]
    s = stats.reach_summary([300, None, None])
    assert s == {"median": math.inf, "min": 300, "max": 300, "reached": 1, "n": 3}
    steps, mean, _ = stats.curve([ok, div], "test_accuracy")
    assert steps.tolist() == [100, 200, 300, 400] and mean[-1] == pytest.approx((0.95 + 0.1) / 2)
    summ = stats.summarize({"a": [ok, slow, div]})["a"]
    assert summ["per_seed"]["final_test_accuracy"] == pytest.approx([0.95, 0.7, 0.1])
    assert math.isnan(summ["per_seed"]["final_train_loss"][2])  # no loss after divergence


def test_speedup_interval_and_its_verdict():
    point, low, high = stats.speedup_ci([1000, 1100, 1200, 1000, 1100], [200, 250, 300, 200, 220])
    assert point == pytest.approx(1100 / 220) and 1 < low <= point <= high
    assert stats.speedup_verdict((point, low, high), claim="faster").startswith("**Supported**")
    never = stats.speedup_ci([1000, 1100, 1200], [None, None, None])
    assert never[0] == 0 and stats.speedup_verdict(never, claim="x").startswith("**Contradicted**")
    assert "never reached the target (95% CI" in stats.speedup_verdict(never, claim="x")
    assert stats.divergence_verdict([10, 20, 30], claim="d").startswith("**Supported**: d — 3/3 seeds diverged")
    assert stats.divergence_verdict([None, 20, None], claim="d").startswith("**Inconclusive**")
    assert stats.divergence_verdict([None, None], claim="d").startswith("**Contradicted**")
