"""Where BN degrades at small batches: ConvNet test accuracy at batch sizes 8..512 with BN,
Ghost BN (virtual batches of 16), Batch Renorm and GroupNorm (4 groups), the same number
of epochs for every batch size (Adam, learning rate 1e-3). For BN also the test accuracy
with Algorithm 2's population statistics instead of the running averages.

    python -m experiments.batch_size --workdir runs/batch_size --data mnist --epochs 1

Writes batch_size.png and results.json and prints the table.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt

from bnjax import data as data_lib
from bnjax import experiment, runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.report import table
from experiments import _cli

BATCHES = (8, 16, 32, 64, 128, 256, 512)
NORMS = {"BN": "batch", "Ghost BN (16)": "ghost", "Batch Renorm": "renorm", "GroupNorm": "group"}


def config(norm: str, batch: int, n_train: int, epochs: float, data: str) -> TrainConfig:
    steps = max(1, int(epochs * n_train) // batch)
    return TrainConfig(
        model=ModelConfig(arch="convnet", activation="relu", norm=norm, virtual_batch_size=min(batch, 16),
                          renorm_warmup=steps // 10, renorm_ramp=max(1, steps * 4 // 10)),
        optim=OptimConfig(name="adam", learning_rate=1e-3),
        data=DataConfig(source=data, batch_size=batch), steps=steps, eval_every=max(1, steps // 4),
        checkpoint_every=max(1, steps // 2),
        population_stats_batches=min(n_train // batch, max(5, 4096 // batch)) if norm == "batch" else 0)


def run(workdir: str, *, data: str, seeds: int, epochs: float, batches=BATCHES, progress: bool = True) -> dict:
    os.makedirs(workdir, exist_ok=True)
    n_train = len(data_lib.load(data).y_train)
    batches = [b for b in batches if b <= n_train]
    arms = {f"{name} @ {b}": config(norm, b, n_train, epochs, data) for b in batches for name, norm in NORMS.items()}
    runs = experiment.run_arms(arms, range(seeds), os.path.join(workdir, "runs"), progress=progress)
    stats = experiment.summarize(runs)
    pop = {b: experiment.mean_std([r.summary.get("test_accuracy_population_stats") for r in runs[f"BN @ {b}"]])
           for b in batches}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in NORMS:
        m = [stats[f"{name} @ {b}"]["final_test_accuracy"] for b in batches]
        ax.errorbar(batches, [v[0] for v in m], yerr=[v[1] for v in m], marker="o", capsize=3, label=name)
    ax.errorbar(batches, [pop[b][0] for b in batches], yerr=[pop[b][1] for b in batches], marker="x",
                linestyle=":", capsize=3, label="BN, population statistics (Alg. 2)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"test accuracy after {epochs:g} epoch(s)")
    ax.set_title(f"Normalisers across batch sizes ({data}, {seeds} seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "batch_size.png"), dpi=110)
    plt.close(fig)
    rows = [[str(b)] + [experiment.fmt(*stats[f"{n} @ {b}"]["final_test_accuracy"]) for n in NORMS]
            + [experiment.fmt(*pop[b])] for b in batches]
    md = table(["batch"] + list(NORMS) + ["BN, population stats"], rows)
    results = {"arms": stats, "population": {str(b): pop[b] for b in batches}, "table": md}
    runlog.write_json(os.path.join(workdir, "results.json"), results)
    return results


def main(argv=None) -> None:
    p = _cli.experiment_parser(__doc__, workdir="runs/batch_size")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs per run (default: 1)")
    args = p.parse_args(argv)
    data = _cli.data_source(p, args)
    _cli.apply_runs_flag(args)
    if args.epochs <= 0:
        p.error(f"--epochs must be > 0, got {args.epochs}")
    res = run(args.workdir, data=data, seeds=args.seeds, epochs=args.epochs * (3 if args.quick else 1),
              progress=not args.quiet)
    print(res["table"])


if __name__ == "__main__":
    main()
