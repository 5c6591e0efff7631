"""Every experiment end to end on tiny data: the reproduction suite with 1 seed and a few
steps writes the complete report, its figures exist, and a run reloads from its checkpoint."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

import bnjax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow(programs="smoke")
def test_reproduce_smoke_writes_complete_report_and_runs_reload(tmp_path, capsys, figures_not_drawn):
    wd = str(tmp_path / "rep")
    cmd = [sys.executable, "-m", "experiments.reproduce", "--quick", "--seeds", "1", "--steps", "3", "--quiet",
           "--workdir", wd]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = open(os.path.join(wd, "report.md")).read()
    for heading in ("## 1. BN before or after", "## 2. The BN paper's learning-rate table", "## 3. Comparison",
                    "## 4. With and without", "### Figure 1", "## 5. Data augmentation",
                    "## 6. Learning-rate sweep", "## 7. Depth and sigmoid"):
        assert heading in report
    figures = {os.path.normpath(os.path.join(wd, line.split("](")[1].rstrip(")"))) for line in report.splitlines()
               if line.startswith("![")}
    for path in figures:
        assert os.path.getsize(path) > 10_000, path  # every figure exists and is non-trivial
    assert "13.3e6" in report and "74.8%" in report  # the paper's table is quoted
    lines = [line for line in report.splitlines() if line.startswith("- **")]
    stored = [v for sec in glob.glob(os.path.join(wd, "*", "results.json")) for v in json.load(open(sec))["verdicts"]]
    assert len(stored) >= 20 and len(stored) == len(lines)  # every verdict line is stored as an object
    for v in stored:
        assert v["outcome"] in ("Supported", "Contradicted", "Inconclusive") and v["claim"] and v["rule"]
        assert any(f"**{v['outcome']}**: {v['claim']} — " in line for line in lines), v["claim"]
    assert "This report tests" in report and "false-discovery-rate control" in report
    assert "seeds reached" in report or "/1 seeds" in report  # steps to target per seed
    assert "Command: `python -m experiments.reproduce --quick" in report and "Code: commit" in report
    runs = glob.glob(os.path.join(wd, "runs", "*", "seed_0"))
    assert len(runs) >= 20  # arms shared between experiments are trained once
    # --quiet: one line per finished run of the whole invocation, counted once, with an ETA
    done = re.findall(r"^\[(\d+)/(\d+)\] .*: trained in [\d.]+ s.*ETA", proc.stdout, flags=re.M)
    assert [int(k) for k, _ in done] == list(range(1, len(runs) + 1)) and {int(n) for _, n in done} == {len(runs)}
    # TensorBoard: every run of a section under SECTION/tensorboard/<arm>/seed_0, none in the run directories
    views = glob.glob(os.path.join(wd, "*", "tensorboard", "*", "seed_0", "events.out.tfevents.bnjax"))
    assert len(views) >= len(runs) and not glob.glob(os.path.join(wd, "runs", "*", "seed_0", "events.out.*"))
    records = [json.loads(line) for line in open(os.path.join(runs[0], "metrics.jsonl"))]
    assert all("val_accuracy" in r and "val_loss" in r for r in records)
    run = bnjax.load_run(runs[0])
    assert run.step == 3
    acc = bnjax.evaluate(run)["accuracy"]
    assert abs(acc - run.summary["final_test_accuracy"]) < 1e-6
    # the follow-up invocations run in this process (the first one checked the command line as a user runs it, and
    # its figures): here figures are not drawn again (figures_not_drawn); a second invocation reads every run back
    from experiments import reproduce

    stamps = {r: os.path.getmtime(os.path.join(r, "results.json")) for r in runs}
    capsys.readouterr()
    reproduce.main(cmd[3:])
    assert capsys.readouterr().out.count(": read back") == len(runs)
    assert stamps == {r: os.path.getmtime(os.path.join(r, "results.json")) for r in runs}
    # re-rendered from the run records alone: the same report, byte for byte
    before = open(os.path.join(wd, "report.md")).read()
    redo = ["--reanalyze", "--workdir", wd]
    del figures_not_drawn[:]
    reproduce.main(redo)
    assert open(os.path.join(wd, "report.md")).read() == before
    kept = {p for p in figures if p.endswith(os.path.join("augmentation", "grid.png"))}  # a picture of the data set
    assert kept and figures - kept <= {os.path.normpath(p) for p in figures_not_drawn}  # the others are redrawn
    os.remove(os.path.join(runs[0], "results.json"))  # a missing run is named, nothing is trained
    with pytest.raises(SystemExit) as exit_:
        reproduce.main(redo)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "missing from the pool" in err and runs[0] in err
    # --stale refuse: a stale run in the last section is refused before the first section trains anything
    first, last = ([os.path.normpath(os.path.join(wd, sec, d)) for d in json.load(
        open(os.path.join(wd, sec, "results.json")))["run_dirs"]] for sec in ("placement", "depth"))
    todo = next(d for d in first if d != runs[0])
    os.remove(os.path.join(todo, "results.json"))  # the first section would train it again
    stale = next(d for d in last if d != runs[0])
    meta = json.load(open(os.path.join(stale, "meta.json")))
    meta["data_fingerprint"]["checksum"] = "0" * 32
    json.dump(meta, open(os.path.join(stale, "meta.json"), "w"))
    with pytest.raises(SystemExit) as exit_:
        reproduce.main([*cmd[3:], "--stale", "refuse"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 1 and "1 run(s) in the pool differ" in err, err
    assert f"{stale}: data fingerprint" in err and ": trained in " not in out
    assert not os.path.exists(os.path.join(todo, "results.json")) and os.path.exists(os.path.join(stale, "meta.json"))


def test_experiment_flags_are_validated(capsys):
    proc = subprocess.run([sys.executable, "-m", "experiments.reproduce", "--only", "nope"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown experiment" in proc.stderr
    from experiments import placement

    with pytest.raises(SystemExit) as e:  # in this process
        placement.main(["--data", "svhn"])
    assert e.value.code == 2 and "unknown data source 'svhn'" in capsys.readouterr().err


def _experiments():
    from experiments import (ablation, augmentation, batch_size, depth, fig1_mnist, lr_sweep, lr_table, normalization,
                             placement)

    return [m.EXPERIMENT for m in (placement, lr_table, ablation, normalization, augmentation, fig1_mnist,
                                    batch_size, lr_sweep, depth)]


def test_config_overrides_reach_every_arm_of_every_experiment_script():
    import pytest

    from bnjax.experiment import build_arms
    from experiments import _cli

    for exp in _experiments():
        p = _cli.experiment_parser(exp.doc, exp.workdir, dict(exp.options))
        s = _cli.settings_from(p, [exp], ["--quick", "--optim.b2", "0.95", "--model.bn_epsilon", "0.001",
                                          "--data.eval_batch_size", "77"])
        arms = build_arms(exp, s)
        assert len(arms) >= 2, exp.name
        for name, cfg in arms.items():
            assert (cfg.optim.b2, cfg.model.bn_epsilon, cfg.data.eval_batch_size) == (0.95, 0.001, 77), (exp.name, name)
            assert cfg.data.source == "digits"
        with pytest.raises(SystemExit) as e:  # a bad override stops before any compute, exit 2
            _cli.settings_from(p, [exp], ["--quick", "--model.norm", "nope"])
        assert e.value.code == 2


@pytest.mark.parametrize("module, argv", [
    ("experiments.placement", ["--seed", "3"]),  # must not mean --seeds 3
    ("experiments.reproduce", ["--seed", "3"]),
    ("experiments.train", ["--workd", "x"]),  # must not mean --workdir
    ("experiments.analyze", ["somewhere", "--evaluat"]),
    ("experiments.bench.mlp", ["--xla-cach", "x"]),
])
def test_no_flag_of_any_entry_point_is_matched_by_a_prefix(module, argv, capsys):
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(argv)
    assert e.value.code == 2 and f"unrecognized arguments: {' '.join(a for a in argv if a.startswith('--'))}" in \
        capsys.readouterr().err


def test_the_report_header_says_which_code_changed_while_runs_started(tmp_path):
    from bnjax import runlog
    from experiments.reproduce import _provenance

    runlog.begin_segment(str(tmp_path), from_step=0)  # each run records the code files modified as it starts
    assert runlog.read_json(str(tmp_path / "meta.json"))["git_code_changes"] == \
        runlog.code_changes(runlog.git_state()["modified"])

    assert runlog.code_changes(["experiments/results/mnist/runs/ab/seed_0/meta.json", "bnjax/norm.py", "README.md",
                                "requirements.txt", "experiments/results/mnist/report.md"]) == \
        ["bnjax/norm.py", "requirements.txt"]
    metas = [{"git": "abc+dirty", "git_code_changes": ["bnjax/norm.py"]}, {"git": "abc+dirty", "git_code_changes": []},
             {"git": "abc"}]
    assert _provenance({"commit": "abc", "modified": []}, metas) == \
        "clean when the suite started; 1 of 3 runs started while code files differed from it: bnjax/norm.py"
    records_only = _provenance({"commit": "abc", "modified": ["x/runs/h/seed_0/meta.json"]}, metas[1:])
    assert records_only == "1 tracked non-code files modified when the suite started"
    old = _provenance({"commit": "abc", "modified": []}, [{"git": "abc+dirty"}, {"git": "abc"}])
    assert old.startswith("clean when the suite started; 1 of 2 runs started with tracked files modified, which ones "
                          "not recorded")


def test_first_seed_picks_fresh_seeds_for_every_arm(capsys):
    from bnjax.experiment import build_arms, seeds_of
    from experiments import _cli

    exp = next(e for e in _experiments() if e.name == "placement")
    p = _cli.experiment_parser(exp.doc, exp.workdir, dict(exp.options))
    s = _cli.settings_from(p, [exp], ["--quick", "--seeds", "2", "--first-seed", "5"])
    assert {a: list(r) for a, r in seeds_of(build_arms(exp, s), s).items()} == {a: [5, 6] for a in build_arms(exp, s)}
    default = _cli.settings_from(p, [exp], ["--quick"])
    assert all(list(r)[0] == 0 for r in seeds_of(build_arms(exp, default), default).values())
    with pytest.raises(SystemExit) as e:
        _cli.settings_from(p, [exp], ["--quick", "--first-seed", "-1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "'first_seed': must be >= 0, got -1" in err
