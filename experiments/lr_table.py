"""The BN paper's learning-rate table (section 4.2.2, Figure 3) at small scale: the ReLU
ConvNet on MNIST (or digits with --quick), SGD with momentum 0.9 and exponential decay.

Arms, as in the paper (sections 4.2.1-4.2.2):
  Baseline        no BN, base learning rate, dropout 0.4 and L2 5e-4
  BN-Baseline     + BN before each nonlinearity, same settings
  BN-x5, BN-x30   BN, 5x / 30x the learning rate, no dropout, L2 / 5, decay 6x faster
  BN-x5-Sigmoid   BN-x5 with sigmoid units
  Baseline-x5     no BN at 5x (the paper reports plain Inception blowing up at high rates)

Reported: steps for the mean-over-seeds test accuracy to reach the Baseline's best (the
paper's "steps to 72.2%"), best test accuracy (mean ± std), and the step ratio against
Baseline. A diverged run is shown as diverged, with the step.

    python -m experiments.lr_table --workdir runs/lr_table --data mnist
"""

from __future__ import annotations

import os

from bnjax import experiment, runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from experiments import _cli

# The paper's table (Ioffe & Szegedy 2015, Figure 3): steps to 72.2% and max accuracy.
PAPER = {"Baseline": (31.0e6, 72.2), "BN-Baseline": (13.3e6, 72.7), "BN-x5": (2.1e6, 73.0),
         "BN-x30": (2.7e6, 74.8), "BN-x5-Sigmoid": (None, 69.8)}


def base(quick: bool, data: str) -> TrainConfig:
    steps = 800 if quick else 4_000
    return TrainConfig(
        model=ModelConfig(arch="convnet", activation="relu", dropout=0.4),
        optim=OptimConfig(name="momentum", learning_rate=0.01, momentum=0.9, schedule="exponential",
                          decay_rate=0.5, decay_steps=steps // 3, weight_decay=5e-4),
        data=DataConfig(source=data, batch_size=32 if quick else 60),
        steps=steps, eval_every=25 if quick else 100, checkpoint_every=1_000)


def arms(b: TrainConfig) -> dict[str, TrainConfig]:
    fast = {"model.norm": "batch", "model.dropout": 0.0, "optim.weight_decay": b.optim.weight_decay / 5,
            "optim.decay_steps": max(1, b.optim.decay_steps // 6)}
    return {
        "Baseline": b,
        "BN-Baseline": replace(b, **{"model.norm": "batch"}),
        "BN-x5": replace(b, **fast, **{"optim.lr_multiplier": 5.0}),
        "BN-x30": replace(b, **fast, **{"optim.lr_multiplier": 30.0}),
        "BN-x5-Sigmoid": replace(b, **fast, **{"optim.lr_multiplier": 5.0, "model.activation": "sigmoid"}),
        "Baseline-x5": replace(b, **{"optim.lr_multiplier": 5.0}),
    }


def table(arm_stats: dict) -> dict:
    """Steps to the Baseline's best (on mean curves), best accuracy, ratio to Baseline."""
    c = arm_stats["Baseline"]["curves"]
    target = max(c["test_accuracy"][0])
    base_steps = experiment.first_reach(c["steps"], c["test_accuracy"][0], target)
    rows = {}
    for arm, a in arm_stats.items():
        steps = experiment.first_reach(a["curves"]["steps"], a["curves"]["test_accuracy"][0], target)
        rows[arm] = {"steps_to_target": steps, "best_test_accuracy": a["best_test_accuracy"],
                     "speedup_vs_baseline": base_steps / steps if steps else None,
                     "diverged_at": a["diverged_at"]}
    return {"target_accuracy": target, "rows": rows}


def run(workdir: str, *, quick: bool, data: str, seeds: int, pool: str | None = None,
        progress: bool = True, steps: int | None = None) -> dict:
    _, stats = _cli.train_arms(arms(base(quick, data)), workdir, "lr_table.png",
                               f"BN paper's learning-rate arms, small scale ({data})", seeds=seeds, pool=pool,
                               progress=progress, steps=steps)
    results = {"figures": {"curves": "lr_table.png"}, "arms": stats, "table": table(stats), "paper": PAPER}
    runlog.write_json(os.path.join(workdir, "results.json"), results)
    return results


def main(argv=None) -> None:
    t = _cli.experiment_main(__doc__, "runs/lr_table", run, argv)["table"]
    print(f"target = Baseline's best mean test accuracy {t['target_accuracy'] * 100:.2f}%")
    for arm, r in t["rows"].items():
        m, s = r["best_test_accuracy"]
        sp = f"{r['speedup_vs_baseline']:.1f}x" if r["speedup_vs_baseline"] else "—"
        print(f"{arm:>14}: steps to target {r['steps_to_target'] or '—':>6}  best {m * 100:.2f} ± {s * 100:.2f}%  "
              f"speed-up {sp}")


if __name__ == "__main__":
    main()
