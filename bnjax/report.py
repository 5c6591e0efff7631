"""The reproduction report: Markdown helpers and the writer. Each experiment's analysis
writes its own section (arm names, paper numbers and verdicts come from the experiment):
lines of Markdown and `bnjax.verdicts.Verdict` values, which `finalize` renders after
the false-discovery-rate control over the whole report. This module only formats and
puts the sections together. Imports only `bnjax.stats` and `bnjax.verdicts`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, MutableMapping, Sequence

from bnjax.stats import diverged_text, fmt
from bnjax.verdicts import FDR_Q, LEVEL, RULES, Verdict, control_fdr


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def arms_table(arms: Mapping[str, Mapping]) -> str:
    """Final test accuracy, test accuracy at the validation-selected evaluation, final
    training loss and divergence of each arm, mean ± std over n seeds (the per-arm
    summaries of `bnjax.stats.summarize`)."""
    rows = [[arm, str(len(a["seeds"])), fmt(*a["final_test_accuracy"]), fmt(*a["selected_test_accuracy"]),
             fmt(*a["final_train_loss"], pct=False), diverged_text(a["diverged_at"], a.get("at_chance", 0))]
            for arm, a in arms.items()]
    return table(["arm", "n", "final test accuracy %", "test accuracy % at best validation step",
                  "final training loss", "diverged"], rows)


def reach_text(r: Mapping) -> str:
    """Steps to a target over seeds (`bnjax.stats.reach_summary`): ``"1,200 [900–1,500],
    3/3 seeds"``, or that the median seed (or every seed) never reached it."""
    if not r["reached"]:
        return f"not reached (0/{r['n']} seeds)"
    med = "median not reached" if r["median"] == float("inf") else f"{r['median']:,.0f}"
    return f"{med} [{r['min']:,}–{r['max']:,}], {r['reached']}/{r['n']} seeds"


def _times(v: float) -> str:
    return "∞" if v == float("inf") else f"{v:.2f}x"


def ratio_text(v: Verdict) -> str:
    """A speed-up and its CI (`bnjax.verdicts.speedup`): ``"2.10x [1.50x–3.00x]"``, or "—"
    when there is no ratio."""
    if math.isnan(v.estimate):
        return "—"
    return f"{_times(v.estimate)} [{_times(v.low)}–{_times(v.high)}]" if v.low == v.low else _times(v.estimate)


def pct_text(mean_std: tuple[float, float]) -> str:
    """``"98.21 ± 0.05%"``, or "—" without values."""
    text = fmt(*mean_std)
    return "—" if text == "—" else text + "%"


def relink(line: str, sub: str) -> str:
    """Prefix the relative image links of a line with ``sub/``."""
    return re.sub(r"!\[([^\]]*)\]\((?![a-z]+:|/)([^)]+)\)", lambda m: f"![{m[1]}]({sub}/{m[2]})", line)


def write(path: str, sections: Sequence[tuple[str, str, Sequence[str]]], *, header: Sequence[str]) -> str:
    """Write the report: ``header``, then one numbered section per ``(sub-directory,
    title, lines)``; image links in the lines are relative to the sub-directory."""
    lines = list(header) + [""]
    for i, (sub, title, body) in enumerate(sections, 1):
        lines += [f"## {i}. {title}", ""] + [relink(line, sub) for line in body] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _num(v: float, unit: str, *, signed: bool = True) -> str:
    if math.isinf(v):
        return ("+" if v > 0 and signed else "-" if v < 0 else "") + "∞"
    if unit == "points":
        return f"{v * 100:+.2f}" if signed else f"{v * 100:.2f}"
    if unit == "x":
        return f"{v:.2f}x"
    return f"{v:+.3g}" if signed else f"{v:.3g}"


def _counts(v: Verdict) -> str:
    n = " vs ".join(map(str, v.n))
    parts = [f"n = {n}"]
    if any(v.diverged):
        parts.append("diverged " + " vs ".join(f"{d}/{k}" for d, k in zip(v.diverged, v.n, strict=True)))
    if any(v.at_chance):
        parts.append("at chance without diverging " + " vs ".join(f"{c}/{k}" for c, k in
                                                                zip(v.at_chance, v.n, strict=True)))
    return "; ".join(parts)


def verdict_line(v: Verdict) -> str:
    """One verdict as a Markdown list item: outcome (and, for the equivalence outcome, that
    any effect is below the SESOI), claim, estimate with its interval, the rule, n (and
    diverged / at-chance seeds), the p-value, the design's power at the SESOI (for an
    Inconclusive verdict, what the design could detect, or that it cannot decide) and the
    FDR mark."""
    if v.rule == "seed count":
        body = (f"{int(v.estimate)}/{v.n[0]} seeds diverged (rate 95% CI {v.low:.2f} to {v.high:.2f}, exact binomial "
                f"test against 1/2; p = {v.p:.2g})" if v.p is not None else f"{int(v.estimate)}/{v.n[0]} seeds diverged")
        body += f", {v.detail}" if v.detail else ""
    elif v.unit == "x":
        body = _ratio_body(v)
    else:
        body = _difference_body(v)
    outcome = f"**{v.outcome}**" + (f" (any {'gain' if v.higher else 'drop'} is smaller than "
                                    f"{_num(v.sesoi, v.unit, signed=False)}{_unit(v)}, the smallest effect of "
                                    "interest)" if v.negligible else "")
    fdr = {True: "", False: f" Does **not** survive the report's false-discovery-rate control (q = {FDR_Q:g}).",
           None: ""}[v.fdr_survives]
    return f"- {outcome}: {v.claim} — {body}.{_design_text(v)}{fdr}"


def _unit(v: Verdict) -> str:
    return f" {v.unit}" if v.unit not in ("", "x") else ""


def _ratio_body(v: Verdict) -> str:
    if math.isnan(v.estimate):
        return f"{v.detail} ({_counts(v)})"
    rule = "exact rank interval on log steps" if v.rule == "rank" else "percentile bootstrap over seeds"
    ci = f"95% CI {_times(v.low)} to {_times(v.high)}, {rule}" if v.low == v.low else "no interval"
    p = f"; p = {v.p:.2g}" if v.p is not None else ""
    return f"speed-up {_times(v.estimate)} ({ci}; {_counts(v)}{p})" + (f"; {v.detail}" if v.detail else "")


def _difference_body(v: Verdict) -> str:
    what = "difference of means" if v.rule == "welch" else "Hodges-Lehmann shift"
    rule = "Welch" if v.rule == "welch" else "exact rank interval (Mann-Whitney)"
    lo, hi = _num(v.low, v.unit), _num(v.high, v.unit)
    ci = f"95% CI {lo} to {hi}, {rule}" if v.low == v.low else f"no interval: {v.detail}"
    bar = f"; the claim needs it {'above' if v.higher else 'below'} {_num(v.margin if v.higher else -v.margin, v.unit)}" \
        if v.margin else ""
    p = f"; p = {v.p:.2g}" if v.p is not None else ""
    note = f"; {v.detail}" if v.detail and v.low == v.low else ""
    return f"{what} {_num(v.estimate, v.unit)}{_unit(v)} ({ci}; {_counts(v)}{p}{bar}{note})"


def effect_text(d: float, v: Verdict) -> str:
    """An effect in the verdict's unit: a speed-up as a ratio, a divergence rate as one."""
    if v.unit == "x":
        return f"{d:.2f}x"
    if v.unit == "seeds":
        return f"a divergence rate of {0.5 + d:.2f}"
    return f"{_num(d, v.unit, signed=False)}{_unit(v)}"


def _design_text(v: Verdict) -> str:
    """What the design could do: its power at the SESOI; for an Inconclusive verdict also
    the smallest effect it detects with 80% power, or that it cannot decide at all."""
    if v.min_p is not None and v.min_p > 1 - LEVEL:
        return (f" The design cannot decide: at n = {' vs '.join(map(str, v.n))} the rule's smallest attainable p is "
                f"{v.min_p:.2g}, so no outcome can reach p < {1 - LEVEL:.2g}.")
    if v.power is None or v.sesoi is None:
        return ""
    text = f" Power at the SESOI ({effect_text(v.sesoi, v)}): {v.power:.2f}"
    if v.outcome == "Inconclusive":
        text += ("; the design detects " + effect_text(v.detectable, v) + " with 80% power" if v.detectable is not None
                 else "; no effect the design can detect with 80% power")
    return text + "."


def finalize(sections: MutableMapping[str, dict]) -> dict:
    """Control the false-discovery rate over every verdict of the report's sections
    (`bnjax.verdicts.control_fdr`), then in each section's ``"report"`` lines replace
    each `Verdict` by its rendered line and store the verdicts as dicts under
    ``"verdicts"``. Returns the counts the report states (``tested``, ``with_p``,
    ``decided``: Supported or Contradicted, ``survive``)."""
    found = [(name, i, line) for name, res in sections.items() for i, line in enumerate(res["report"])
             if isinstance(line, Verdict)]
    controlled = control_fdr([v for _, _, v in found])
    for res in sections.values():
        res["verdicts"] = []
    for (name, i, _), v in zip(found, controlled, strict=True):
        sections[name]["report"][i] = verdict_line(v)
        sections[name]["verdicts"].append(v.to_dict())
    decided = [v for v in controlled if v.outcome != "Inconclusive"]
    return {"tested": len(controlled), "with_p": sum(v.p is not None for v in controlled),
            "decided": len(decided), "decided_with_p": sum(v.p is not None for v in decided),
            "survive": sum(bool(v.fdr_survives) for v in decided)}


def multiplicity_text(counts: Mapping[str, int]) -> str:
    """The report's sentence on how many claims it tests and how many survive."""
    return (f"This report tests {counts['tested']} claims ({counts['with_p']} with a p-value); "
            f"{counts['decided']} are Supported or Contradicted, {counts['decided_with_p']} of them with a p-value, "
            f"of which {counts['survive']} survive Benjamini-Hochberg false-discovery-rate control at q = {FDR_Q:g} "
            "over the report's p-values (scipy.stats.false_discovery_control); a line that does not survive says so "
            "(a seed count has no p-value). Rules: " + RULES)
