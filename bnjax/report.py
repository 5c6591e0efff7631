"""The reproduction report: every figure and table of the suite next to the lecture's or
the BN paper's number, with one sentence per claim computed from the results."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from bnjax.experiment import fmt

PAPER_SOURCE = ("Ioffe & Szegedy, *Batch Normalization: Accelerating Deep Network Training by Reducing Internal "
                "Covariate Shift*, ICML 2015 (arXiv 1502.03167), Figure 3 (ImageNet, Inception, single crop)")


def verdict(ours: Sequence[float], other: Sequence[float], *, claim: str, higher: bool = True,
            unit: str = "points", scale: float = 100.0) -> str:
    """One sentence: does ``ours`` beat ``other`` (means) and by more than the seed spread?"""
    (m1, s1), (m2, s2) = ours, other
    if not (math.isfinite(m1) and math.isfinite(m2)):
        return f"**Cannot tell**: {claim} (a run diverged or is missing)."
    diff = (m1 - m2) if higher else (m2 - m1)
    spread = s1 + s2
    if diff > spread:
        word = "Supported"
    elif diff > 0:
        word = "Weakly supported (within the seed spread)"
    else:
        word = "Not supported here"
    num = (lambda v: f"{v:+.2f}") if unit == "points" else (lambda v: f"{v:+.3g}")
    unit = f" {unit}" if unit else ""
    return (f"**{word}**: {claim} — difference {num(diff * scale)}{unit} "
            f"(seed spread {num(spread * scale)[1:]}).")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _diverged(a: Mapping) -> str:
    div = [d for d in a["diverged_at"] if d is not None]
    return f"{len(div)}/{len(a['diverged_at'])} seeds, from step {min(div)}" if div else "no"


def arms_table(arms: Mapping[str, Mapping]) -> str:
    rows = [[arm, fmt(*a["final_test_accuracy"]), fmt(*a["best_test_accuracy"]),
             fmt(*a["final_train_loss"], pct=False), _diverged(a)] for arm, a in arms.items()]
    return table(["arm", "final test accuracy %", "best test accuracy %", "final training loss", "diverged"], rows)


def placement_section(res: Mapping, sub: str) -> list[str]:
    a = res["arms"]
    out = ["## 1. BN before or after the nonlinearity (lecture variants A and B)", "",
           "The lecture shows BN inserted before the nonlinearity (A, as the BN paper does: "
           "`z = g(BN(Wu))`) and after it (B). Same optimiser and schedule for every arm.", ""]
    out += [f"![{net}]({sub}/{f})" for net, f in res["figures"].items()] + ["", arms_table(a), ""]
    for net in ("MLP", "ConvNet"):
        out.append("- " + verdict(a[f"{net} BN before (A)"]["final_test_accuracy"],
                                  a[f"{net} no BN"]["final_test_accuracy"],
                                  claim=f"BN before the nonlinearity raises the {net}'s final test accuracy over no BN"))
        out.append("- " + verdict(a[f"{net} BN before (A)"]["final_test_accuracy"],
                                  a[f"{net} BN after (B)"]["final_test_accuracy"],
                                  claim=f"for the {net}, placement A ends above placement B"))
    return out + [""]


def lr_section(res: Mapping, sub: str) -> list[str]:
    t, paper = res["table"], res["paper"]
    out = ["## 2. The BN paper's learning-rate table, at small scale", "",
           f"Paper ({PAPER_SOURCE}): steps to reach Inception's best accuracy (72.2%) and the best accuracy.",
           f"Here: steps for the mean test accuracy over seeds to reach the Baseline's best mean "
           f"({t['target_accuracy'] * 100:.2f}%), and the best test accuracy (mean ± std).", "",
           f"![learning-rate arms]({sub}/{res['figures']['curves']})", ""]
    base_paper = paper["Baseline"][0]
    rows = []
    for arm, r in t["rows"].items():
        p_steps, p_acc = paper.get(arm, (None, None))
        p_ratio = f"{base_paper / p_steps:.1f}x" if p_steps else "—"
        here = f"{r['steps_to_target']:,}" if r["steps_to_target"] else "not reached"
        ratio = f"{r['speedup_vs_baseline']:.1f}x" if r["speedup_vs_baseline"] else "—"
        rows.append([arm, f"{p_steps / 1e6:.1f}e6" if p_steps else "—", f"{p_acc}%" if p_acc else "—", p_ratio,
                     here, fmt(*r["best_test_accuracy"]) + "%", ratio, _diverged(res["arms"][arm])])
    out += [table(["arm", "paper: steps to 72.2%", "paper: max acc", "paper: speed-up", "here: steps to target",
                   "here: best acc", "here: speed-up", "diverged"], rows), ""]
    r = t["rows"]

    def speed(arm: str, paper_x: float, what: str) -> str:
        x = r[arm]["speedup_vs_baseline"]
        if x is None:
            return f"**Not supported here**: {what} (paper {paper_x:.1f}x fewer steps; here it never reached the target)."
        word = "Supported" if x > 1.0 else "Not supported here"
        return f"**{word}**: {what} — paper {paper_x:.1f}x fewer steps than Baseline, here {x:.1f}x."

    out.append("- " + speed("BN-Baseline", 31.0 / 13.3, "BN alone reaches the Baseline's best accuracy in fewer steps"))
    out.append("- " + speed("BN-x5", 31.0 / 2.1, "BN with 5x the learning rate trains much faster"))
    out.append("- " + speed("BN-x30", 31.0 / 2.7, "BN with 30x the learning rate still trains fast"))
    out.append("- " + verdict(r["BN-x30"]["best_test_accuracy"], r["BN-x5"]["best_test_accuracy"],
                              claim="BN-x30 ends with a higher best accuracy than BN-x5 (paper 74.8% vs 73.0%)"))
    out.append("- " + verdict(r["BN-x5"]["best_test_accuracy"], r["BN-x5-Sigmoid"]["best_test_accuracy"],
                              claim="with BN a sigmoid network trains, but below ReLU (paper 69.8% vs 73.0%)"))
    div = [d for d in r["Baseline-x5"]["diverged_at"] if d is not None]
    if div:
        out.append(f"- **Supported**: without BN, 5x the learning rate diverges — {len(div)} of "
                   f"{len(r['Baseline-x5']['diverged_at'])} seeds, first at step {min(div)}.")
    else:
        out.append("- " + verdict(r["BN-x5"]["best_test_accuracy"], r["Baseline-x5"]["best_test_accuracy"],
                                  claim="without BN, 5x the learning rate does worse than with BN "
                                        "(the paper reports it failing); no seed diverged here"))
    return out + [""]


def ablation_section(res: Mapping, sub: str) -> list[str]:
    a = res["arms"]
    out = ["## 3. Comparison of methods (ablation)", "",
           f"![ablation]({sub}/{res['figures']['curves']})", "", arms_table(a), ""]
    base = a["baseline (SGD)"]
    for arm in ("+ Adam", "+ Xavier init", "+ BN", "Adam + Xavier + BN"):
        out.append("- " + verdict(a[arm]["final_train_loss"], base["final_train_loss"], higher=False,
                                  scale=1.0, unit="nats", claim=f"{arm} lowers the final training loss of the baseline"))
    combo = a["Adam + Xavier + BN"]["final_test_accuracy"]
    best_single = max((a[k]["final_test_accuracy"] for k in ("+ Adam", "+ Xavier init", "+ BN")),
                      key=lambda v: v[0])
    out.append("- " + verdict(combo, best_single, claim="the combination beats the best single change in test accuracy"))
    return out + [""]


def normalization_section(res: Mapping, sub: str) -> list[str]:
    a = res["arms"]
    out = ["## 4. With and without normalisation", "",
           f"![with and without BN]({sub}/{res['figures']['curves']})", "", arms_table(a), ""]
    w, wo = a["with BN"]["curves"], a["without BN"]["curves"]
    acc_better = sum(x > y for x, y in zip(w["test_accuracy"][0], wo["test_accuracy"][0], strict=False))
    out.append(f"- Test accuracy with BN is above the plain network at {acc_better} of "
               f"{min(len(w['steps']), len(wo['steps']))} evaluations.")
    out.append("- " + verdict(a["with BN"]["final_test_accuracy"], a["without BN"]["final_test_accuracy"],
                              claim="BN gives the higher final test accuracy"))
    f1 = res["fig1"]["arms"]
    out += ["", "### Figure 1 of the BN paper", "",
            "Paper (Figure 1, MNIST): (a) the network with BN trains faster and reaches higher test accuracy; "
            "(b, c) the distribution of a sigmoid's input is far steadier with BN.", "",
            f"![Figure 1]({sub}/fig1.png)", ""]
    rows = [[label, fmt(*f1[arm]["final_test_accuracy"]), f"{f1[arm]['p50_spread'][0]:.3f} ± "
             f"{f1[arm]['p50_spread'][1]:.3f}"] for arm, label in (("without_bn", "without BN"), ("with_bn", "with BN"))]
    out += [table(["network", "final test accuracy %", "spread of the 50th percentile (max − min)"], rows), ""]
    wb, nb = f1["with_bn"], f1["without_bn"]
    above = [s for s, x, y in zip(wb["steps"], wb["test_accuracy_mean"], nb["test_accuracy_mean"], strict=False)
             if x <= y]
    out.append("- " + verdict(wb["final_test_accuracy"], nb["final_test_accuracy"],
                              claim="(a) the BN network ends with the higher test accuracy"))
    if above:
        out.append(f"- BN is above the plain network at every evaluation after step {max(above)} "
                   f"(not at {len(above)} of {len(wb['steps'])} evaluations).")
    else:
        out.append(f"- BN is above the plain network at every one of the {len(wb['steps'])} evaluations.")
    out.append("- " + verdict(nb["p50_spread"], wb["p50_spread"], scale=1.0, unit="",
                              claim="(b, c) the median input of the sigmoid moves less with BN"))
    return out + [""]


def augmentation_section(res: Mapping, sub: str) -> list[str]:
    a = res["arms"]
    out = ["## 5. Data augmentation", "",
           "The lecture's figure: an image and its horizontal flip, vertical flip and rotation "
           "(computed by `bnjax.augment` on the device):", "",
           f"![augmentation grid]({sub}/{res['figures']['grid']})", "",
           f"![augmentation curves]({sub}/{res['figures']['curves']})", "", arms_table(a), ""]
    for arm in a:
        if arm != "none":
            out.append("- " + verdict(a[arm]["final_test_accuracy"], a["none"]["final_test_accuracy"],
                                      claim=f"{arm} improves test accuracy over no augmentation"))
    out.append("- Digits are not symmetric: a flip turns some digits into others or into no digit, "
               "so flips are expected to hurt here; they are label-preserving on natural images (CIFAR).")
    return out + [""]


SECTIONS = {"placement": placement_section, "lr_table": lr_section, "ablation": ablation_section,
            "normalization": normalization_section, "augmentation": augmentation_section}


def write(path: str, results: Mapping[str, Mapping], *, header: Sequence[str]) -> str:
    """Write the report. ``results``: experiment name -> its results (figures relative to
    the experiment's sub-directory of the report's directory)."""
    lines = list(header) + [""]
    for name, section in SECTIONS.items():
        if name in results:
            lines += section(results[name], name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
