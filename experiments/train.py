"""Train one config (any model, normaliser, optimiser, data set, augmentation).

    python -m experiments.train --workdir runs/cnn_flip --data mnist --model.arch convnet \\
        --model.norm batch --model.activation relu --data.augment hflip --steps 2000

Re-running the same command on the same --workdir resumes from the last checkpoint;
Ctrl-C saves a checkpoint first. Prints the final and best test accuracy.
"""

from __future__ import annotations

from bnjax import fit
from bnjax.config import TrainConfig
from bnjax.runlog import RunMismatchError
from experiments import _cli

DEFAULTS = TrainConfig()


def main(argv=None) -> None:
    parser = _cli.make_parser(__doc__, DEFAULTS, workdir="runs/train", seeds=1)
    args, cfg = _cli.parse(parser, DEFAULTS, argv)
    try:
        res = fit(cfg, args.workdir, progress=not args.quiet)
    except (RunMismatchError, PermissionError, FileNotFoundError, ValueError, RuntimeError) as e:
        _cli.fail(str(e))
    s = res.summary
    if s["diverged_at"] is not None:
        print(f"diverged at step {s['diverged_at']} (non-finite training loss)")
    print(f"final test accuracy {s['final_test_accuracy'] * 100:.2f}% at step {s['final_step']}, "
          f"best {s['best_test_accuracy'] * 100:.2f}% at step {s['best_step']}; run in {args.workdir}")


if __name__ == "__main__":
    main()
