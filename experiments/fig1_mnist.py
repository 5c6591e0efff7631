"""Figure 1 of the BN paper (Ioffe & Szegedy 2015, section 4.1) on MNIST.

The network: 784-100-100-100-10, sigmoid hidden units, trained for 50,000 steps with
mini-batches of 60 examples, with and without BN before each sigmoid. Recorded at every
evaluation: test accuracy, and the 15th/50th/85th percentiles over test examples of the
input of one sigmoid (unit 0) of the last hidden layer.

The paper leaves the optimiser, learning rate and initial weights open. bnjax uses
plain SGD, learning rate 0.1 (constant), weights N(0, 0.05^2), zero biases, no
weight decay - the same setting for both networks.

Run (real MNIST via tfds; here: --data npz:../shared/data/mnist.npz):
    python -m experiments.fig1_mnist --workdir runs/fig1 --data mnist
Expect: BN above the plain network at every evaluation after a few thousand steps
(about 98.2% vs 97.2% at the end) and a steadier 50th percentile with BN.
Writes WORKDIR/fig1.png and WORKDIR/results.json.
"""

from __future__ import annotations

import os
import sys

from bnjax import experiment, plots, runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, replace
from experiments import _cli

DEFAULTS = TrainConfig(
    model=ModelConfig(arch="mlp", hidden=(100, 100, 100), activation="sigmoid", init="normal", init_std=0.05),
    optim=OptimConfig(name="sgd", learning_rate=0.1),
    data=DataConfig(source="mnist", batch_size=60),
    steps=50_000, eval_every=500, checkpoint_every=5_000,
)


def arms(base: TrainConfig) -> dict[str, TrainConfig]:
    """The two networks of Figure 1."""
    return {"without_bn": replace(base, **{"model.norm": "none"}),
            "with_bn": replace(base, **{"model.norm": "batch", "model.placement": "before"})}


def run(base: TrainConfig, workdir: str, seeds: int, *, pool: str | None = None, progress: bool = True,
        steps: int | None = None) -> dict:
    """Train both arms (runs kept in ``pool``, default WORKDIR/runs), draw the figure,
    write results.json; returns the results."""
    os.makedirs(workdir, exist_ok=True)
    runs = experiment.run_arms(arms(base), range(seeds), pool or os.path.join(workdir, "runs"),
                                 progress=progress, steps=steps)
    layer = f"block{len(base.model.hidden) - 1}"
    plots.figure1(runs["without_bn"], runs["with_bn"], os.path.join(workdir, "fig1.png"),
                  layer=layer, unit=base.probe_unit)
    results = {"layer": layer, "unit": base.probe_unit, "arms": {}}
    for arm, rs in runs.items():
        steps, mean, std = experiment.curve(rs, "test_accuracy")
        p50 = [[r["probes"][layer][1] for r in run.history if "probes" in r] for run in rs]
        spread = [max(p) - min(p) for p in p50 if p]
        results["arms"][arm] = {
            "steps": steps.tolist(), "test_accuracy_mean": mean.tolist(), "test_accuracy_std": std.tolist(),
            "final_test_accuracy": experiment.mean_std([r.summary["final_test_accuracy"] for r in rs]),
            "p50_spread": experiment.mean_std(spread),
            "percentiles_seed0": [r["probes"][layer] for r in rs[0].history if "probes" in r],
            "diverged": [r.summary["diverged_at"] for r in rs],
        }
    runlog.write_json(os.path.join(workdir, "results.json"), results)
    return results


def main(argv=None) -> None:
    parser = _cli.make_parser(__doc__, DEFAULTS, workdir="runs/fig1", runs_flag=True)
    args, cfg = _cli.parse(parser, DEFAULTS, argv)
    res = run(cfg, args.workdir, args.seeds, progress=not args.quiet)
    for arm, r in res["arms"].items():
        m, s = r["final_test_accuracy"]
        print(f"{arm:>11}: final test accuracy {m * 100:.2f} ± {s * 100:.2f}%, "
              f"50th-percentile spread {r['p50_spread'][0]:.3f} ± {r['p50_spread'][1]:.3f}")
    print(f"figure: {os.path.join(args.workdir, 'fig1.png')}")


if __name__ == "__main__":
    sys.exit(main())
