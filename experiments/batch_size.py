"""Where BN degrades at small batches: ConvNet test accuracy at batch sizes 8..512 with BN,
Ghost BN (virtual batches of 16), Batch Renorm and GroupNorm (4 groups), the same number
of epochs for every batch size (Adam, learning rate 1e-3). For BN also the test accuracy
with Algorithm 2's population statistics instead of the running averages. Ghost BN runs
only at batches above 16: at 8 and 16 a virtual batch of 16 is the whole batch, i.e. BN.

    python -m experiments.batch_size --workdir runs/batch_size --data mnist --epochs 1

Writes batch_size.png, results.json and report.md and prints the table.
"""

from __future__ import annotations


from bnjax import data as data_lib
from bnjax import plots, report, stats
from bnjax.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.experiment import Experiment, Settings
from bnjax.plots import plt  # pyplot with the Agg backend, imported on first use
from experiments import _cli

BATCHES = (8, 16, 32, 64, 128, 256, 512)
NORMS = {"BN": "batch", "Ghost BN (16)": "ghost", "Batch Renorm": "renorm", "GroupNorm": "group"}
GHOST = 16


def config(norm: str, batch: int, n_train: int, epochs: float, data: str) -> TrainConfig:
    steps = max(1, int(epochs * n_train) // batch)
    return TrainConfig(
        model=ModelConfig(arch="convnet", activation="relu", norm=norm,
                          virtual_batch_size=GHOST if norm == "ghost" else 0, renorm_warmup=steps // 10, renorm_ramp=max(1, steps * 4 // 10)),
        optim=OptimConfig(name="adam", learning_rate=1e-3),
        data=DataConfig(source=data, batch_size=batch), steps=steps, eval_every=max(1, steps // 4),
        checkpoint_every=max(1, steps // 2),
        population_stats_batches=min(n_train // batch, max(5, 4096 // batch)) if norm == "batch" else 0)


def _epochs(s: Settings) -> float:
    epochs = float(s.options.get("epochs", 1.0))
    if epochs <= 0:
        raise ConfigError("epochs", f"must be > 0, got {epochs}")
    return epochs * (3 if s.quick else 1)


def arms(s: Settings) -> dict[str, TrainConfig]:
    n_train = len(data_lib.load(s.data).y_train)
    return {f"{name} @ {b}": config(norm, b, n_train, _epochs(s), s.data)
            for b in BATCHES if b <= n_train for name, norm in NORMS.items() if norm != "ghost" or b > GHOST}


def analyze(runs: dict, workdir: str, s: Settings) -> dict:
    a = stats.summarize(runs)
    batches = sorted({int(k.rsplit("@ ", 1)[1]) for k in runs})
    pop = {b: stats.mean_std([r.summary.get("test_accuracy_population_stats") for r in runs[f"BN @ {b}"]])
           for b in batches}
    final = {(n, b): a[f"{n} @ {b}"]["final_test_accuracy"] for n in NORMS for b in batches if f"{n} @ {b}" in a}
    _figure(final, pop, batches, s.figure(workdir, "batch_size.png"), f"{data_lib.label(s.data)}, {s.seeds} seeds",
            _epochs(s))
    rows = [[str(b)] + [stats.fmt(*final[n, b]) if (n, b) in final else "— (= BN)" for n in NORMS]
            + [stats.fmt(*pop[b])] for b in batches]
    md = report.table(["batch"] + list(NORMS) + ["BN, population stats"], rows)
    lines = [f"Test accuracy % (mean ± std over seeds) after {_epochs(s):g} epoch(s) at each batch size.", "",
             "![batch size](batch_size.png)", "", md, ""]
    return {"arms": a, "population": {str(b): pop[b] for b in batches}, "table": md, "report": lines}


def _figure(final: dict, pop: dict, batches: list[int], path: str | None, what: str, epochs: float) -> None:
    if path is None:  # an analysis that draws no figures (`bnjax.experiment.Settings.figure`)
        return
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in NORMS:
        bs = [b for b in batches if (name, b) in final]
        ax.errorbar(bs, [final[name, b][0] for b in bs], yerr=[final[name, b][1] for b in bs], marker="o",
                    capsize=3, label=name)
    ax.errorbar(batches, [pop[b][0] for b in batches], yerr=[pop[b][1] for b in batches], marker="x",
                linestyle=":", capsize=3, label="BN, population statistics (Alg. 2)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"test accuracy after {epochs:g} epoch(s)")
    ax.set_title(f"Normalisers across batch sizes ({what})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plots.save(fig, path)


EXPERIMENT = Experiment(name="batch_size", title="Normalisers across batch sizes", arms=arms, analyze=analyze,
                        doc=__doc__, workdir="runs/batch_size", options={"epochs": 1.0})


def main(argv=None) -> dict:
    return _cli.experiment_main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
