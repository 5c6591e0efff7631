"""Confirmatory protocols: written from a pilot's spreads (the committed MNIST suite), read
back and checked, committed before the runs they govern, and run on fresh seeds; the power
command reads a finished suite."""

import json
import os
import statistics
import subprocess

import numpy as np
import pytest

from bnjax import power, protocol
from bnjax.config import ConfigError
from bnjax.experiment import Settings, build_arms, seeds_of
from experiments import placement
from experiments import power as power_cmd
from experiments import protocol as protocol_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PILOT = os.path.join(ROOT, "experiments", "results", "mnist")


@pytest.fixture(scope="module")
def written(once_per_run):
    """The protocol written from the MNIST pilot, once per test run (xdist's workers share it)."""

    def write(folder):
        protocol_cmd.main([PILOT, "--out", str(folder / "mnist.json")])
        return json.load(open(folder / "mnist.json"))

    folder, proto = once_per_run("protocol_mnist", write)
    return folder / "mnist.json", proto


def test_the_metric_is_the_one_with_the_smaller_spread_over_the_pilot_s_arms(written):
    _, proto = written
    sds = {m: [] for m in protocol.METRICS}
    for sec in os.listdir(PILOT):
        path = os.path.join(PILOT, sec, "results.json")
        for arm in (json.load(open(path)).get("arms", {}) if os.path.exists(path) else {}).values():
            vals = [np.asarray(arm["per_seed"][m], float) for m in protocol.METRICS]
            if min(v.size for v in vals) >= 2 and all(np.isfinite(v).all() for v in vals):
                for m, v in zip(protocol.METRICS, vals, strict=True):
                    sds[m].append(np.std(v, ddof=1))
    median = {m: statistics.median(v) for m, v in sds.items()}
    assert proto["metric"] == min(median, key=median.get)
    assert proto["metric_reason"]["median_sd_points"] == {m: round(100 * v, 3) for m, v in median.items()}


def test_each_claim_gets_the_seeds_its_power_needs_within_the_budget(written):
    _, proto = written
    assert proto["first_seed"] == 100 and float(proto["estimate"].split()[1]) <= proto["budget_minutes"]
    assert [protocol_cmd.decidable_from(r) for r in ("welch", "rank", "seed count")] == [2, 4, 6]
    for c in proto["claims"]:
        n = c["seeds"]
        own = proto["arm_seeds"].get(c["section"], {})
        assert n >= c["pilot"]["n"][0]
        assert n == (own["Baseline-x5"] if c["rule"] == "seed count" else proto["seeds"][c["section"]][c["kind"]])
        assert n >= {"rank": 4, "seed count": 6}.get(c["rule"], 2)  # below these no outcome can decide
        assert c["min_p"] is None or c["min_p"] <= 0.05, c
        effect = np.log(c["sesoi"]) if c["unit"] == "x" else c["sesoi"]
        sizes = (n,) if c["rule"] == "seed count" else (n, n)
        got = power.design(c["rule"], tuple(c["pilot"]["sd"]), sizes, effect=effect)["power"]
        assert c["power_at_sesoi"] == pytest.approx(got)
        need = c["seeds_for_80"]
        if need is not None and need <= protocol_cmd.CAPS[c["kind"]]:
            assert n >= need and c["note"] == "80% power at the SESOI", c  # affordable: bought
        else:
            assert c["note"].startswith("below 80% at the SESOI"), c  # says why not and what it detects
    assert any(c["note"].startswith("below") for c in proto["claims"])  # the depth claims cannot afford 80%


def test_a_protocol_is_read_and_checked(written, tmp_path):
    path, raw = written
    p = protocol.load(str(path))
    assert (p.first_seed, p.metric, p.seeds_for("placement", "mlp")) == (100, raw["metric"], raw["seeds"]["placement"]["mlp"])
    assert p.seeds_for("placement", "vgg") is None and p.seeds_for("nowhere", "mlp") is None
    s = Settings(workdir=str(tmp_path), data="mnist", first_seed=p.first_seed, protocol=p)
    arms = build_arms(placement.EXPERIMENT, s)
    got = seeds_of(arms, s, "placement")
    for arm, cfg in arms.items():
        assert got[arm] == range(100, 100 + raw["seeds"]["placement"][cfg.model.arch])
    from experiments import lr_table  # the divergence count's arm alone gets the 6 seeds its rule needs
    table = seeds_of(build_arms(lr_table.EXPERIMENT, s), s, "lr_table")
    assert len(table["Baseline-x5"]) == raw["arm_seeds"]["lr_table"]["Baseline-x5"] == 6
    assert {len(r) for a, r in table.items() if a != "Baseline-x5"} == {raw["seeds"]["lr_table"]["convnet"]}
    bad = tmp_path / "bad.json"
    for d, field in (({**raw, "metric": "accuracy"}, "protocol.metric"), ({**raw, "first_seed": -1}, "first_seed"),
                     ({**raw, "seeds": {"placement": {"mlp": 1}}}, "protocol.seeds.placement.mlp"),
                     ({**raw, "arm_seeds": {"lr_table": {"Baseline-x5": 1.5}}}, "protocol.arm_seeds.lr_table"),
                     ({k: v for k, v in raw.items() if k != "seeds"}, "protocol.seeds")):
        bad.write_text(json.dumps(d))
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            protocol.load(str(bad))
    with pytest.raises(ConfigError, match="file not found"):
        protocol.load(str(tmp_path / "none.json"))


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.mark.slow(programs="after smoke")
def test_a_confirmatory_suite_runs_a_committed_protocol_on_fresh_seeds(tmp_path, capsys, figures_not_drawn):
    """Refused while the protocol is not committed (or has changes); once committed, its
    runs use seeds from its first seed, its seeds per kind, and the header says
    Confirmatory with the file and its commit; re-rendered byte for byte."""
    from experiments import reproduce

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    path = repo / "p.json"
    path.write_text(json.dumps({"first_seed": 100, "metric": "selected_test_accuracy",
                                "seeds": {"placement": {"mlp": 2, "convnet": 2}}}))
    wd = str(tmp_path / "wd")
    cmd = ["--quick", "--steps", "3", "--quiet", "--only", "placement", "--workdir", wd, "--protocol", str(path)]
    with pytest.raises(SystemExit) as e:
        reproduce.main(cmd)
    assert e.value.code == 2 and "is not committed: commit the protocol before the runs" in capsys.readouterr().err
    _git(repo, "add", "p.json")
    _git(repo, "commit", "-q", "-m", "protocol")
    with pytest.raises(SystemExit) as e:
        reproduce.main([*cmd, "--first-seed", "3"])
    assert "the protocol sets the seeds and the metric: drop --first-seed" in capsys.readouterr().err
    reproduce.main(cmd)
    seeds = {d for d in os.listdir(os.path.join(wd, "runs", os.listdir(os.path.join(wd, "runs"))[0]))}
    assert seeds == {"seed_100", "seed_101"}
    report = open(os.path.join(wd, "report.md")).read()
    commit = subprocess.run(["git", "log", "-1", "--format=%H"], cwd=repo, capture_output=True, text=True).stdout
    assert f"Design: **Confirmatory**. The protocol `{path}` (commit `{commit[:12]}`" in report
    assert "from seed 100, none shared with the pilot" in report and "test accuracy at the validation-selected" in report
    path.write_text(path.read_text() + " ")  # a protocol with changes is refused for new runs...
    with pytest.raises(SystemExit):
        reproduce.main(cmd)
    assert "has uncommitted changes" in capsys.readouterr().err
    reproduce.main(["--reanalyze", "--workdir", wd])  # ...but its finished suite re-renders as it was
    assert open(os.path.join(wd, "report.md")).read() == report


def test_the_power_command_reports_each_claim_s_design(capsys):
    rows = power_cmd.main([PILOT])
    out = capsys.readouterr().out
    stored = [v for sec in os.listdir(PILOT) if os.path.exists(os.path.join(PILOT, sec, "results.json"))
              for v in json.load(open(os.path.join(PILOT, sec, "results.json")))["verdicts"]]
    assert len(rows) == len(stored) and out.count("\n") >= len(rows) + 2
    for r in rows:
        assert r["power"] is not None and r["sesoi"] is not None, r["claim"]  # every verdict carries its power
        if r["rule"] == "welch" and r["seeds_for_80"]:
            n = r["seeds_for_80"]
            assert power.welch_power_exact(r["sesoi"], *r["sd"], n, n) >= 0.8
            assert n == 2 or power.welch_power_exact(r["sesoi"], *r["sd"], n - 1, n - 1) < 0.8
    assert "(min p 0.1)" in out  # a 3 vs 3 rank design says it cannot decide
    with pytest.raises(SystemExit):
        power_cmd.main([os.path.join(ROOT, "docs")])
