"""With and without normalisation: the lecture's two plots (training loss and test
accuracy of the same ConvNet with and without BN), and Figure 1 of the BN paper.

    python -m experiments.normalization --workdir runs/normalization --data mnist

The ConvNet arms are the placement experiment's "no BN" and "BN before" arms (same
configs, so the reproduction suite trains them once). Writes normalization.png,
fig1.png and results.json.
"""

from __future__ import annotations

import os

from bnjax import runlog
from bnjax.config import replace
from experiments import _cli, fig1_mnist, placement


def run(workdir: str, *, quick: bool, data: str, seeds: int, pool: str | None = None,
        progress: bool = True, steps: int | None = None) -> dict:
    pool = pool or os.path.join(workdir, "runs")
    b = placement.bases(quick, data)["ConvNet"]
    arms = {"without BN": replace(b, **{"model.norm": "none"}), "with BN": replace(b, **{"model.norm": "batch"})}
    _, stats = _cli.train_arms(arms, workdir, "normalization.png",
                               f"ConvNet with and without batch normalisation ({data})", seeds=seeds, pool=pool,
                               progress=progress, steps=steps)
    f1 = fig1_mnist.DEFAULTS
    if quick:
        f1 = replace(f1, **{"steps": 3_000, "eval_every": 100, "checkpoint_every": 0})
    fig1 = fig1_mnist.run(replace(f1, **{"data.source": data}), workdir, seeds, pool=pool, progress=progress,
                          steps=steps)
    results = {"figures": {"curves": "normalization.png", "fig1": "fig1.png"}, "arms": stats, "fig1": fig1}
    runlog.write_json(os.path.join(workdir, "results.json"), results)
    return results


def main(argv=None) -> None:
    _cli.print_arms(_cli.experiment_main(__doc__, "runs/normalization", run, argv)["arms"])

if __name__ == "__main__":
    main()
