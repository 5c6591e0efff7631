"""Every committed results folder re-renders from its committed run records, without
training and without its data set, into the committed report, and stores its verdicts
as objects."""

import glob
import json
import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(ROOT, "experiments", "results", "*", "report.md")))


def test_every_committed_report_keeps_its_run_records():
    assert FOLDERS
    for folder in FOLDERS:
        assert os.path.exists(os.path.join(folder, "suite.json")), folder
        assert glob.glob(os.path.join(folder, "runs", "*", "seed_*", "metrics.jsonl")), folder


@pytest.mark.parametrize("folder", FOLDERS, ids=os.path.basename)
def test_committed_report_re_renders_from_its_run_records(folder, tmp_path, capsys):
    from experiments import reproduce

    copy = tmp_path / os.path.basename(folder)
    shutil.copytree(folder, copy)
    reproduce.main(["--reanalyze", "--workdir", str(copy)])
    assert open(copy / "report.md").read() == open(os.path.join(folder, "report.md")).read()
    sections = [d for d in os.listdir(copy) if os.path.exists(copy / d / "results.json")]
    verdicts = [v for d in sections for v in json.load(open(copy / d / "results.json"))["verdicts"]]
    assert verdicts and all(v["outcome"] in ("Supported", "Contradicted", "Inconclusive") for v in verdicts)
