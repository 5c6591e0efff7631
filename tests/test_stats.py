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


def test_summarize_equals_a_summary_built_by_hand():
    """Every key of `summarize`'s arm summary, against values computed here from the
    histories: two trained seeds (one at chance, one selecting step 200) and a diverged one."""
    a = stats.Run("a", 0, _cfg(), [
        {"step": 100, "val_accuracy": 0.5, "test_accuracy": 0.45, "train_loss": 2.0},
        {"step": 200, "val_accuracy": 0.9, "test_accuracy": 0.80, "train_loss": 1.0},
        {"step": 300, "val_accuracy": 0.7, "test_accuracy": 0.85, "train_loss": 0.8},
        {"step": 400, "val_accuracy": 0.8, "test_accuracy": 0.88, "train_loss": 0.5}],
        {"diverged_at": None, "train_seconds": 3.0})
    b = stats.Run("a", 4, _cfg(), [{"step": s, "val_accuracy": 0.1, "test_accuracy": 0.12, "train_loss": 2.3}
                                   for s in (100, 200, 300, 400)], {"diverged_at": None, "train_seconds": 2.0})
    c = _run([0.6, 0.7], [0.55, 0.65], diverged_at=250, seed=7)  # diverged after its step-200 evaluation
    got = stats.summarize({"a": [a, b, c]})["a"]
    per_seed = {"final_test_accuracy": [0.88, 0.12, 0.1], "selected_test_accuracy": [0.80, 0.12, 0.1],
                "best_val_accuracy": [0.9, 0.1, 0.1], "final_train_loss": [0.5, 2.3, math.inf]}
    assert set(got["per_seed"]) == set(per_seed)
    for k, v in per_seed.items():
        assert got["per_seed"][k] == pytest.approx(v), k
        finite = [x for x in v if math.isfinite(x)]
        assert got[k] == pytest.approx((np.mean(finite), np.std(finite))), k
    assert got["seeds"] == [0, 4, 7] and got["diverged_at"] == [None, None, 250] and got["chance"] == 0.1
    assert got["at_chance"] == 1  # b ends at 0.12 <= 1.5 x chance and trained; c diverged (counted apart)
    assert got["train_seconds"] == 6.0
    assert set(got) == {"seeds", "per_seed", *per_seed, "diverged_at", "chance", "at_chance", "train_seconds",
                        "curves"}
    assert set(got["curves"]) == {"test_accuracy", "val_accuracy", "train_loss"}
    test_curve = got["curves"]["test_accuracy"]  # c scores chance from its divergence to the end
    assert test_curve["steps"] == [100, 200, 300, 400]
    cols = np.array([[0.45, 0.80, 0.85, 0.88], [0.12] * 4, [0.55, 0.65, 0.1, 0.1]])
    assert test_curve["mean"] == pytest.approx(cols.mean(0).tolist())
    assert test_curve["std"] == pytest.approx(cols.std(0).tolist())
    loss_curve = got["curves"]["train_loss"]  # a loss stops at the divergence
    assert loss_curve["steps"] == [100, 200, 300, 400]
    assert loss_curve["mean"][-1] == pytest.approx((0.5 + 2.3) / 2)


def test_the_selected_evaluation_measured_once_at_the_end_is_read_from_the_summary():
    run = stats.Run("a", 0, _cfg(), [{"step": 100, "val_accuracy": 0.5, "test_accuracy": 0.4},
                                     {"step": 200, "val_accuracy": 0.9},  # test accuracy not evaluated here
                                     {"step": 300, "val_accuracy": 0.7, "test_accuracy": 0.6}],
                    {"diverged_at": None, "best_step": 200, "test_accuracy_at_best": 0.77})
    assert stats.selected(run) == pytest.approx(0.77)
    assert math.isnan(stats.selected(run, by="other_accuracy")) is False  # no such history: the final value
    assert stats.selected(run, by="other_accuracy") == pytest.approx(0.6)
    other = stats.Run("a", 0, _cfg(), run.history, {"diverged_at": None, "best_step": 300})
    assert math.isnan(stats.selected(other))  # the summary's best step is another: nothing to read, never a guess
    scored = stats.Run("a", 0, _cfg(), [{**r, "score": v} for r, v in zip(run.history, (0.1, 0.9, 0.2))], run.summary)
    assert math.isnan(stats.selected(scored, by="score"))  # selected by another metric: the summary is not its


def test_edge_cases_of_the_small_helpers_by_hand():
    assert stats.diverged_text([None, None]) == "no"
    assert stats.diverged_text([None, 300, 140]) == "2/3 seeds, from step 140"
    assert stats.diverged_text([None, None, None], at_chance=1) == "no; 1/3 at chance without diverging"
    assert stats.reach_summary([300, 400, None]) == {"median": 400.0, "min": 300, "max": 400, "reached": 2, "n": 3}
    empty = stats.reach_summary([])
    assert math.isnan(empty["median"]) and [empty[k] for k in ("min", "max", "reached", "n")] == [None, None, 0, 0]
    assert stats.reach_summary([None, None]) == {"median": math.inf, "min": None, "max": None, "reached": 0, "n": 2}
    assert stats.first_reach([100, 200, 300], [0.5, 0.9, 0.95], 0.9) == 200  # reaching exactly counts
    assert stats.first_reach([100, 200], [0.5, 0.6], 0.9) is None
    assert stats.mean_std([0.5]) == (0.5, 0.0) and stats.mean_std([0.5, None, math.inf, math.nan, 0.7]) == \
        pytest.approx((0.6, 0.1))
    assert all(math.isnan(x) for x in stats.mean_std([None, math.inf]))
    run = _run([0.5, 0.6, 0.7], [0.4, 0.5, 0.65])
    assert stats.last_evaluated(run) == 0.65 and math.isnan(stats.last_evaluated(run, "nope"))
    assert math.isnan(stats.final(run, "nope")) and stats.final(run, "train_loss") == pytest.approx(1 / 3)


def test_the_diverged_seed_rule_on_uneven_schedules_and_missing_evaluations():
    # eval_every 1: the schedule is every step (a schedule built one short or one long shows here)
    cfg = SimpleNamespace(steps=4, eval_every=1, model=SimpleNamespace(num_classes=10))
    r = stats.Run("a", 0, cfg, [{"step": 1, "val_accuracy": 0.5}], {"diverged_at": 1})
    assert stats.series(r, "val_accuracy") == ([1, 2, 3, 4], [0.5, 0.1, 0.1, 0.1])
    # the evaluation at the divergence step is kept; steps without an evaluation before it are not invented
    r = stats.Run("a", 0, _cfg(), [{"step": 200, "val_accuracy": 0.6, "train_loss": 0.9},
                                   {"step": 300, "val_accuracy": 0.7, "train_loss": 0.8}], {"diverged_at": 300})
    assert stats.series(r, "val_accuracy") == ([200, 300, 400], [0.6, 0.7, 0.1])
    assert stats.series(r, "train_loss") == ([200, 300], [0.9, 0.8])
    # a divergence between evaluations at a step the schedule has but the history lacks: chance only after it
    r = stats.Run("a", 0, _cfg(), [{"step": 100, "val_accuracy": 0.6}], {"diverged_at": 200})
    assert stats.series(r, "val_accuracy") == ([100, 300, 400], [0.6, 0.1, 0.1])


def test_one_seed_arms_and_chance_exactly_at_the_bar():
    four = SimpleNamespace(steps=100, eval_every=100, model=SimpleNamespace(num_classes=4))  # chance 0.25: bar 0.375
    at_bar = stats.Run("a", 0, four, [{"step": 100, "val_accuracy": 0.4, "test_accuracy": 0.375, "train_loss": 1.0}],
                       {"diverged_at": None, "train_seconds": 1.0})
    got = stats.summarize({"one": [at_bar]})["one"]  # an arm of one seed
    assert got["chance"] == 0.25 and got["at_chance"] == 1 and got["seeds"] == [0]
    assert stats.fmt(0.98214, 0.0005) == "98.21 ± 0.05" and stats.fmt(math.nan, 0.1) == "—"
    assert stats.fmt(1234.5, 12.34, pct=False) == "1.23e+03 ± 12"
