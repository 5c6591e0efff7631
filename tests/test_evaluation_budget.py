"""Evaluating what is used: the test split is measured at the end and at the
validation-selected evaluation only, and the numbers that select and report are those of
a run that measured it at every evaluation; where a run's time goes adds up to its wall
time."""

import dataclasses
import time

import pytest

from bnjax import fit, stats, timing
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

# a noisy schedule on digits (a large constant rate) so that validation peaks before the end
CFG = TrainConfig(model=ModelConfig(arch="mlp", hidden=(32,), activation="relu", norm="batch"),
                  optim=OptimConfig(name="momentum", learning_rate=0.5, momentum=0.9),
                  data=DataConfig(source="digits", batch_size=32), steps=240, eval_every=20)
REPORTED = ("best_step", "best_val_accuracy", "test_accuracy_at_best", "final_test_accuracy", "final_step")


def test_selected_and_reported_numbers_equal_those_of_a_full_test_curve():
    cheap = fit(CFG, progress=False)
    full = fit(dataclasses.replace(CFG, test_curve=True), progress=False)
    assert cheap.summary["best_step"] != cheap.summary["final_step"]  # the kept best state is really used
    for key in REPORTED:
        assert cheap.summary[key] == full.summary[key], key
    # the test split was measured at the end only; the validation curve is the same
    assert [r["step"] for r in cheap.history if "test_accuracy" in r] == [CFG.steps]
    assert [r["val_accuracy"] for r in cheap.history] == [r["val_accuracy"] for r in full.history]
    best = [r for r in full.history if r["step"] == full.summary["best_step"]][0]
    assert cheap.summary["test_accuracy_at_best"] == best["test_accuracy"]
    assert all("probes" not in r for r in cheap.history)  # probes only where asked (probe_examples)
    # the statistics read the selected test accuracy from the summary: the same number as the full curve gives
    runs = [stats.Run("a", 0, CFG, res.history, res.summary) for res in (cheap, full)]
    assert stats.selected(runs[0]) == stats.selected(runs[1]) == full.summary["test_accuracy_at_best"]
    per_seed = stats.summarize({"a": runs[:1]})["a"]["per_seed"]
    assert all(v == v for v in per_seed.values() for v in v)  # no NaN anywhere


def test_time_breakdown_adds_up_to_the_wall_time(tmp_path):
    phases = timing.Phases()
    t0 = time.perf_counter()
    fit(dataclasses.replace(CFG, steps=100, checkpoint_every=50), str(tmp_path / "run"), progress=False,
        phases=phases)
    wall = time.perf_counter() - t0
    s = phases.seconds
    assert set(s) == set(timing.PHASES) and all(v >= 0 for v in s.values())
    assert s["compile"] > 0 and s["train"] > 0 and s["eval"] > 0 and s["checkpoint"] > 0
    # everything fit does is inside a phase but the few lines between them (bars, clocks)
    assert phases.total() == pytest.approx(wall, rel=0.05, abs=0.05)
    with pytest.raises(RuntimeError, match="do not nest"), phases.of("train"), phases.of("eval"):
        pass
    for derived in ("compile", "cache"):  # measured inside the other phases, never timed as one
        with pytest.raises(ValueError, match="unknown phase"), phases.of(derived):
            pass
