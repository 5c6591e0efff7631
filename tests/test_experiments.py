"""Every experiment end to end on tiny data: the reproduction suite with 1 seed and a few
steps writes the complete report, its figures exist, and a run reloads from its checkpoint."""

import glob
import os
import subprocess
import sys

import bnjax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_reproduce_smoke_writes_complete_report_and_runs_reload(tmp_path):
    wd = str(tmp_path / "rep")
    cmd = [sys.executable, "-m", "experiments.reproduce", "--quick", "--seeds", "1", "--steps", "3", "--quiet",
           "--workdir", wd]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = open(os.path.join(wd, "report.md")).read()
    for heading in ("## 1. BN before or after", "## 2. The BN paper's learning-rate table", "## 3. Comparison",
                    "## 4. With and without", "### Figure 1", "## 5. Data augmentation"):
        assert heading in report
    for rel in [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]:
        assert os.path.getsize(os.path.join(wd, rel)) > 10_000, rel  # every figure exists and is non-trivial
    assert "13.3e6" in report and "74.8%" in report  # the paper's table is quoted
    runs = glob.glob(os.path.join(wd, "runs", "*", "seed_0"))
    assert len(runs) >= 20  # arms shared between experiments are trained once
    run = bnjax.load_run(runs[0])
    assert run.step == 3
    acc = bnjax.evaluate(run)["accuracy"]
    assert abs(acc - run.summary["final_test_accuracy"]) < 1e-6
    # a second invocation reads every run back instead of retraining
    stamps = {r: os.path.getmtime(os.path.join(r, "results.json")) for r in runs}
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    assert stamps == {r: os.path.getmtime(os.path.join(r, "results.json")) for r in runs}


def test_experiment_flags_are_validated():
    proc = subprocess.run([sys.executable, "-m", "experiments.reproduce", "--only", "nope"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown experiment" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "experiments.placement", "--data", "svhn"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown data source 'svhn'" in proc.stderr
