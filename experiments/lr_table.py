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

from bnjax import plots, report, stats
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from bnjax.experiment import Experiment, Settings
from experiments import _cli

# The paper's table (Ioffe & Szegedy 2015, Figure 3): steps to 72.2% and max accuracy.
PAPER = {"Baseline": (31.0e6, 72.2), "BN-Baseline": (13.3e6, 72.7), "BN-x5": (2.1e6, 73.0),
         "BN-x30": (2.7e6, 74.8), "BN-x5-Sigmoid": (None, 69.8)}
PAPER_SOURCE = ("Ioffe & Szegedy, *Batch Normalization: Accelerating Deep Network Training by Reducing Internal "
                "Covariate Shift*, ICML 2015 (arXiv 1502.03167), Figure 3 (ImageNet, Inception, single crop)")


def base(quick: bool, data: str) -> TrainConfig:
    steps = 800 if quick else 4_000
    return TrainConfig(
        model=ModelConfig(arch="convnet", activation="relu", dropout=0.4),
        optim=OptimConfig(name="momentum", learning_rate=0.01, momentum=0.9, schedule="exponential",
                          decay_rate=0.5, decay_steps=steps // 3, weight_decay=5e-4),
        data=DataConfig(source=data, batch_size=32 if quick else 60),
        steps=steps, eval_every=25 if quick else 100, checkpoint_every=1_000)


def arms(s: Settings) -> dict[str, TrainConfig]:
    b = base(s.quick, s.data)
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
    base_steps = stats.first_reach(c["steps"], c["test_accuracy"][0], target)
    rows = {}
    for arm, a in arm_stats.items():
        steps = stats.first_reach(a["curves"]["steps"], a["curves"]["test_accuracy"][0], target)
        rows[arm] = {"steps_to_target": steps, "best_test_accuracy": a["best_test_accuracy"],
                     "speedup_vs_baseline": base_steps / steps if steps else None,
                     "diverged_at": a["diverged_at"]}
    return {"target_accuracy": target, "rows": rows}


def table_lines(t: dict) -> list[str]:
    base_paper = PAPER["Baseline"][0]
    rows = []
    for arm, r in t["rows"].items():
        p_steps, p_acc = PAPER.get(arm, (None, None))
        here = f"{r['steps_to_target']:,}" if r["steps_to_target"] else "not reached"
        ratio = f"{r['speedup_vs_baseline']:.1f}x" if r["speedup_vs_baseline"] else "—"
        rows.append([arm, f"{p_steps / 1e6:.1f}e6" if p_steps else "—", f"{p_acc}%" if p_acc else "—",
                     f"{base_paper / p_steps:.1f}x" if p_steps else "—", here,
                     _pct(r["best_test_accuracy"]), ratio, stats.diverged_text(r["diverged_at"])])
    return [report.table(["arm", "paper: steps to 72.2%", "paper: max acc", "paper: speed-up",
                          "here: steps to target", "here: best acc", "here: speed-up", "diverged"], rows), ""]


def _pct(mean_std: tuple[float, float]) -> str:
    text = stats.fmt(*mean_std)
    return "every seed diverged" if text == "—" else text + "%"


def verdicts(r: dict) -> list[str]:
    def speed(arm: str, what: str) -> str:
        paper_x, x = PAPER["Baseline"][0] / PAPER[arm][0], r[arm]["speedup_vs_baseline"]
        if x is None:
            return f"**Not supported here**: {what} (paper {paper_x:.1f}x fewer steps; here it never reached the target)."
        word = "Supported" if x > 1.0 else "Not supported here"
        return f"**{word}**: {what} — paper {paper_x:.1f}x fewer steps than Baseline, here {x:.1f}x."

    out = [speed("BN-Baseline", "BN alone reaches the Baseline's best accuracy in fewer steps"),
           speed("BN-x5", "BN with 5x the learning rate trains much faster"),
           speed("BN-x30", "BN with 30x the learning rate still trains fast"),
           stats.verdict(r["BN-x30"]["best_test_accuracy"], r["BN-x5"]["best_test_accuracy"],
                         claim="BN-x30 ends with a higher best accuracy than BN-x5 (paper 74.8% vs 73.0%)"),
           stats.verdict(r["BN-x5"]["best_test_accuracy"], r["BN-x5-Sigmoid"]["best_test_accuracy"],
                         claim="with BN a sigmoid network trains, but below ReLU (paper 69.8% vs 73.0%)")]
    div = [d for d in r["Baseline-x5"]["diverged_at"] if d is not None]
    if div:
        out.append(f"**Supported**: without BN, 5x the learning rate diverges — {len(div)} of "
                   f"{len(r['Baseline-x5']['diverged_at'])} seeds, first at step {min(div)}.")
    else:
        out.append(stats.verdict(r["BN-x5"]["best_test_accuracy"], r["Baseline-x5"]["best_test_accuracy"],
                                 claim="without BN, 5x the learning rate does worse than with BN "
                                       "(the paper reports it failing); no seed diverged here"))
    return ["- " + v for v in out]


def analyze(runs: dict, workdir: str, s: Settings) -> dict:
    a = stats.summarize(runs)
    plots.curves_figure(runs, os.path.join(workdir, "lr_table.png"),
                        title=f"BN paper's learning-rate arms, small scale ({s.data})")
    t = table(a)
    lines = [f"Paper ({PAPER_SOURCE}): steps to reach Inception's best accuracy (72.2%) and the best accuracy.",
             f"Here: steps for the mean test accuracy over seeds to reach the Baseline's best mean "
             f"({t['target_accuracy'] * 100:.2f}%), and the best test accuracy (mean ± std).", "",
             "![learning-rate arms](lr_table.png)", ""]
    lines += table_lines(t) + verdicts(t["rows"])
    return {"figures": {"curves": "lr_table.png"}, "arms": a, "table": t, "paper": PAPER, "report": lines}


EXPERIMENT = Experiment(name="lr_table", title="The BN paper's learning-rate table, at small scale", arms=arms,
                        analyze=analyze, doc=__doc__, workdir="runs/lr_table", paper=PAPER)


def main(argv=None) -> dict:
    return _cli.experiment_main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
