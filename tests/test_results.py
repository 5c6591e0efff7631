"""Every committed results folder re-renders from its committed run records, without
training and without its data set, into the committed report, and stores its verdicts
as objects."""

import glob
import json
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(ROOT, "experiments", "results", "*", "report.md")))


def test_every_committed_report_keeps_its_run_records():
    assert FOLDERS
    for folder in FOLDERS:
        assert os.path.exists(os.path.join(folder, "suite.json")), folder
        assert glob.glob(os.path.join(folder, "runs", "*", "seed_*", "metrics.jsonl")), folder


@pytest.mark.parametrize("folder", FOLDERS, ids=os.path.basename)
def test_committed_report_re_renders_from_its_run_records(folder, tmp_path, capsys, figures_not_drawn):
    from experiments import reproduce

    copy = tmp_path / os.path.basename(folder)
    shutil.copytree(folder, copy)
    reproduce.main(["--reanalyze", "--workdir", str(copy)])
    report = open(copy / "report.md").read()
    assert report == open(os.path.join(folder, "report.md")).read()
    links = {os.path.normpath(copy / line.split("](")[1].rstrip(")")) for line in report.splitlines()
             if line.startswith("![")}
    kept = {p for p in links if p.endswith(os.path.join("augmentation", "grid.png"))}  # a picture of the data set
    assert links and links - kept <= {os.path.normpath(p) for p in figures_not_drawn}  # the others are redrawn
    sections = [d for d in os.listdir(copy) if os.path.exists(copy / d / "results.json")]
    verdicts = [v for d in sections for v in json.load(open(copy / d / "results.json"))["verdicts"]]
    assert verdicts and all(v["outcome"] in ("Supported", "Contradicted", "Inconclusive") for v in verdicts)


def test_a_re_render_without_figures_writes_the_same_report_and_no_figure(tmp_path):
    """``reproduce.main(..., figures=False)`` (the protocol command's re-analysis of its
    pilot): the same report and verdicts, and not one PNG written."""
    from experiments import reproduce

    folder = FOLDERS[0]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.png"))
    reproduce.main(["--reanalyze", "--workdir", str(copy)], figures=False)
    assert open(copy / "report.md").read() == open(os.path.join(folder, "report.md")).read()
    assert "](" in open(copy / "report.md").read() and not glob.glob(str(copy / "**" / "*.png"), recursive=True)


CONFIRMATORY = [f for f in FOLDERS if "protocol" in json.load(open(os.path.join(f, "suite.json")))]


@pytest.mark.parametrize("folder", CONFIRMATORY, ids=os.path.basename)
def test_a_confirmatory_suite_decides_with_power_on_fresh_seeds(folder):
    """Issue 30: every verdict comes from a design that can reach p < 0.05 and carries its
    power at the SESOI; no run shares a seed with the pilot the protocol was chosen from;
    the protocol was committed before the suite started (its commit is an ancestor)."""
    suite = json.load(open(os.path.join(folder, "suite.json")))
    proto = json.load(open(os.path.join(ROOT, suite["protocol"]["path"])))
    sections = [d for d in os.listdir(folder) if os.path.exists(os.path.join(folder, d, "results.json"))]
    verdicts = [v for d in sections for v in json.load(open(os.path.join(folder, d, "results.json")))["verdicts"]]
    assert verdicts
    for v in verdicts:
        assert v.get("power") is not None, v["claim"]
        assert v.get("min_p") is None or v["min_p"] <= 0.05, v["claim"]
    seeds = {json.load(open(p))["seed"] for p in glob.glob(os.path.join(folder, "runs", "*", "seed_*", "config.json"))}
    pilot = os.path.join(ROOT, proto["pilot"]["folder"])
    pilot_seeds = {json.load(open(p))["seed"] for p in glob.glob(os.path.join(pilot, "runs", "*", "seed_*",
                                                                               "config.json"))}
    assert seeds and pilot_seeds and not seeds & pilot_seeds and min(seeds) == proto["first_seed"]
    assert not suite["git"]["modified"]  # a clean tree...
    commits = (suite["protocol"]["commit"], suite["git"]["commit"])
    if all(subprocess.run(["git", "cat-file", "-e", f"{c}^{{commit}}"], cwd=ROOT).returncode == 0 for c in commits):
        ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", *commits], cwd=ROOT)
        assert ancestor.returncode == 0  # ...whose history holds the protocol's commit (a shallow clone cannot say)
