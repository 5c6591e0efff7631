"""Run every experiment of the lecture and write one report.

    python -m experiments.reproduce --quick --workdir runs/quick      # digits, 3-4 min on 2 CPUs (~2 with a warm cache)
    python -m experiments.reproduce --data mnist --workdir runs/full          # real MNIST
    python -m experiments.reproduce --data npz:data_local/cifar10_jpeg.npz --workdir runs/cifar   # CPU tier
    python -m experiments.reproduce --data cifar10 --tier gpu --workdir runs/cifar     # VGG tier (GPU)

Runs placement, the BN paper's learning-rate table, the ablation, with/without
normalisation (with Figure 1), augmentation, the learning-rate sweep and depth, 5 seeds
per MLP arm and 3 per ConvNet arm (--seeds N: N for every arm). On 32x32 colour images
(CIFAR-10/100 or such an npz) the suite is a natural-image tier (experiments/tiers.py):
cpu (default on a CPU) or gpu (default on GPU/TPU). Experiments share one pool of
runs (WORKDIR/runs) so an arm used by two experiments trains once. An interrupted run
continues where it stopped: finished runs whose config, data and code match are read
back. Config overrides (--SECTION.FIELD VALUE) apply to every arm of every experiment.
Writes WORKDIR/report.md with every figure and table next to the lecture's or the
paper's number.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence

from bnjax import breakdown, data, jobs, report, runlog, stats
from bnjax import protocol as protocol_lib
from bnjax import pool as pool_lib
from bnjax.experiment import build_arms, refuse_stale, seeds_of, train_share, write_results
from bnjax.timing import Phases
from experiments import (_cli, _executor, ablation, augmentation, batch_size, depth, lr_sweep, lr_table, normalization,
                         placement, tiers)

EXPERIMENTS = {e.name: e for e in (placement.EXPERIMENT, lr_table.EXPERIMENT, ablation.EXPERIMENT,
                                   normalization.EXPERIMENT, augmentation.EXPERIMENT, lr_sweep.EXPERIMENT,
                                   depth.EXPERIMENT, batch_size.EXPERIMENT)}
DEFAULT = ("placement", "lr_table", "ablation", "normalization", "augmentation", "lr_sweep", "depth")
# batch_size: ask with --only
SUITE = "suite.json"  # the invocation: its arguments, git state, versions, code version and times


def parser() -> argparse.ArgumentParser:
    """This entry point's flags (also what each job parses: `section_job`)."""
    p = _cli.experiment_parser(__doc__, "runs/reproduce")
    p.add_argument("--only", default=None, help=f"comma-separated experiments, of {', '.join(EXPERIMENTS)} "
                                                f"(default: {', '.join(DEFAULT)}; on 32x32 colour images "
                                                f"the tier's: {tiers.SECTIONS})")
    p.add_argument("--epochs", type=float, default=1.0, help="batch_size experiment: epochs per run (default: 1)")
    _executor.add_flags(p)
    return p


def main(argv=None, *, figures: bool = True) -> None:
    """The entry point; ``figures=False`` (Python only) writes the report, results and
    verdicts without drawing figures: for callers that read only numbers and verdicts
    (`experiments.protocol`'s re-analysis of its pilot, in a temporary copy)."""
    _cli.one_line_warnings()
    p = parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    suite = None
    if args.reanalyze:  # the stored invocation decides the arms; this one names the workdir (and may re-choose the
        suite = _stored_suite(p, args.workdir)  # primary metric: an analysis choice, not a training one)
        metric = ["--metric", args.metric] if args.metric else []
        args = p.parse_args([*suite["argv"], "--reanalyze", "--workdir", args.workdir, *metric])
    execution = _executor.config_from(p, args, args.workdir) if not args.reanalyze else None
    sets = _pin(p, execution)  # before anything starts JAX's CPU backend
    tier = _cli.tier_of(args.tier, args.data or ("digits" if args.quick else "mnist"))
    names = sections(args.only, tier)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"--only: unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}")
    settings = dataclasses.replace(_cli.settings_from(p, [EXPERIMENTS[n] for n in names], args=args), figures=figures)
    if suite is None:
        stored = argv if not tier or "--tier" in argv else [*argv, "--tier", tier]  # re-analysis needs no data
        suite = {"argv": stored, "git": runlog.git_state(),  # the tree as the suite starts: what made its numbers
                 "versions": runlog.versions(), "code": runlog.code_version(), "backend": _backend(),
                 "xla_cache": _cli.cache_dir(args) or "off"}
        if settings.protocol is not None:  # checked committed by settings_from
            suite["protocol"] = {"path": settings.protocol.path, "sha256": settings.protocol.sha256,
                                 "commit": protocol_lib.commit_of(settings.protocol.path)}
    settings = _cli.with_progress(settings, [EXPERIMENTS[n] for n in names], os.path.join(settings.workdir, "runs"),
                                  parallel=execution.jobs if execution else 1)
    _cli.guarded(refuse_stale, [EXPERIMENTS[n] for n in names], settings)  # --stale refuse: before anything trains
    slots = _start_jobs(execution, _executor.job_argv(argv), names, sets) if execution else None
    try:
        results = _run_sections(names, settings, suite, slots)
    except BaseException:
        if slots is not None:
            slots.cancel()
        raise
    if slots is not None:
        suite["executor"] = {"engine": execution.engine, "jobs": execution.jobs, "failed": slots.failed}
        suite["workers"] = [{"worker": k, "cores": sets[k] if sets else None, "sections": s["sections"]}
                            for k, s in enumerate(slots.summaries)]
    if settings.tracker is not None:
        settings.tracker.close()
    counts = report.finalize(results)
    for name, res in results.items():
        write_results(res, os.path.join(settings.workdir, name))
    header = _header(settings, results, suite, counts)
    parts = [(name, EXPERIMENTS[name].title, results[name]["report"]) for name in names]
    path = report.write(os.path.join(settings.workdir, "report.md"), parts, header=header)
    runlog.write_json(os.path.join(settings.workdir, SUITE), suite)
    runlog.write_json(os.path.join(settings.workdir, "timing.json"), {"total_s": suite["total_s"],
                                                                      **suite["seconds"]})
    print(f"report: {path}")


def _pin(p: argparse.ArgumentParser, execution: jobs.ExecutorConfig | None) -> list[list[int]] | None:
    """Local jobs: pin this process to the first slot's cores, so a run it trains itself
    (one a dead job left) is made as the jobs make theirs; returns the slots' core sets
    (None: no local jobs). Exits 2 where they cannot be pinned or are not for this backend."""
    if execution is None or execution.engine != "local":
        return None
    try:
        sets = jobs.core_sets(execution.jobs)
    except ValueError as e:
        p.error(f"--executor: {e}")
    jobs.pin(sets[0])
    if _backend() != "cpu":
        p.error(f"--executor local is for the CPU backend (this one is {_backend()}); on a GPU or TPU, --runs "
                "together trains runs in one program")
    return sets


def _start_jobs(execution: jobs.ExecutorConfig, argv: list[str], names: list[str],
                sets: list[list[int]] | None) -> jobs.Slots:
    """Start each slot's first job (`bnjax.jobs.Slots`); the parent collects them section
    by section in `_run_sections`."""
    executor = _cli.guarded(jobs.make_executor, execution)
    n = execution.jobs

    job = importlib.import_module("experiments.reproduce").section_job  # by reference, also when run as __main__

    def submit(name: str, slot: int):
        return jobs.submit(executor, execution.engine, job, argv, name, slot, n, sets[slot] if sets else None)

    print(f"jobs: {n} at once through submitit ({execution.engine}); job files in {execution.folder}", flush=True)
    return jobs.Slots(submit, names, n, retries=execution.retries)


def section_job(argv: list[str], name: str, slot: int, n_slots: int, cores: list[int] | None) -> dict:
    """One job (in its own process, started by the engine): slot ``slot``'s share of
    section ``name``'s training, nothing else. Returns the runs it trained, its seconds,
    where they went and the XLA programs it compiled or loaded."""
    if cores is not None:
        jobs.pin(cores)  # before anything starts JAX's CPU backend
    t0 = time.perf_counter()
    p = parser()
    args = p.parse_args(argv)
    settings = _cli.settings_from(p, [EXPERIMENTS[name]], args=args)
    phases = Phases()
    with _cli.interruptible():  # Ctrl-C or a cancel: the running run saves its checkpoint first
        n = train_share(EXPERIMENTS[name], dataclasses.replace(
            settings, workdir=os.path.join(settings.workdir, name), pool=os.path.join(settings.workdir, "runs"),
            progress=False), phases, start=slot / n_slots)  # slots start at different programs: each compiles its own
    print(f"slot {slot}: {name}: trained {n} run(s) in {time.perf_counter() - t0:.0f} s", flush=True)
    return {"trained": n, "seconds": time.perf_counter() - t0, "time_s": phases.seconds, "programs": phases.programs,
            "pid": os.getpid()}


def _stored_suite(p, workdir: str) -> dict:
    path = os.path.join(workdir, SUITE)
    if not os.path.exists(path):
        p.error(f"--reanalyze: {path} does not exist: the workdir holds no suite written by this version of "
                "experiments.reproduce (train it once, or give the experiment's own flags to its script)")
    return runlog.read_json(path)


def _run_sections(names: list[str], settings, suite: dict, slots: jobs.Slots | None = None) -> dict:
    """Train (or re-read) and analyse each section; times each, unless re-analysing (the
    stored invocation's times are kept). With ``slots``, jobs train: each section is
    analysed once every slot's job for it has ended (runs a dead job left are trained here)."""
    pool = os.path.join(settings.workdir, "runs")
    results, seconds = {}, {}
    finished = _executor.Finished(_labels(names, settings, pool), settings.tracker) if slots is not None else None
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        waited = slots.wait_for(name, finished) if slots is not None else 0.0
        results[name] = _cli.run(EXPERIMENTS[name], dataclasses.replace(
            settings, workdir=os.path.join(settings.workdir, name), pool=pool))
        if not settings.reanalyze:
            results[name]["time_s"]["wait"] = results[name]["time_s"].get("wait", 0.0) + waited
        seconds[name] = time.perf_counter() - t0
        print(f"   {seconds[name]:.0f} s", flush=True)
    if settings.reanalyze:
        for name in names:
            results[name]["train_wall_s"] = suite["train_wall_s"][name]
            results[name]["time_s"] = suite["time_s"][name]
            results[name]["programs"] = suite.get("programs", {}).get(name)  # not recorded before the XLA cache
    else:
        suite.update(seconds=seconds, total_s=time.perf_counter() - t_all,
                     train_wall_s={n: r["train_wall_s"] for n, r in results.items()},
                     time_s={n: r["time_s"] for n, r in results.items()},
                     programs={n: r["programs"] for n, r in results.items()})
    return results


def _labels(names: list[str], settings, pool: str) -> dict[str, str]:
    """Run directory -> label, of every run of the sections ``names``."""
    labels = {}
    for name in names:
        arms = build_arms(EXPERIMENTS[name], settings)
        labels.update(pool_lib.run_labels(arms, seeds_of(arms, settings, name), pool, steps=settings.steps))
    return labels


def sections(only: str | None, tier: str) -> list[str]:
    """The experiments to run: those named in ``only`` (comma-separated), else the
    tier's (`experiments.tiers.SECTIONS`) on 32x32 colour images, `DEFAULT` otherwise."""
    if only is not None:
        return [n.strip() for n in only.split(",")]
    return list(tiers.SECTIONS[tier] if tier else DEFAULT)


def _backend() -> str:
    import jax

    return jax.default_backend()


def _versions_text(metas: list[dict]) -> str:
    """The library versions the runs were made with (from their records, not this
    process): one line when all agree, else each set with its count of runs."""
    sets: dict[str, int] = {}
    for m in metas:
        v = m.get("versions", {})
        key = ", ".join(f"{lib} {v.get(lib, 'not recorded')}" for lib in runlog.NUMBER_LIBRARIES)
        sets[key] = sets.get(key, 0) + 1
    if len(sets) == 1:
        return f"Runs made with {next(iter(sets))}."
    return "Runs made with different libraries: " + "; ".join(f"{n} runs with {k}" for k, n in sets.items()) + "."


def _cores_text(metas: list[dict]) -> str:
    """The CPU cores of the processes that trained the runs (XLA's CPU thread count, which
    decides the last bits of a CPU run); empty when no run recorded them."""
    counts: dict[int, int] = {}
    for m in metas:
        if m.get("backend") == "cpu" and "cpu_cores" in m:
            counts[m["cpu_cores"]] = counts.get(m["cpu_cores"], 0) + 1
    if not counts:
        return ""
    parts = [f"{c} core{'s' if c > 1 else ''} ({n} runs)" for c, n in sorted(counts.items())]
    return " CPU cores of the process that trained each run: " + ", ".join(parts) + "."


def _trained_text(suite: dict, wall_s: float) -> str:
    workers = suite.get("workers", [])
    if not workers:
        return f"this invocation spent {wall_s / 60:.2f} min (wall) training"
    n = sum(s["trained"] for w in workers for s in w["sections"].values())
    if "executor" in suite:
        ex, count = suite["executor"], sum(s.get("attempts", 1) for w in workers for s in w["sections"].values())
        text = f"{count} jobs ({ex['jobs']} at once, submitit's {ex['engine']} executor) trained {n} of them"
    else:  # suites made before the executor: worker processes
        text = f"{len(workers)} worker processes (one per core set) trained {n} of them"
    return text + (f" and this process trained for {wall_s / 60:.2f} min (wall)" if wall_s > 0 else "")


def _header(settings, results: dict, suite: dict, counts: dict) -> list[str]:
    """The report's header, from the stored invocation (``suite``) and the run records."""
    run_dirs = sorted({d for r in results.values() for d in r["run_dirs"]})
    summaries = [runlog.read_json(os.path.join(d, "results.json")) for d in run_dirs]
    metas = [runlog.read_json(os.path.join(d, "meta.json")) for d in run_dirs]
    train_s, wall_s = sum(s["train_seconds"] for s in summaries), sum(suite["train_wall_s"].values())
    git, code, seconds = suite["git"], suite["code"], suite["seconds"]
    tree = _provenance(git, metas)
    other = [os.path.relpath(d, settings.workdir) for d, m in zip(run_dirs, metas, strict=True)
             if not runlog.same_code(m.get("code_version"), code)]
    prints = sorted({json.dumps(m.get("data_fingerprint"), sort_keys=True) for m in metas})
    fp = ", ".join(f"`{json.loads(p)['source']}` checksum `{json.loads(p)['checksum']}`" for p in prints if p != "null")
    command = shlex.join(["python", "-m", "experiments.reproduce", *suite["argv"]])
    per_arm = settings.seeds or ("per section and network kind, as the protocol says" if settings.protocol else
                                 "5 per MLP arm and 3 per ConvNet arm")
    seeds = f"{per_arm}, from seed {settings.first_seed}" if settings.first_seed else per_arm
    return [
        "# bnjax reproduction report", "",
        f"Command: `{command}`", "",
        _design_text(suite, settings), "",
        f"Code: commit `{git['commit'][:12]}`; bnjax sources `{code['sources']}`"
        + (f"; {len(other)} runs made by other code: " + ", ".join(other) if other else
           f"; all {len(run_dirs)} runs were made by this code") + f". Git tree: {tree}.",
        f"Data: {data.label(settings.data)}, {fp}{' (quick mode: short schedules)' if settings.quick else ''}; seeds: {seeds}; tables give "
        "mean ± std over seeds (n per arm in the tables)."
        + (f" Tier: {settings.tier} (experiments/tiers.py); backend: {suite.get('backend', 'not recorded')}."
           if settings.tier else ""),
        f"Time: this invocation {suite['total_s'] / 60:.1f} min ({', '.join(f'{k} {seconds[k]:.0f} s' for k in results)}); "
        f"{len(run_dirs)} runs, whose recorded training times (including evaluations; a group's time shared among "
        f"its runs) add up to {train_s / 60:.2f} min; "
        + _trained_text(suite, wall_s) + " (runs finished by an earlier invocation are read back, "
        "not retrained).",
        _versions_text(metas) + _cores_text(metas), "",
        *breakdown.lines(results, suite),
        f"How to read it: {stats.RULES}", "",
        report.multiplicity_text(counts), "",
        "Re-render this report from its run records, without training or data: `python -m experiments.reproduce "
        "--reanalyze --workdir DIR` (DIR: this report's folder).",
    ]


def _design_text(suite: dict, settings) -> str:
    """The report's first statement: a confirmatory suite names its protocol and the commit
    it was committed in (before the runs); any other suite is a pilot."""
    metric = protocol_lib.METRIC_WORDS[settings.metric]
    if "protocol" in suite:
        p = suite["protocol"]
        return (f"Design: **Confirmatory**. The protocol `{p['path']}` (commit `{p['commit'][:12]}`, SHA-256 "
                f"`{p['sha256'][:16]}`), committed before these runs, fixed their seeds (fresh: from seed "
                f"{settings.first_seed}, none shared with the pilot), the seeds per arm and the primary metric "
                f"({metric}); its numbers are reported as they came.")
    return ("Design: **Pilot**. No protocol fixed these runs' seeds or metric in advance (primary metric: "
            f"{metric}); their per-seed spreads are what a confirmatory protocol is chosen from "
            "(`python -m experiments.protocol`, docs/reproducing.md).")


def _provenance(git: dict, metas: list[dict]) -> str:
    """What the git tree held: when the suite started (``git``), and when each run started
    (its ``meta.json``: the code files then modified, or, for runs recorded before they
    were, only whether any tracked file was)."""
    start = runlog.code_changes(git["modified"])
    text = ("clean" if not git["modified"] else "code files modified: " + ", ".join(start) if start
            else f"{len(git['modified'])} tracked non-code files modified") + " when the suite started"
    changed = sorted({f for m in metas for f in m.get("git_code_changes", [])})
    unknown = sum("git_code_changes" not in m and str(m.get("git", "")).endswith("+dirty") for m in metas)
    if changed:
        n = sum(bool(m.get("git_code_changes")) for m in metas)
        text += f"; {n} of {len(metas)} runs started while code files differed from it: " + ", ".join(changed)
    if unknown:
        text += (f"; {unknown} of {len(metas)} runs started with tracked files modified, which ones not recorded "
                 "(runs made before session 9; a suite whose workdir is in this checkout modifies its own committed "
                 "run records and reports, which counts)")
    return text


if __name__ == "__main__":
    main()
