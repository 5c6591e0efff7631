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


def test_diverged_seed_scores_chance_and_never_reaches_a_target():
    ok = _run([0.5, 0.8, 0.9, 0.95])
    slow = _run([0.3, 0.5, 0.6, 0.7], seed=1)
    div = _run([0.6, 0.92], diverged_at=230, seed=2)  # reached 0.9 at step 200, then diverged
    assert stats.series(div, "val_accuracy") == ([100, 200, 300, 400], [0.6, 0.92, 0.1, 0.1])
    assert stats.final(div, "test_accuracy") == pytest.approx(0.1)
    assert stats.selected(div) == pytest.approx(0.1)  # a diverged seed is the worst outcome, not its old best
    assert stats.selected(ok) == pytest.approx(0.95)
    assert stats.last_evaluated(div) == pytest.approx(0.92)  # the other quantity, under its own name
    assert [stats.steps_to_target(r, 0.9) for r in (ok, slow, div)] == [300, None, None]
    s = stats.reach_summary([300, None, None])
    assert s == {"median": math.inf, "min": 300, "max": 300, "reached": 1, "n": 3}
    steps, mean, _ = stats.curve([ok, div], "test_accuracy")
    assert steps.tolist() == [100, 200, 300, 400] and mean[-1] == pytest.approx((0.95 + 0.1) / 2)
    summ = stats.summarize({"a": [ok, slow, div]})["a"]
    assert summ["per_seed"]["final_test_accuracy"] == pytest.approx([0.95, 0.7, 0.1])
    assert summ["per_seed"]["final_train_loss"][2] == math.inf  # a diverged seed's loss ranks worst
    assert summ["per_seed"]["selected_test_accuracy"] == pytest.approx([0.95, 0.7, 0.1])
    assert summ["final_train_loss"][0] == pytest.approx(0.25)  # the table's mean covers the finite losses
    assert summ["chance"] == pytest.approx(0.1) and summ["at_chance"] == 0


def test_collapsed_seed_is_counted_at_chance():
    """A seed at chance without a non-finite loss (dead ReLUs) is counted beside the
    diverged ones, in the arm summary and in the tables' text."""
    ok, dead, div = _run([0.5, 0.9]), _run([0.11, 0.105], seed=1), _run([0.6], diverged_at=150, seed=2)
    summ = stats.summarize({"a": [ok, dead, div]})["a"]
    assert summ["at_chance"] == 1
    assert stats.diverged_text(summ["diverged_at"], summ["at_chance"]) == \
        "1/3 seeds, from step 150; 1/3 at chance without diverging"
