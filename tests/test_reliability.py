"""Reliability, second round: reloading read-only runs, staleness that covers library
versions, segments instead of relabelling, no unverified restore, locks around moves,
processes sharing one pool, tracebacks kept for bugs, damaged log lines said aloud, one
source for data keys, and a full disk in one line. One test per item."""

import dataclasses
import inspect
import json
import os
import subprocess
import sys
import warnings

import pytest

import bnjax
from bnjax import data as data_lib
from bnjax import fit, loop, pool, runlog
from bnjax.checkpoint import SUMS, CheckpointError
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = TrainConfig(model=ModelConfig(arch="mlp", hidden=(16,), activation="relu", norm="batch"),
                   optim=OptimConfig(name="momentum", learning_rate=0.05),
                   data=DataConfig(source="digits", batch_size=32), steps=60, eval_every=20)


def _files(root) -> dict:
    return {os.path.join(d, f): (os.path.getmtime(os.path.join(d, f)), os.path.getsize(os.path.join(d, f)))
            for d, _, fs in os.walk(root) for f in fs}


def test_1_reloading_needs_read_access_only_and_writes_nothing(tmp_path, monkeypatch):
    wd = str(tmp_path / "run")
    fit(TINY, wd, progress=False)
    before = _files(tmp_path)

    def no_writes(path):
        raise PermissionError(f"cannot write to workdir {path}: read-only (test)")

    monkeypatch.setattr(runlog, "check_writable", no_writes)
    run = bnjax.load_run(wd)
    assert run.step == 60 and 0.5 < bnjax.evaluate(run)["accuracy"] <= 1.0
    assert bnjax.load_run(wd, step="best").step in (20, 40, 60)
    assert _files(tmp_path) == before


def test_2_library_versions_and_backend_decide_staleness(tmp_path):
    arms = {"a": TINY}
    first = pool.run_arms(arms, [0], str(tmp_path / "pool"), progress=False)["a"][0]
    meta_path = os.path.join(first.workdir, "meta.json")
    meta = runlog.read_json(meta_path)
    assert meta["versions"]["scikit-learn"] == runlog.versions()["scikit-learn"]  # recorded now
    meta["versions"]["python"] = "2.7.0"  # reported only: still fresh
    runlog.write_json(meta_path, meta)
    assert pool.run_arms(arms, [0], str(tmp_path / "pool"), progress=False, stale="refuse")["a"][0].summary
    meta["versions"]["jax"] = "0.0.1"
    runlog.write_json(meta_path, meta)
    with pytest.raises(pool.StaleRunError, match=r"jax 0\.0\.1 -> "):
        pool.run_arms(arms, [0], str(tmp_path / "pool"), progress=False, stale="refuse")
    meta["versions"]["jax"], meta["backend"] = runlog.versions()["jax"], "tpu"
    runlog.write_json(meta_path, meta)
    with pytest.raises(pool.StaleRunError, match=r"backend tpu -> cpu"):
        pool.run_arms(arms, [0], str(tmp_path / "pool"), progress=False, stale="refuse")


def test_3_a_resume_adds_a_segment_and_keeps_the_run_s_label(tmp_path, monkeypatch):
    wd = tmp_path / "run"
    cfg = dataclasses.replace(TINY, keep_checkpoints=3)
    fit(cfg, str(wd), progress=False)
    first = runlog.read_json(str(wd / "meta.json"))["code_version"]
    (wd / "results.json").unlink()
    for step in ("60", "40"):
        (wd / "checkpoints" / step / SUMS).unlink()  # forces a resume from step 20 (and says so)
    monkeypatch.setattr(runlog, "code_version", lambda: {"package": "x", "sources": "edited"})
    with pytest.warns(UserWarning, match="cannot be verified"):
        fit(cfg, str(wd), progress=False)
    meta = runlog.read_json(str(wd / "meta.json"))
    assert meta["code_version"] == first  # what made it from step 0
    assert [(s["from_step"], s["code_version"]["sources"]) for s in meta["segments"]] == [
        (0, first["sources"]), (20, "edited")]


def test_4_a_step_without_readable_checksums_is_not_restored_silently(tmp_path):
    wd = str(tmp_path / "run")
    fit(dataclasses.replace(TINY, keep_checkpoints=3), wd, progress=False)
    os.remove(os.path.join(wd, "checkpoints", "60", SUMS))  # as if the process died between the two writes
    with open(os.path.join(wd, "checkpoints", "40", SUMS), "w") as f:
        f.write("{not json")
    with pytest.warns(UserWarning) as caught:
        run = bnjax.load_run(wd)
    text = " ".join(str(w.message) for w in caught)
    assert "step 60" in text and "cannot be verified" in text and "checksum file cannot be read" in text
    assert run.step == 20


def test_5_the_pool_moves_a_stale_run_only_under_its_lock(tmp_path):
    rdir = tmp_path / "pool" / "abc" / "seed_0"
    rdir.mkdir(parents=True)
    (rdir / "config.json").write_text("{}")
    held = runlog.RunLock(str(rdir))  # another process training there
    try:
        with pytest.raises(runlog.RunLockedError):
            pool.set_aside(str(rdir))
        assert (rdir / "config.json").exists()
    finally:
        held.release()
    moved = pool.set_aside(str(rdir))
    assert os.path.exists(os.path.join(moved, "config.json")) and not rdir.exists()


@pytest.mark.slow(programs="after smoke")
def test_6_two_invocations_share_one_pool_and_train_each_run_once(tmp_path):
    wd = str(tmp_path / "ab")
    # the reproduce smoke test's flags (tests/test_experiments.py), whose placement programs the cache then holds
    cmd = [sys.executable, "-m", "experiments.placement", "--quick", "--seeds", "1", "--steps", "3", "--quiet",
           "--workdir", wd]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    metas = [runlog.read_json(os.path.join(d, "meta.json")) for d in _run_dirs(os.path.join(wd, "runs"))]
    assert len(metas) == 6 and all(len(m["segments"]) == 1 for m in metas)  # each run trained once
    assert os.path.exists(os.path.join(wd, "report.md"))


def _run_dirs(root: str) -> list[str]:
    return sorted(os.path.join(root, h, s) for h in os.listdir(root) for s in os.listdir(os.path.join(root, h))
                  if s.startswith("seed_"))


def test_7_user_errors_take_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    from experiments import _cli, ablation

    s = _cli.settings_from(_cli.experiment_parser("", "runs/x"), [ablation.EXPERIMENT], ["--quick"])

    def raises(error):
        def run(exp, settings):
            raise error
        return run

    monkeypatch.setattr(_cli, "run_experiment", raises(data_lib.DataError("npz file x lacks arrays")))
    with pytest.raises(SystemExit) as e:
        _cli.run(ablation.EXPERIMENT, s)
    assert e.value.code == 1 and capsys.readouterr().err == "error: npz file x lacks arrays\n"
    monkeypatch.setattr(_cli, "run_experiment", raises(ValueError("an XLA or programming error")))
    with pytest.raises(ValueError, match="an XLA or programming error"):
        _cli.run(ablation.EXPERIMENT, s)


def test_8_a_damaged_log_line_is_reported_and_never_dropped_silently(tmp_path):
    wd = str(tmp_path)
    lines = [json.dumps({"step": 20, "val_accuracy": 0.5}), "{garbage", json.dumps({"step": 40, "val_accuracy": 0.6}),
             '{"step": 60, "val_acc']  # a torn last line (no newline) is what a kill leaves: not reported
    with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
        f.write("\n".join(lines))
    assert runlog.damaged_metrics(wd) == [2]
    with pytest.warns(UserWarning, match=r"metrics.jsonl: line\(s\) 2 are damaged"):
        recs = runlog.read_metrics(wd)
    assert [r["step"] for r in recs] == [20, 40]
    with pytest.warns(UserWarning, match="the original is kept as"):
        runlog.rewrite_metrics(wd, recs)
    kept = [f for f in os.listdir(wd) if f.startswith("metrics.jsonl.damaged-")]
    assert len(kept) == 1 and "{garbage" in open(os.path.join(wd, kept[0])).read()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(runlog.read_metrics(wd)) == 2  # the rewritten file is clean


def test_9_one_source_for_data_keys_revisions_and_checksum_files():
    args = loop.dataset_args(TINY)
    params = set(inspect.signature(data_lib.load).parameters)
    assert set(args) == params  # every argument of load is part of the pool's data key, none is copied by hand
    assert pool._data_key(TINY) == tuple(sorted(args.items()))
    g = runlog.git_state()
    assert runlog.git_revision() in (g["commit"], g["commit"] + "+dirty", "unknown")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs: needs root")
def test_10_a_full_disk_ends_the_run_in_one_line_and_the_same_command_resumes(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        cmd = [sys.executable, "-m", "experiments.train", "--data", "digits", "--workdir", str(mnt / "run"), "--quiet",
               "--steps", "300", "--eval_every", "100"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        out = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 1 and len(out) == 1, out
        assert out[0].startswith("error: cannot save the checkpoint of step") and "No space left" in out[0]
        subprocess.run(["mount", "-o", "remount,size=50m", str(mnt)], check=True)
        again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert runlog.read_json(str(mnt / "run" / "results.json"))["final_step"] == 300
    finally:
        subprocess.run(["umount", str(mnt)])


def test_checkpoint_error_messages_stay_short():
    from bnjax.checkpoint import short_error

    e = ValueError('RESOURCE_EXHAUSTED: Error writing "k" [tensorstore_spec=\'{"a": 1}\'] [os_error_code=28]'
                   ' No space left on device')
    assert short_error(e) == 'No space left on device: RESOURCE_EXHAUSTED: Error writing "k"'
    assert issubclass(CheckpointError, RuntimeError)


def test_a_pool_whose_locks_do_not_exclude_is_refused_before_training(tmp_path, monkeypatch):
    """The pool's self-test (`runlog.check_locks_exclude`): on a filesystem that ignores
    flock (simulated: flock does nothing) or has no lock support (ENOLCK), opening the
    pool is refused naming the directory and the fix; nothing is trained or left behind."""
    import errno
    import fcntl

    from bnjax import pool

    cfg = TrainConfig(model=ModelConfig(arch="mlp", hidden=(8,)), data=DataConfig(source="digits", batch_size=32),
                      steps=4, eval_every=4)
    runlog.check_locks_exclude(str(tmp_path / "ok"))  # a local disk: passes, leaves nothing
    assert os.listdir(tmp_path / "ok") == []
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: None)
    with pytest.raises(runlog.LocksUnsupportedError, match=f"run locks do not work in {tmp_path / 'p1'}: a second "
                       "lock on the same file was granted.*-o flock"):
        pool.run_arms({"a": cfg}, [0], str(tmp_path / "p1"), progress=False)
    assert os.listdir(tmp_path / "p1") == []  # nothing trained, no probe file left

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(runlog.LocksUnsupportedError, match=r"taking a lock failed \(No locks available\)"):
        pool.run_arms({"a": cfg}, [0], str(tmp_path / "p2"), progress=False)
