"""Train one config (any model, normaliser, optimiser, data set, augmentation).

    python -m experiments.train --workdir runs/cnn_flip --data mnist --model.arch convnet \\
        --model.norm batch --model.activation relu --data.augment hflip --steps 2000

Re-running the same command on the same --workdir resumes from the last checkpoint;
Ctrl-C saves a checkpoint first. Prints the final and best test accuracy.

Data parallel over all local devices: add --devices all (or a number). Over several hosts,
run the same command on each with --coordinator HOST0:PORT --num-processes N
--process-id I (see docs/speed.md, "More than one device").
"""

from __future__ import annotations

import argparse

from bnjax import config as config_lib
from bnjax import fit, parallel
from bnjax.config import ConfigError, TrainConfig
from experiments import _cli

DEFAULTS = TrainConfig()


def parser() -> argparse.ArgumentParser:
    p = _cli.parser(__doc__, usage="%(prog)s [-h] [--workdir DIR] [--data SOURCE] [--quiet] [--devices N] "
                                   "[--xla-cache DIR] [--SECTION.FIELD VALUE ...]")
    p.add_argument("--workdir", default="runs/train", help="run directory (default: runs/train)")
    p.add_argument("--data", default=None, help=f"{_cli.DATA_HELP} (default: {DEFAULTS.data.source})")
    p.add_argument("--seeds", type=int, default=1, help="must be 1: this trains one run (set its seed with --seed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("devices")
    g.add_argument("--devices", default=None, help="data parallel over this many devices, or 'all'")
    g.add_argument("--coordinator", default=None, help="multi-host: address:port of process 0")
    g.add_argument("--num-processes", type=int, default=None, help="multi-host: number of processes")
    g.add_argument("--process-id", type=int, default=None, help="multi-host: this process's index")
    g.add_argument("--cpu-collectives", default=None, help="e.g. gloo, for multi-process runs on CPU")
    _cli.add_config_flags(p, DEFAULTS)
    return p


def main(argv=None) -> None:
    _cli.one_line_warnings()
    p = parser()
    args = _cli.parse(p, argv)
    if args.seeds != 1:
        p.error("--seeds: experiments.train trains one run; set its seed with --seed")
    try:
        cfg = config_lib.replace(DEFAULTS, **_cli.overrides(args))
    except ConfigError as e:
        p.error(str(e))
    if args.cpu_collectives:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
    if args.coordinator or args.num_processes:
        parallel.initialize(args.coordinator, args.num_processes, args.process_id)
    mesh = None
    if args.devices is not None:
        try:
            mesh = parallel.make_mesh(None if args.devices == "all" else int(args.devices))
        except ValueError as e:
            p.error(f"--devices: {e}")
    try:
        with _cli.interruptible():
            res = fit(cfg, args.workdir, progress=not args.quiet and parallel.is_writer(), mesh=mesh)
    except _cli.USER_ERRORS as e:
        _cli.fail(str(e))
    s = res.summary
    if not parallel.is_writer():
        return
    if s["diverged_at"] is not None:
        print(f"diverged at step {s['diverged_at']} (non-finite training loss): its final test accuracy is chance, "
              f"{s['final_test_accuracy'] * 100:.2f}% (the diverged-run rule)")
    else:
        print(f"final test accuracy {s['final_test_accuracy'] * 100:.2f}% at step {s['final_step']}")
    print(f"selected by validation accuracy ({s['best_val_accuracy'] * 100:.2f}%): step {s['best_step']}, "
          f"test accuracy {s['test_accuracy_at_best'] * 100:.2f}%; run in {args.workdir}")


if __name__ == "__main__":
    main()
