"""Compare finished runs without retraining: a table of final/best accuracy and a figure
of their curves.

    python -m experiments.analyze runs/fig1/without_bn/seed_0 runs/fig1/with_bn/seed_0 --out runs/compare.png
    python -m experiments.analyze runs/fig1/with_bn/seed_0 --evaluate --population-batches 50

Each argument is a run directory (or an experiment directory: every run below it).
"""

from __future__ import annotations

import glob
import os

from bnjax import analysis, plots, runlog, stats
from experiments import _cli
from experiments.bench._timing import table


def find_runs(paths: list[str]) -> list[str]:
    """Run directories named by, or found below, each path."""
    out = []
    for p in paths:
        if os.path.exists(os.path.join(p, "config.json")):
            out.append(p)
        else:
            found = sorted(os.path.dirname(c) for c in glob.glob(os.path.join(p, "**", "config.json"),
                                                                 recursive=True))
            if not found:
                raise FileNotFoundError(f"no bnjax run in {p}")
            out.extend(found)
    return out


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("runs", nargs="+", help="run or experiment directories")
    p.add_argument("--out", default=None, help="PNG of the curves (default: no figure)")
    p.add_argument("--evaluate", action="store_true", help="reload each checkpoint and evaluate it on the test set")
    p.add_argument("--population-batches", type=int, default=0,
                   help="with --evaluate: also evaluate with Algorithm 2 statistics over this many batches")
    args = _cli.parse(p, argv)
    try:
        dirs = find_runs(args.runs)
    except FileNotFoundError as e:
        p.error(str(e))
    rows, arms = [], {}
    for d in dirs:
        hist = runlog.read_metrics(d)
        res_path = os.path.join(d, "results.json")
        s = runlog.read_json(res_path) if os.path.exists(res_path) else {}
        div = s.get("diverged_at")
        row = [d, str(s.get("final_step", "running")), _pct(s.get("final_test_accuracy")),
               _pct(s.get("last_evaluated_test_accuracy")),
               _pct(s.get("test_accuracy_at_best")), "" if div is None else str(div)]
        if args.evaluate:
            row += _reloaded(d, args.population_batches)
        rows.append(row)
        cfg = runlog.read_json(os.path.join(d, "config.json"))
        arms[d] = [stats.Run(d, cfg["seed"], None, hist, s)]
    header = ["run", "last evaluated step", "final test acc % (chance if diverged)", "last evaluated test acc %",
              "test acc % at best val step", "diverged at"]
    if args.evaluate:
        header.append("reloaded test acc %")
        if args.population_batches:
            header.append("with population stats %")
    print(table(header, rows))
    if args.out:
        plots.curves_figure(arms, args.out, title="runs compared")
        print(f"figure: {args.out}")


def _reloaded(d: str, population_batches: int) -> list[str]:
    """Test accuracy of the run's newest checkpoint (and with population statistics), or
    why there is none."""
    try:
        run = analysis.load_run(d)
    except (FileNotFoundError, ValueError) as e:
        return [f"— ({e})"] + (["—"] if population_batches else [])
    out = [_pct(analysis.evaluate(run)["accuracy"])]
    if population_batches:
        out.append(_pct(analysis.evaluate(run, population_batches=population_batches)["accuracy"]))
    return out


def _pct(v) -> str:
    return "—" if v is None or v != v else f"{v * 100:.2f}"


if __name__ == "__main__":
    main()
