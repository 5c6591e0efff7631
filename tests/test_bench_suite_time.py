"""The suite-time benchmark runs each commit's own README test command from a fresh clone,
head, base, base, head, and its ratio is the one its own timings give (on a two-commit
repository whose test commands only write which commit ran them)."""

import json
import os
import subprocess
import sys

import pytest

from experiments.bench import suite_time

_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _commit(repo, side: str) -> None:
    """A README whose test command appends ``side`` and whether .venv is there to $SUITE_LOG."""
    cmd = (".venv/bin/python -c \"import os; open(os.environ['SUITE_LOG'], 'a').write("
           f"'{side} %s\\n' % os.path.isdir('.venv')); print('1 passed in 0.01s')\"")
    with open(os.path.join(repo, "README.md"), "w") as f:
        f.write(f"# t\n\n```bash\ninstall and run the main job\n{cmd}\n```\n")
    for args in (["add", "README.md"], ["commit", "-q", "-m", side]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **_ENV})


def test_each_commit_runs_its_own_readme_command_head_base_base_head(tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _commit(repo, "base")
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    _commit(repo, "head")
    log = tmp_path / "log.txt"
    monkeypatch.setenv("SUITE_LOG", str(log))
    monkeypatch.chdir(repo)
    out = tmp_path / "t.json"
    suite_time.main(["--base", base, "--base-venv", sys.prefix, "--rounds", "2", "--base-minutes", "9",
                     "--out", str(out)])
    assert log.read_text().split("\n")[:-1] == ["head True", "base True", "base True", "head True"] * 2
    res = json.load(open(out))
    assert res["commits"]["base"] == base[:len(res["commits"]["base"])] and res["commits"]["head"] != res["commits"]["base"]
    assert [r["side"] for r in res["runs"]] == suite_time.order(2)
    assert all(r["returncode"] == 0 and r["last_line"] == "1 passed in 0.01s" for r in res["runs"])
    wall = {s: sum(r["wall_s"] for r in res["runs"] if r["side"] == s) for s in ("head", "base")}
    assert res["wall_ratio"] == pytest.approx(wall["head"] / wall["base"])
    assert res["head_minutes_at_base_speed"] == pytest.approx(9 * wall["head"] / wall["base"])
    text = capsys.readouterr().out
    assert f"head / base, total wall time: {res['wall_ratio']:.3f}" in text and "base took 9 minutes" in text
    with pytest.raises(SystemExit) as e:
        suite_time.main(["--base", "no-such-ref", "--base-venv", sys.prefix])
    assert e.value.code == 2 and "git failed" in capsys.readouterr().err


def test_the_test_command_is_the_second_line_of_the_readme_s_first_code_block():
    readme = "# x\n\ntext\n\n```bash\npip install .\npytest -q -n auto\n```\n\n```bash\nother\n```\n"
    assert suite_time.test_command(readme) == "pytest -q -n auto"
    with pytest.raises(ValueError, match="has 1 line"):
        suite_time.test_command("```bash\npip install .\n```\n")
    with pytest.raises(ValueError, match="no closed fenced code block"):
        suite_time.test_command("# x\n```bash\npip install .\n")


def test_a_failed_run_is_named_beside_the_ratio():
    runs = [{"side": side, "commit": "c", "wall_s": w, "cpu_s": 2 * w, "returncode": rc, "last_line": ""}
            for side, w, rc in (("head", 1.0, 0), ("base", 4.0, 0), ("base", 2.0, 1), ("head", 2.0, 0))]
    res, text = suite_time.summary(runs, None)
    assert res["wall_ratio"] == pytest.approx(3 / 6) and res["cpu_ratio"] == pytest.approx(6 / 12)
    assert res["failed"] == ["#3 base (rc 1)"] and "FAILED runs (their times are not a suite's): #3 base (rc 1)" in text


def test_bad_flags_exit_2_naming_the_problem(tmp_path, capsys):
    for argv, says in ((["--base", "x", "--base-venv", sys.prefix, "--rounds", "0"], "--rounds must be >= 1"),
                       (["--base", "x", "--base-venv", str(tmp_path)], "has no bin/python"),
                       (["--base", "x", "--base-venv", sys.prefix, "--base-minutes", "-1"], "--base-minutes must be > 0")):
        with pytest.raises(SystemExit) as e:
            suite_time.main(argv)
        assert e.value.code == 2 and says in capsys.readouterr().err
