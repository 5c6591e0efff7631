"""What a finished suite's designs could detect: per claim, its rule, seeds, per-seed spreads,
power at the smallest effect of interest (SESOI) and the seeds per arm it would need for 80%.

    python -m experiments.power experiments/results/mnist        # a committed suite
    python -m experiments.power runs/full --json power.json      # also as data

Reads the verdicts each section stored in its results.json (`bnjax.verdicts.Verdict`, with
their spreads); trains nothing and needs no data. Verdicts written before power was
recorded have no spreads: re-render the suite first (`reproduce --reanalyze`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from bnjax import power, report, runlog
from bnjax.verdicts import Verdict
from experiments import _cli


def claims(workdir: str) -> list[tuple[str, Verdict]]:
    """Every verdict of a finished suite, as ``(section, verdict)`` in report order."""
    suite = runlog.read_json(os.path.join(workdir, "suite.json"))
    names = [n for n in _sections(suite) if os.path.exists(os.path.join(workdir, n, "results.json"))]
    return [(n, Verdict.from_dict(v)) for n in names
            for v in runlog.read_json(os.path.join(workdir, n, "results.json"))["verdicts"]]


def _sections(suite: dict) -> list[str]:
    return list(suite.get("seconds") or suite.get("train_wall_s") or {})


def effect_of(v: Verdict) -> float | None:
    """The SESOI as the effect `bnjax.power` takes: a log ratio for a speed-up."""
    if v.sesoi is None:
        return None
    return math.log(v.sesoi) if v.unit == "x" else v.sesoi


def needed(v: Verdict, *, max_n: int = 40) -> int | None:
    """Seeds per arm for 80% power at the SESOI under the verdict's rule and spreads."""
    effect = effect_of(v)
    if effect is None or (v.rule != "seed count" and len(v.sd) != 2):
        return None
    return power.seeds_for(v.rule, tuple(v.sd), effect=effect, max_n=max_n)


def row(section: str, v: Verdict) -> dict:
    """One claim's design, as data."""
    return {"section": section, "claim": v.claim, "outcome": v.outcome, "negligible": v.negligible, "rule": v.rule,
            "n": list(v.n), "sd": list(v.sd), "unit": v.unit, "sesoi": v.sesoi, "power": v.power,
            "min_p": v.min_p, "detectable": v.detectable, "seeds_for_80": needed(v)}


def _fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "—"
    return f"{x * 100:.2f}" if unit == "points" else f"{x:.3g}"


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table (spreads in the claim's unit; points x100)."""
    out = []
    for r in rows:
        claim = r["claim"] if len(r["claim"]) <= 70 else r["claim"][:67] + "..."
        sd = " / ".join(_fmt(s, r["unit"] if r["unit"] != "x" else "") for s in r["sd"]) or "—"
        pw = "—" if r["power"] is None else f"{r['power']:.2f}"
        floor = f" (min p {r['min_p']:.2g})" if r["min_p"] is not None and r["min_p"] > 0.05 else ""
        out.append([r["section"], claim, r["outcome"] + (" (negligible)" if r["negligible"] else ""), r["rule"],
                    " vs ".join(map(str, r["n"])), sd, f"{_fmt(r['sesoi'], r['unit'])} {r['unit']}".strip(),
                    pw + floor, str(r["seeds_for_80"] or "> 40")])
    return report.table(["section", "claim", "outcome", "rule", "n", "per-seed sd (ours / other)", "SESOI",
                         "power at SESOI", "seeds per arm for 80%"], out)


def main(argv=None) -> list[dict]:
    p = _cli.parser(__doc__)
    p.add_argument("workdir", help="a finished suite's folder (with suite.json)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    if not os.path.exists(os.path.join(args.workdir, "suite.json")):
        p.error(f"{args.workdir} holds no finished suite (no suite.json): run experiments.reproduce there first")
    rows = [row(s, v) for s, v in claims(args.workdir)]
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
