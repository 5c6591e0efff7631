"""The README's test command on two commits, side by side: how much faster the suite
runs than it did at an earlier commit, measured as a ratio (the machine drifts by 1.5x
over a day, so a time alone says little).

    python -m experiments.bench.suite_time --base afac4ae --base-venv /tmp/venv_afac4ae --base-minutes 9

Each commit is cloned fresh from this repository into a temporary directory, as CI
clones it, and its own README's test command (the second line of the README's first
code block) runs from the clone's root, with ``.venv`` a link to the virtual environment
given for that commit (``--base-venv``; ``--venv``, by default the one running this
script): install the base's venv from the base's own ``requirements.txt``, as a user of
that commit would have. The runs go head, base, base, head (``--rounds`` such blocks):
a drift linear in time weighs on both alike. Prints each run's wall and CPU seconds with
pytest's last line, and head's total over base's total; with ``--base-minutes`` (the
base suite's time when it was measured on a quiet machine) also what the ratio makes of
the head's time at that machine's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from experiments.bench._timing import table


def test_command(readme: str) -> str:
    """The README's test command: the second line of its first fenced code block."""
    lines = readme.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("```"))
        block = lines[start + 1:next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))]
    except StopIteration:
        raise ValueError("the README has no closed fenced code block") from None
    if len(block) < 2:
        raise ValueError(f"the README's first code block has {len(block)} line(s); the test command is its second")
    return block[1].strip()


def clone(repo: str, ref: str, venv: str, dest: str) -> str:
    """A fresh clone of ``repo`` at ``ref`` in ``dest`` with ``.venv`` linking to ``venv``; returns the commit."""
    subprocess.run(["git", "clone", "-q", repo, dest], check=True)
    subprocess.run(["git", "-C", dest, "checkout", "-q", ref], check=True)
    os.symlink(os.path.abspath(venv), os.path.join(dest, ".venv"))
    return subprocess.run(["git", "-C", dest, "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def timed_run(root: str, command: str) -> dict:
    """Run ``command`` (a shell line) in ``root``; wall and CPU (user + system of its processes) seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(["bash", "-c", command], cwd=root, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = proc.stdout.strip().splitlines()[-1:] or proc.stderr.strip().splitlines()[-1:] or [""]
    return {"wall_s": wall, "cpu_s": cpu, "returncode": proc.returncode, "last_line": tail[0]}


def order(rounds: int) -> list[str]:
    """``rounds`` blocks of head, base, base, head."""
    return ["head", "base", "base", "head"] * rounds


def measure(repo: str, refs: dict[str, str], venvs: dict[str, str], rounds: int, work: str) -> tuple[dict, list]:
    """Clone each ref once, then run its README test command in `order`, each time in a clean copy of its clone."""
    trees, commands, commits = {}, {}, {}
    for side, ref in refs.items():
        trees[side] = os.path.join(work, side)
        commits[side] = clone(repo, ref, venvs[side], trees[side])
        with open(os.path.join(trees[side], "README.md")) as f:
            commands[side] = test_command(f.read())
    runs = []
    for k, side in enumerate(order(rounds)):
        run_dir = os.path.join(work, f"run{k}_{side}")
        shutil.copytree(trees[side], run_dir, symlinks=True)  # each run from a clean checkout
        r = timed_run(run_dir, commands[side])
        shutil.rmtree(run_dir, ignore_errors=True)
        runs.append({"side": side, "commit": commits[side], **r})
        print(f"{side} {commits[side]}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, rc {r['returncode']}: "
              f"{r['last_line']}", flush=True)
    return {"commits": commits, "commands": commands}, runs


def summary(runs: list[dict], base_minutes: float | None) -> tuple[dict, str]:
    """Head's total wall (and CPU) time over base's, and the head's time at the speed on which base took ``base_minutes``."""
    tot = {side: {k: sum(r[k] for r in runs if r["side"] == side) for k in ("wall_s", "cpu_s")} for side in ("head", "base")}
    ratio = tot["head"]["wall_s"] / tot["base"]["wall_s"]
    res = {"wall_ratio": ratio, "cpu_ratio": tot["head"]["cpu_s"] / tot["base"]["cpu_s"], "totals": tot}
    rows = [[str(k + 1), r["side"], r["commit"], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", str(r["returncode"]),
             r["last_line"]] for k, r in enumerate(runs)]
    text = [table(["#", "side", "commit", "wall s", "CPU s", "rc", "last line"], rows), "",
            f"head / base, total wall time: {ratio:.3f} (CPU time: {res['cpu_ratio']:.3f})"]
    if base_minutes is not None:
        res["head_minutes_at_base_speed"] = ratio * base_minutes
        text.append(f"at the speed on which base took {base_minutes:g} minutes, head takes {ratio * base_minutes:.2f} "
                    "minutes")
    failed = [f"#{k + 1} {r['side']} (rc {r['returncode']})" for k, r in enumerate(runs) if r["returncode"] != 0]
    if failed:
        res["failed"] = failed
        text.append(f"FAILED runs (their times are not a suite's): {', '.join(failed)}")
    return res, "\n".join(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # compiles nothing: no XLA cache flags
    p.add_argument("--base", required=True, help="the earlier commit (any git ref)")
    p.add_argument("--head", default="HEAD", help="the commit to time against it (default: HEAD)")
    p.add_argument("--base-venv", required=True, help="virtual environment for the base commit (its requirements)")
    p.add_argument("--venv", default=sys.prefix, help="virtual environment for the head commit (default: this one)")
    p.add_argument("--rounds", type=int, default=1, help="blocks of head, base, base, head (default: 1)")
    p.add_argument("--base-minutes", type=float, default=None,
                   help="the base suite's minutes when it was measured (prints the head's minutes at that speed)")
    p.add_argument("--out", default=None, help="write the runs and the ratio to this JSON file")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.base_minutes is not None and args.base_minutes <= 0:
        p.error(f"--base-minutes must be > 0, got {args.base_minutes}")
    for flag, venv in (("--base-venv", args.base_venv), ("--venv", args.venv)):
        if not os.path.exists(os.path.join(venv, "bin", "python")):
            p.error(f"{flag}: {venv} has no bin/python (give a virtual environment's directory)")
    repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True).stdout.strip()
    if not repo:
        p.error("run from inside the repository's git checkout")
    with tempfile.TemporaryDirectory(prefix="bnjax-suite-time-") as work:
        try:
            meta, runs = measure(repo, {"head": args.head, "base": args.base},
                                 {"head": args.venv, "base": args.base_venv}, args.rounds, work)
        except subprocess.CalledProcessError as e:
            p.error(f"git failed: {' '.join(e.cmd)} (is the ref a commit of this repository?)")
        except ValueError as e:
            p.error(str(e))
    res, text = summary(runs, args.base_minutes)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**meta, "runs": runs, **res}, f, indent=1)
    if "failed" in res:
        sys.exit(1)


if __name__ == "__main__":
    main()
