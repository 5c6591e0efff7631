"""The reproduction report: Markdown helpers and the writer. Each experiment's analysis
writes its own section (arm names, paper numbers and verdicts come from the experiment);
this module only formats tables and puts the sections together. Imports only
`bnjax.stats`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from bnjax.stats import diverged_text, fmt


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
             fmt(*a["final_train_loss"], pct=False), diverged_text(a["diverged_at"])] for arm, a in arms.items()]
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


def ratio_text(x: tuple[float, float, float]) -> str:
    """A speed-up and its CI (`bnjax.stats.speedup_ci`): ``"2.10x [1.50x–3.00x]"``."""
    point, low, high = x
    if not point or point != point:
        return "—"
    return f"{_times(point)} [{_times(low)}–{_times(high)}]" if low == low else _times(point)


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
