"""Write a confirmatory protocol from a pilot suite: the primary metric, the seeds per arm for
each section and network kind, and fresh seeds, chosen from the pilot's per-seed spreads
before any confirmatory run (commit the file, then run it with ``reproduce --protocol``).

    python -m experiments.protocol experiments/results/mnist --out experiments/protocols/mnist.json

The choices, all from the pilot's numbers (`bnjax.protocol` reads the file):
* **Metric**: of the test accuracy at the last evaluation and at the validation-selected one,
  the one whose per-seed standard deviation is smaller in the median over the pilot's arms,
  for every accuracy comparison alike (the other stays in the tables).
* **Seeds**: per claim, the fewest seeds per arm that give 80% power at the claim's SESOI
  under its rule and the pilot's spreads under that metric (`bnjax.power.seeds_for`); per
  section and network kind, the most any of its claims needs, at least the pilot's, at most a
  cap per kind (MLP 20, ConvNet 10); a claim one arm alone decides (the divergence count)
  gives that arm its own count (``arm_seeds``) instead of raising its whole section.
* **Budget**: the suite's time estimated as the pilot's, scaled by the training time the new
  seed counts ask over the pilot's (per-run training times from the run records); while above
  the budget, the cap of the kind that costs more comes down one seed at a time (to 5 for
  MLPs, 4 for ConvNets); a claim that cannot reach 80% within its cap keeps its floor: the
  pilot's seeds, and never fewer than its rule needs to decide at all (4 for a rank rule, 6
  for a seed count), so that no confirmatory verdict comes from a design that cannot decide.
* Each claim's entry says whether it reaches 80% at its SESOI, and if not, what its design
  detects with 80% power and what the seeds it needs would cost.
* **Fresh seeds**: from ``--first-seed`` (default 100), past every pilot seed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import statistics
import tempfile
from collections import defaultdict

import numpy as np

from bnjax import power, report, runlog
from bnjax.protocol import METRICS
from bnjax.verdicts import SESOI, Verdict
from experiments import _cli
from experiments import power as power_cmd

CAPS = {"mlp": 20, "convnet": 10, "vgg": 10}
FLOORS = {"mlp": 5, "convnet": 4}  # the budget trims caps no lower (a claim's own floor still holds)


def choose_metric(pilot: str, sections: list[str]) -> tuple[str, dict]:
    """The accuracy metric with the smaller per-seed spread in the median over the pilot's
    arms, and the numbers behind the choice."""
    ratios, sds = [], {m: [] for m in METRICS}
    for name in sections:
        for arm in runlog.read_json(os.path.join(pilot, name, "results.json")).get("arms", {}).values():
            per = [np.asarray(arm["per_seed"][m], float) for m in METRICS]
            if min(v.size for v in per) < 2 or not all(np.isfinite(v).all() for v in per):
                continue
            s = [float(np.std(v, ddof=1)) for v in per]
            for m, x in zip(METRICS, s, strict=True):
                sds[m].append(x)
            if s[0] > 0:
                ratios.append(s[1] / s[0])
    median = {m: statistics.median(v) for m, v in sds.items()}
    metric = METRICS[1] if median[METRICS[1]] < median[METRICS[0]] else METRICS[0]
    return metric, {"arms": len(ratios), "median_sd_points": {m: round(100 * v, 3) for m, v in median.items()},
                    "median_sd_ratio_selected_over_final": round(statistics.median(ratios), 3)}


def run_kinds(pilot: str, sections: list[str]) -> tuple[dict, dict]:
    """Per run config of the pilot's pool: its network kind, mean training seconds per seed
    and the sections using it; and per section, a map from seeds per arm to network kind
    (the pilot's default seeds tell its kinds apart)."""
    configs: dict = {}
    by_n: dict = {}
    for name in sections:
        res = runlog.read_json(os.path.join(pilot, name, "results.json"))
        seeds = defaultdict(set)
        for rel in res["run_dirs"]:
            d = os.path.normpath(os.path.join(pilot, name, rel))
            seeds[os.path.dirname(d)].add(d)
        by_n[name] = {}
        for cfg_dir, dirs in seeds.items():
            runs = [runlog.read_json(os.path.join(d, "results.json")) for d in sorted(dirs)]
            arch = runlog.read_json(os.path.join(sorted(dirs)[0], "config.json"))["model"]["arch"]
            c = configs.setdefault(cfg_dir, {"arch": arch, "sections": set(), "n": len(dirs),
                                             "seconds": statistics.mean(r["train_seconds"] for r in runs)})
            c["sections"].add(name)
            by_n[name][len(dirs)] = arch
    return configs, by_n


def estimate_minutes(configs: dict, seeds: dict, pilot_s: float, arm_seeds: dict | None = None) -> float:
    """The suite's time with ``seeds`` (section -> kind -> n) and ``arm_seeds`` (section ->
    arm -> (n, kind)): the pilot's time ``pilot_s`` scaled by the training time the new seeds
    ask (each config's mean training time per seed times the most seeds any section using it
    asks; an arm's own extra seeds at its section's mean time per seed of its kind) over the
    pilot's. Proportional, so the pilot's compilation, evaluation and workers scale along."""
    def train(n_of) -> float:
        return sum(c["seconds"] * n_of(c) for c in configs.values())
    new = train(lambda c: max(seeds.get(s, {}).get(c["arch"], c["n"]) for s in c["sections"]))
    for section, arms in (arm_seeds or {}).items():
        for n, kind in arms.values():
            per_seed = statistics.mean(c["seconds"] for c in configs.values()
                                       if section in c["sections"] and c["arch"] == kind)
            new += per_seed * max(0, n - seeds.get(section, {}).get(kind, n))
    return pilot_s * new / train(lambda c: c["n"]) / 60


def _claim_entry(section: str, arch: str, v: Verdict, n: int, need: int | None) -> dict:
    effect = power_cmd.effect_of(v)
    d = power.design(v.rule, tuple(v.sd), (n,) if v.rule == "seed count" else (n, n), effect=effect)
    detect = d["detectable"]
    if v.unit == "x" and detect is not None:
        detect = math.exp(detect)
    entry = {"section": section, "kind": arch, "claim": v.claim, "rule": v.rule, "unit": v.unit, "sesoi": v.sesoi,
             "pilot": {"n": list(v.n), "sd": list(v.sd), "outcome": v.outcome, "power_at_sesoi": v.power},
             "seeds": n, "power_at_sesoi": d["power"], "min_p": d["min_p"], "detectable_at_80": detect,
             "seeds_for_80": need}
    ok = d["power"] is not None and d["power"] >= 0.8
    entry["note"] = ("80% power at the SESOI" if ok else
                     f"below 80% at the SESOI: {need or 'more than 40'} seeds per arm would be needed; at {n} it "
                     + ("cannot decide" if d["min_p"] is not None and d["min_p"] > 0.05 else
                        "detects " + ("no effect" if detect is None else report.effect_text(detect, v))
                        + " with 80% power"))
    return entry


def decidable_from(rule: str, alpha: float = 0.05) -> int:
    """The fewest seeds per arm at which some outcome of ``rule`` reaches ``alpha``: 4 for
    the rank rule (2 / C(8, 4) = 0.029), 6 for the seed count (2 / 2^6 = 0.031), 2 for Welch."""
    for n in range(2, 50):
        floor = power.min_p(rule, (n,) if rule == "seed count" else (n, n))
        if floor is None or floor <= alpha:
            return n
    raise ValueError(f"rule {rule!r} cannot decide with fewer than 50 seeds")


def _seeds_at(claims: list, by_n: dict, caps: dict) -> tuple[dict, dict]:
    """Seeds per section and kind, and per arm for a claim one arm alone decides, at these
    caps (``claims``: (section, verdict, seeds it needs for 80% or None))."""
    seeds: dict = defaultdict(dict)
    arm_seeds: dict = defaultdict(dict)
    for section, v, need in claims:
        arch = by_n[section].get(v.n[0])
        if arch is None:
            continue
        n = max(v.n[0], decidable_from(v.rule), need if need is not None and need <= caps[arch] else 0)
        if v.arms:  # only this arm's seeds decide it
            arm_seeds[section][v.arms[0]] = (max(arm_seeds[section].get(v.arms[0], (0,))[0], n), arch)
            n = v.n[0]
        seeds[section][arch] = max(seeds[section].get(arch, 0), n)
    return seeds, arm_seeds


def choose_seeds(claims: list, by_n: dict, configs: dict, pilot_s: float, budget_min: float
                 ) -> tuple[dict, dict, list]:
    """Seeds per section and kind and per arm (module docstring), and the cap steps taken for
    the budget. A claim that cannot reach 80% within its kind's cap adds nothing beyond its
    floor (the pilot's seeds, and at least `decidable_from` its rule, so that no design is
    unable to decide): seeds that do not buy the power are not spent."""
    caps, trims = dict(CAPS), []
    while True:
        seeds, arm_seeds = _seeds_at(claims, by_n, caps)
        minutes = estimate_minutes(configs, seeds, pilot_s, arm_seeds)
        arms = {s: {a: n for a, (n, _) in d.items()} for s, d in arm_seeds.items()}
        if minutes <= budget_min:
            return {s: dict(k) for s, k in seeds.items()}, arms, trims + [f"estimate {minutes:.1f} min"]
        kind = max((k for k in ("mlp", "convnet") if caps[k] > FLOORS[k]), default=None,
                   key=lambda k: sum(c["seconds"] for c in configs.values() if c["arch"] == k))
        if kind is None:
            return {s: dict(k) for s, k in seeds.items()}, arms, trims + [f"estimate {minutes:.1f} min (over the "
                                                                          "budget at the smallest caps)"]
        caps[kind] -= 1
        trims.append(f"{minutes:.1f} min over the budget: {kind} cap {caps[kind] + 1} -> {caps[kind]}")


def command(argv: list[str], pilot: str, out: str) -> list[str]:
    """The confirmatory invocation: the pilot's, with its own workdir (``PILOT_confirmatory``)
    and the protocol instead of seed flags."""
    cmd, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--workdir", "--seeds", "--first-seed", "--metric", "--protocol"):
            skip = True
            continue
        cmd.append(a)
    return [*cmd, "--workdir", pilot.rstrip("/") + "_confirmatory", "--protocol", out]


def build(pilot: str, *, first_seed: int, budget_min: float, out: str = "PROTOCOL") -> dict:
    """The protocol, as the JSON to commit."""
    suite = runlog.read_json(os.path.join(pilot, "suite.json"))
    sections = [n for n in power_cmd._sections(suite) if os.path.exists(os.path.join(pilot, n, "results.json"))]
    metric, why = choose_metric(pilot, sections)
    with tempfile.TemporaryDirectory() as tmp:  # the pilot's verdicts under the chosen metric
        copy = os.path.join(tmp, "pilot")
        shutil.copytree(pilot, copy)
        from experiments import reproduce
        with contextlib.redirect_stdout(io.StringIO()):
            reproduce.main(["--reanalyze", "--workdir", copy, "--metric", metric], figures=False)
        claims = [(s, v, power_cmd.needed(v)) for s, v in power_cmd.claims(copy)]  # one scan per claim
    configs, by_n = run_kinds(pilot, sections)
    seeds, arm_seeds, trims = choose_seeds(claims, by_n, configs, suite["total_s"], budget_min)
    pilot_seeds = max(int(d.rsplit("seed_", 1)[1]) for c in configs for d in os.listdir(c) if d.startswith("seed_"))
    if first_seed <= pilot_seeds:
        raise ValueError(f"--first-seed {first_seed}: the pilot used seeds up to {pilot_seeds}; choose a larger one")
    entries = [_claim_entry(s, by_n[s].get(v.n[0], "?"), v,
                            arm_seeds.get(s, {}).get(v.arms[0]) if v.arms else
                            seeds.get(s, {}).get(by_n[s].get(v.n[0]), v.n[0]), need) for s, v, need in claims]
    return {"protocol": 1, "pilot": {"folder": pilot, "code": suite["code"]["sources"],
                                     "commit": suite["git"]["commit"], "minutes": round(suite["total_s"] / 60, 1),
                                     "argv": suite["argv"]},
            "command": ["python", "-m", "experiments.reproduce", *command(suite["argv"], pilot, out)],
            "first_seed": first_seed, "metric": metric, "metric_reason": why, "seeds": seeds,
            "arm_seeds": arm_seeds,
            "sesoi": SESOI, "budget_minutes": budget_min, "estimate": trims[-1], "trimmed": trims[:-1],
            "claims": entries}


def main(argv=None) -> dict:
    p = _cli.parser(__doc__)
    p.add_argument("pilot", help="the pilot suite's folder (with suite.json and its run records)")
    p.add_argument("--out", required=True, help="the protocol file to write (JSON; commit it before the runs)")
    p.add_argument("--first-seed", type=int, default=100, help="the confirmatory runs' first seed (default 100)")
    p.add_argument("--budget-minutes", type=float, default=55.0,
                   help="the suite's estimated time may not exceed this (default 55: within an hour with margin)")
    args = p.parse_args(argv)
    if not os.path.exists(os.path.join(args.pilot, "suite.json")):
        p.error(f"{args.pilot} holds no finished suite (no suite.json)")
    try:
        proto = build(args.pilot, first_seed=args.first_seed, budget_min=args.budget_minutes, out=args.out)
    except ValueError as e:
        p.error(str(e))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(proto, f, indent=1, sort_keys=False)
        f.write("\n")
    low = [c for c in proto["claims"] if not c["note"].startswith("80%")]
    print(f"{args.out}: metric {proto['metric']}, seeds {json.dumps(proto['seeds'])}, {proto['estimate']}; "
          f"{len(proto['claims']) - len(low)} of {len(proto['claims'])} claims at 80% power at their SESOI")
    return proto


if __name__ == "__main__":
    main()
