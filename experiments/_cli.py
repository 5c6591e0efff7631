"""The command line of the entry points: one parser family. Every experiment script
takes ``--workdir --data --seeds --first-seed --quick --steps --runs --stale --quiet``, its own options
and ``--SECTION.FIELD VALUE`` overrides that apply to every arm; `experiments.train`
takes the same config flags for its one run. argparse lives only under experiments/.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

from bnjax import config as config_lib
from bnjax import data as data_lib
from bnjax import pool as pool_lib
from bnjax import protocol as protocol_lib
from bnjax import report, runlog, stats, xla_cache
from bnjax.checkpoint import CheckpointError
from bnjax.config import ConfigError, TrainConfig
from bnjax.experiment import Experiment, Settings, build_arms, run_dirs_of, run_experiment, write_results
from bnjax.progress import SuiteProgress
from experiments import tiers

# Problems with what the user asked for (config, data, workdir, pool, checkpoints): one line,
# exit 1. Anything else (an XLA error, a bug) keeps its traceback.
USER_ERRORS = (ConfigError, data_lib.DataError, pool_lib.StaleRunError, pool_lib.MissingRunsError,
               runlog.RunMismatchError, runlog.RunLockedError, runlog.LocksUnsupportedError, CheckpointError,
               FileNotFoundError, PermissionError)

DATA_HELP = "data source: digits | mnist | fashion_mnist | cifar10 | cifar100 | npz:PATH | idx:DIR"


def add_config_flags(p: argparse.ArgumentParser, defaults: TrainConfig, *, skip: Sequence[str] = ()) -> None:
    """One ``--section.field`` flag per config field (None unless given), shown with its default."""
    group = p.add_argument_group("config", "every TrainConfig field (see bnjax/config.py)")
    for name, value in config_lib.flatten(defaults).items():
        if name in skip:
            continue
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        group.add_argument(f"--{name}", dest=f"cfg:{name}", default=None, metavar=type(value).__name__.upper(),
                           help=f"(default: {shown})")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config flags that were given: ``{"model.norm": "batch", ...}``."""
    out = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
    if getattr(args, "data", None) is not None:
        out["data.source"] = args.data
    return out


def parser(doc: str, **kwargs: Any) -> argparse.ArgumentParser:
    """The parser every entry point starts from: no prefix matching of flags (``--seed``
    must not mean ``--seeds``) and the XLA cache flags (`add_cache_flags`)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False, **kwargs)
    add_cache_flags(p)
    return p


def add_cache_flags(p: argparse.ArgumentParser) -> None:
    """``--xla-cache DIR`` and ``--no-xla-cache`` (`bnjax.xla_cache`)."""
    g = p.add_argument_group("XLA compilation cache", "compiled programs are kept on disk and loaded by later "
                             "processes instead of compiled again (bitwise the same numbers)")
    g.add_argument("--xla-cache", default=None, metavar="DIR",
                   help=f"the cache directory (default: ${xla_cache.ENV}, else $XDG_CACHE_HOME/bnjax/xla, else "
                        "~/.cache/bnjax/xla)")
    g.add_argument("--no-xla-cache", action="store_true", help="compile everything in this process, keep nothing")


def cache_dir(args: argparse.Namespace) -> str | None:
    """The XLA cache directory the flags and the environment ask for (None: off)."""
    return None if args.no_xla_cache else xla_cache.resolve(args.xla_cache, os.environ)


def enable_cache(p: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """Turn on the XLA cache that ``args`` ask for; a bad choice exits 2 naming it."""
    if args.no_xla_cache and args.xla_cache is not None:
        p.error("--xla-cache and --no-xla-cache: give one of them")
    try:
        return xla_cache.enable(cache_dir(args))
    except (OSError, ValueError) as e:
        p.error(f"--xla-cache: {e}")


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse an entry point's flags and turn on the XLA cache they ask for."""
    args = p.parse_args(argv)
    enable_cache(p, args)
    return args


def experiment_parser(doc: str, workdir: str, options: dict | None = None) -> argparse.ArgumentParser:
    """The flags of an experiment script (``options``: its own flags and their defaults)."""
    p = parser(doc, usage="%(prog)s [-h] [--workdir DIR] [--data SOURCE] [--quick] [--seeds N] [--first-seed K] "
                          "[--steps N] [--runs MODE] [--stale POLICY] [--quiet] [--xla-cache DIR] [--metric M] "
                          "[--protocol FILE] "
                          "[--SECTION.FIELD VALUE ...]")
    p.add_argument("--workdir", default=workdir, help=f"output directory (default: {workdir})")
    p.add_argument("--data", default=None, help=f"{DATA_HELP} (default: mnist; digits with --quick)")
    p.add_argument("--quick", action="store_true", help="short schedules (offline digits unless --data)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: 5 for MLP arms, 3 for ConvNet arms)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds K, K+1, ... (default 0): fresh seeds for a confirmatory run, past a pilot's")
    p.add_argument("--steps", type=int, default=None, help="override every arm's training steps (smoke tests)")
    p.add_argument("--metric", choices=protocol_lib.METRICS, default=None,
                   help="the primary accuracy metric of the comparisons: the test accuracy at the last evaluation "
                        "(default) or at the validation-selected one")
    p.add_argument("--protocol", default=None, metavar="FILE",
                   help="run a committed confirmatory protocol (experiments/protocols/*.json): it sets the seeds "
                        "(fresh ones, per section and network kind) and the metric; the report says Confirmatory")
    p.add_argument("--runs", choices=pool_lib.RUNS_MODES, default="auto",
                   help="together: runs differing only in seed, learning-rate multiplier, weight decay or init "
                        "train in one compiled program; sequential: one after another; auto (default): "
                        "together except on CPU")
    p.add_argument("--stale", choices=pool_lib.STALE_POLICIES, default="retrain",
                   help="a run in the pool made with another config, data or code: set it aside and retrain "
                        "(default) or refuse")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tier", choices=("auto", "cpu", "gpu"), default="auto",
                   help="on 32x32 colour images (CIFAR-10): the two-core CPU tier or the VGG tier for a GPU (default "
                        "auto: cpu on a CPU backend, gpu on GPU/TPU; see experiments/tiers.py)")
    p.add_argument("--reanalyze", action="store_true",
                   help="re-render the report, figures and results.json from the run records in the workdir's pool, "
                        "without training or data (a missing run is an error)")
    for name, default in (options or {}).items():
        p.add_argument(f"--{name}", type=type(default), default=default, help=f"(default: {default})")
    add_config_flags(p, TrainConfig(), skip=("steps", "seed"))
    return p


def settings_from(p: argparse.ArgumentParser, exps: Sequence[Experiment], argv: Sequence[str] | None = None,
                  args: argparse.Namespace | None = None) -> Settings:
    """Parse experiment flags; a bad value exits 2 naming the flag or field, before any
    compute (the overrides are applied to every arm of every experiment in ``exps``)."""
    args = args if args is not None else p.parse_args(argv)
    enable_cache(p, args)
    cfg_overrides = overrides(args)
    data = cfg_overrides.pop("data.source", None) or ("digits" if args.quick else "mnist")
    try:
        proto = _protocol(args)
        settings = Settings(workdir=args.workdir, data=data, quick=args.quick, seeds=args.seeds,
                            first_seed=proto.first_seed if proto else args.first_seed, steps=args.steps,
                            metric=(proto.metric if proto else args.metric) or "final_test_accuracy", protocol=proto,
                            runs=args.runs, stale=args.stale, progress=not args.quiet, overrides=cfg_overrides,
                            options={k: getattr(args, k) for exp in exps for k in exp.options},
                            reanalyze=args.reanalyze, tier=tier_of(args.tier, data))
        for exp in exps:
            build_arms(exp, settings)  # every override is checked against every arm now
    except ConfigError as e:
        p.error(str(e))
    return settings


def _protocol(args: argparse.Namespace) -> protocol_lib.Protocol | None:
    """The ``--protocol`` file, checked (committed as it is, unless re-analysing); it sets
    the seeds and the metric, so flags that would too are refused."""
    if args.protocol is None:
        return None
    given = [f for f, v in (("--seeds", args.seeds), ("--first-seed", args.first_seed or None),
                            ("--metric", args.metric)) if v is not None]
    if given:
        raise ConfigError("protocol", f"the protocol sets the seeds and the metric: drop {', '.join(given)}")
    proto = protocol_lib.load(args.protocol)
    if not args.reanalyze:
        protocol_lib.commit_of(args.protocol)
    return proto


def tier_of(tier: str, source: str) -> str:
    """The invocation's tier (`experiments.tiers.resolve`) for a data source."""
    import jax

    try:
        natural = data_lib.natural_images(source)
    except ValueError:
        natural = False  # Settings names the bad source
    return tiers.resolve(tier, natural, jax.default_backend())


def run(exp: Experiment, settings: Settings) -> dict:
    """Run an experiment; a user error (`USER_ERRORS`: stale pool, missing data, bad
    workdir) exits 1 with one line; anything else keeps its traceback."""
    return guarded(run_experiment, exp, settings)


def guarded(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the entry points' error handling: a user error
    (`USER_ERRORS`) exits 1 with one line, Ctrl-C exits 130 (`interruptible`), anything
    else keeps its traceback."""
    try:
        with interruptible():
            return fn(*args, **kwargs)
    except USER_ERRORS as e:
        fail(str(e))
        raise  # unreachable: fail exits


def with_progress(settings: Settings, exps: Sequence[Experiment], pool: str, *, parallel: int = 1) -> Settings:
    """``settings`` with one `bnjax.progress.SuiteProgress` over the distinct runs of
    ``exps`` in ``pool`` (none when re-analysing: nothing trains); ``parallel``: the
    processes that train at once."""
    if settings.reanalyze:
        return settings
    total = len(run_dirs_of(exps, settings, pool))
    return dataclasses.replace(settings, tracker=SuiteProgress(total, bar=settings.progress, parallel=parallel))


def experiment_main(exp: Experiment, argv: Sequence[str] | None = None) -> dict:
    """The whole entry point of an experiment script: parse, run, write WORKDIR/report.md,
    print the section's tables and verdicts."""
    one_line_warnings()
    settings = settings_from(experiment_parser(exp.doc, exp.workdir, dict(exp.options)), [exp], argv)
    settings = with_progress(settings, [exp], settings.pool or os.path.join(settings.workdir, "runs"))
    results = run(exp, settings)
    if settings.tracker is not None:
        settings.tracker.close()
    counts = report.finalize({exp.name: results})
    write_results(results, settings.workdir)
    path = report.write(os.path.join(settings.workdir, "report.md"), [(".", exp.title, results["report"])],
                        header=[f"# bnjax: {exp.title}", "", f"Data: {data_lib.label(settings.data)} "
                                f"(`{settings.data}`); seeds per arm: "
                                f"{settings.seeds or '5 (MLP arms) or 3 (ConvNet arms)'}"
                                + (f"; tier: {settings.tier}" if settings.tier else "") + ".", "", stats.RULES, "",
                                report.multiplicity_text(counts)])
    print("\n".join(line for line in results["report"] if not line.startswith("![")))
    print(f"report: {path}")
    return results


def one_line_warnings() -> None:
    """Show warnings (a checkpoint set aside, a stale run) as one ``warning: ...`` line
    each, and keep the noise of orbax's writer threads shutting down after a failed save
    (tensorstore callbacks into a closed event loop, absl's copy of the error that the
    one ``error:`` line already gives) off the terminal."""
    import logging
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kw: f"warning: {message}\n"
    default = sys.excepthook

    def excepthook(kind, value, tb):
        if kind is RuntimeError and str(value) == "Event loop is closed":
            return  # a writer thread's callback after its loop closed: nothing the user can act on
        default(kind, value, tb)

    sys.excepthook = excepthook
    unraisable = sys.unraisablehook
    sys.unraisablehook = lambda u: None if (isinstance(u.exc_value, RuntimeError)
                                            and str(u.exc_value) == "Event loop is closed") else unraisable(u)
    logging.getLogger("absl").addFilter(lambda r: "_SignalingThread.run() raised an exception" not in r.getMessage())
    # a failed save's writer tasks end with "Task exception was never retrieved" and their traceback (seen under
    # load after a full disk): the error line already names the failure
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def fail(message: str) -> None:
    """Print an error for the user and exit 1 (a run-time problem, not a bad flag)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


@contextlib.contextmanager
def interruptible():
    """Ctrl-C: bnjax has saved the running run's checkpoint; say how to continue, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted: finished runs and a checkpoint of the current one are saved; run the same command "
              "to continue", file=sys.stderr)
        raise SystemExit(130) from None
