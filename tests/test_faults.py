"""Faults and bad input: nothing hangs, nothing is silently wrong, no run is lost. One test
per failure found by hand on experiments.train with the digits data."""

import dataclasses
import os
import shutil
import subprocess
import sys
import select
import tempfile
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import bnjax
from bnjax import fit, runlog
from bnjax.checkpoint import CheckpointError, Checkpoints
from bnjax.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = TrainConfig(model=ModelConfig(arch="mlp", hidden=(32,), norm="batch", activation="relu"),
                   optim=OptimConfig(name="momentum", learning_rate=0.05),
                   data=DataConfig(source="digits", batch_size=32), steps=60, eval_every=20)


def _train_cli(*args, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "experiments.train", "--quiet", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kw)


def _equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# 1. a checkpoint that cannot be written ends the process at once, with one line


def test_checkpoint_directory_that_cannot_exist_fails_before_training_in_one_line(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "checkpoints").write_text("a file where the checkpoint directory goes")
    proc = _train_cli("--workdir", str(wd), "--steps", "40", "--eval_every", "20")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")
    assert "checkpoints" in proc.stderr and not (wd / "metrics.jsonl").exists()  # before any training step


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; checked by hand with setpriv (see note)")
def test_unwritable_checkpoint_directory_exits_promptly_with_one_line():
    wd = tempfile.mkdtemp()
    os.makedirs(f"{wd}/checkpoints")
    os.chmod(f"{wd}/checkpoints", 0o555)
    try:
        proc = _train_cli("--workdir", wd, "--steps", "40", "--eval_every", "20", timeout=60)
    finally:
        os.chmod(f"{wd}/checkpoints", 0o755)
        shutil.rmtree(wd)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and len(proc.stderr.splitlines()) <= 3


def test_a_save_failing_mid_run_raises_a_named_error_and_frees_the_workdir(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    real = ocp.CheckpointManager.save

    def failing(self, step, *a, **kw):
        if step >= 40:
            raise OSError(28, "No space left on device")
        return real(self, step, *a, **kw)

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing)
    with pytest.raises(CheckpointError, match="step 40 .*No space left on device"):
        fit(TINY, str(tmp_path), progress=False)
    monkeypatch.setattr(ocp.CheckpointManager, "save", real)
    res = fit(TINY, str(tmp_path), progress=False)  # the lock was released; resumes from step 20
    assert res.summary["final_step"] == 60


# 2. a corrupt newest checkpoint is set aside and the run finishes


@pytest.mark.parametrize("damage", ["metadata_garbage", "data_file_empty", "manifest_truncated"])
def test_corrupt_newest_checkpoint_is_set_aside_and_the_run_finishes_bitwise(tmp_path, damage):
    cfg = dataclasses.replace(TINY, keep_checkpoints=3)
    full = fit(cfg, str(tmp_path / "a"), progress=False)
    wd = tmp_path / "b"
    fit(cfg, str(wd), progress=False)
    step_dir = wd / "checkpoints" / "60" / "default"
    if damage == "metadata_garbage":
        (step_dir / "_METADATA").write_text("garbage{")
    elif damage == "data_file_empty":
        for f in (step_dir / "d").iterdir():
            f.write_bytes(b"")
    else:
        (step_dir / "manifest.ocdbt").write_bytes((step_dir / "manifest.ocdbt").read_bytes()[:10])
    (wd / "results.json").unlink()
    with pytest.warns(UserWarning, match="step 60 cannot be restored"):
        again = fit(cfg, str(wd), progress=False)
    assert _equal(full.state.params, again.state.params)
    assert [r["step"] for r in runlog.read_metrics(str(wd))] == [20, 40, 60]
    assert len(os.listdir(wd / "checkpoints_aside")) == 1  # kept, renamed
    rerun = fit(cfg, str(wd), progress=False)  # and it stays finished
    assert rerun.summary["final_step"] == 60


# 3. a changed array is caught by its checksum


def test_bit_flipped_compressed_checkpoint_is_not_restored_silently(tmp_path):
    """Flipped bits inside a zstd frame of the arrays' data file (its frame header, found by
    its magic number: the same bytes every time) make tensorstore refuse the read; step 60
    is refused loudly and step 40 restored. Flipped raw array bytes, which the storage reads
    back silently, are caught by bnjax's checksums (the next test)."""
    fit(dataclasses.replace(TINY, keep_checkpoints=3), str(tmp_path), progress=False)
    data = max((tmp_path / "checkpoints" / "60" / "default").glob("**/d/*"), key=lambda f: f.stat().st_size)
    raw = bytearray(data.read_bytes())
    at = raw.index(b"\x28\xb5\x2f\xfd") + 4  # zstd's magic number, then the frame header
    raw[at:at + 8] = bytes(b ^ 0xFF for b in raw[at:at + 8])
    data.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="step 60 .*cannot be restored"):
        run = bnjax.load_run(str(tmp_path))
    assert run.step == 40 and all(np.isfinite(x).all() for x in jax.tree.leaves(run.state.params))


def test_checksums_detect_an_array_that_changed_after_saving(tmp_path):
    """The bytes of a saved array are changed on disk, deterministically: the array's
    raw bytes (random, so the compressor stores them as they are) are found in orbax's data
    files and one value is overwritten. The storage reads the changed value back without
    complaint; bnjax's checksum refuses."""
    store = Checkpoints(str(tmp_path / "c"))
    w = np.random.default_rng(0).integers(0, 2**31, (64, 64)).astype(np.int32)
    state = {"w": w, "b": np.zeros(3, np.float32)}
    store.save(1, state, {"val_accuracy": 0.5})
    assert _equal(store.restore(1, state), state)
    needle = w.tobytes()
    hits = [f for f in (tmp_path / "c" / "1").glob("**/*") if f.is_file() and needle in f.read_bytes()]
    assert len(hits) == 1, hits  # stored raw, once
    raw = hits[0].read_bytes()
    at = raw.index(needle) + 4 * 66  # w[1, 2]
    hits[0].write_bytes(raw[:at] + np.int32(-7).tobytes() + raw[at + 4:])
    read = store._mngr.restore(1, args=ocp.args.StandardRestore(state))  # the storage itself does not notice
    assert read["w"][1, 2] == -7
    with pytest.raises(CheckpointError, match=r"fails its checksums \(1 arrays, e.g. \['w'\]\)"):
        store.restore(1, state)
    store.close()


# 4. one process per run directory


_HOLDER = """
import sys, time
from bnjax import runlog
lock = runlog.RunLock(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_process_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    wd = str(tmp_path / "run")
    os.makedirs(wd)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, wd], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 120)  # never hang if the holder dies
        assert ready and holder.stdout.readline().strip() == "locked"
        with pytest.raises(runlog.RunLockedError, match=f"in use by another process \\(pid {holder.pid} on"):
            fit(TINY, wd, progress=False)
        assert not os.path.exists(os.path.join(wd, "config.json"))  # refused before writing anything
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the lock file stays behind
        holder.wait()
    assert "pid" in open(os.path.join(wd, ".lock")).read()
    assert fit(TINY, wd, progress=False).summary["final_step"] == 60  # the stale lock does not block


_PROBER = """
import sys, time
from bnjax import runlog
print("probing", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    runlog.is_locked(sys.argv[1])
"""


def test_a_process_looking_at_a_lock_never_makes_a_trainer_skip_the_run(tmp_path):
    """`is_locked` holds the lock shared for an instant; a process taking the lock then
    must not count it as held (two jobs starting a section made each other leave runs
    untrained that way: ~7% of 20,000 lock attempts failed under a looping prober)."""
    wd = str(tmp_path / "run")
    os.makedirs(wd)
    prober = subprocess.Popen([sys.executable, "-c", _PROBER, wd, "60"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([prober.stdout], [], [], 120)
        assert ready and prober.stdout.readline().strip() == "probing"
        for _ in range(3000):  # each would fail ~7% of the time without the grace: ~200 failures expected
            runlog.RunLock(wd).release()
    finally:
        prober.kill()
        prober.wait()
    held = runlog.RunLock(wd)
    try:  # a trainer's (exclusive) hold is refused at once, never waited out: a waiter would read its run back
        t0 = time.monotonic()
        with pytest.raises(runlog.RunLockedError):
            runlog.RunLock(wd, grace_s=5.0)
        assert time.monotonic() - t0 < 1.0
    finally:
        held.release()


# 6. every check that can be made before compute is made before compute


def test_too_many_population_batches_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="population_stats_batches 500 exceeds the 35 batches"):
        fit(dataclasses.replace(TINY, population_stats_batches=500), str(tmp_path), progress=False)
    assert not (tmp_path / "config.json").exists()


# 7. non-finite values and non-integer labels are errors that name the problem


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_learning_rate_is_a_flag_error(value, capsys):
    from experiments import train

    with pytest.raises(SystemExit) as e:  # in this process (train's command line: tests/test_faults.py, 8.)
        train.main(["--quiet", f"--optim.learning_rate={value}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "optim.learning_rate" in err and "finite" in err
    with pytest.raises(ConfigError, match="init_std"):
        ModelConfig(init_std=float(value))


def _npz(tmp_path, **change):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((40, 5, 5)).astype(np.float32), "y_train": np.arange(40) % 10,
              "x_test": rng.random((10, 5, 5)).astype(np.float32), "y_test": np.arange(10) % 10}
    arrays.update(change)
    np.savez(tmp_path / "d.npz", **arrays)
    return f"npz:{tmp_path / 'd.npz'}"


def test_nan_pixels_float_labels_and_empty_sets_are_named(tmp_path):
    from bnjax import data

    x = np.random.default_rng(1).random((40, 5, 5)).astype(np.float32)
    x[7, 2, 2] = np.nan
    with pytest.raises(ValueError, match="1 non-finite pixel values in the train images \\(first in image 7\\)"):
        data.load(_npz(tmp_path, x_train=x))
    with pytest.raises(ValueError, match="non-finite pixel values in the test images"):
        data.load(_npz(tmp_path, x_test=np.full((10, 5, 5), np.inf, np.float32)))
    with pytest.raises(ValueError, match="1 train labels are not whole numbers \\(e.g. 3.5\\)"):
        data.load(_npz(tmp_path, y_train=np.r_[np.arange(39) % 10, 3.5]))
    assert data.load(_npz(tmp_path, y_train=(np.arange(40) % 10).astype(float))).y_train.dtype == np.int32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error comes first, no numpy RuntimeWarnings before it
        with pytest.raises(ValueError, match="empty training set"):
            data.load(_npz(tmp_path, x_train=np.zeros((0, 5, 5), np.float32), y_train=np.zeros(0, int)))


# 8. a failed start does not block the corrected command


@pytest.mark.slow
def test_a_failed_start_leaves_the_workdir_usable(tmp_path, capsys):
    from experiments import train

    wd = str(tmp_path / "run")
    for flags, says in ((["--data", f"npz:{tmp_path}/missing.npz"], "not found"),
                        (["--data.batch_size", "5000"], "exceeds the 1150 training examples")):
        with pytest.raises(SystemExit) as e:  # the failed starts in this process...
            train.main(["--quiet", "--workdir", wd, *flags, "--steps", "20"])
        assert e.value.code == 1 and says in capsys.readouterr().err
    proc = _train_cli("--workdir", wd, "--steps", "20", "--eval_every", "10")  # ...the corrected command in another
    assert proc.returncode == 0, proc.stderr
    assert runlog.read_json(os.path.join(wd, "config.json"))["data"]["source"] == "digits"


# 9. the best checkpoint is the evaluated one


def test_best_checkpoint_is_the_evaluated_step(tmp_path):
    cfg = dataclasses.replace(TINY, steps=300, eval_every=100, checkpoint_every=50)
    res = fit(cfg, str(tmp_path), progress=False)
    best = bnjax.load_run(str(tmp_path), step="best")
    assert best.step == res.summary["best_step"] and best.step % 100 == 0
    acc = bnjax.evaluate(best)["accuracy"]
    assert acc == pytest.approx(res.summary["test_accuracy_at_best"], abs=1e-6)
    val = {r["step"]: r["val_accuracy"] for r in res.history}
    assert val[best.step] == max(val.values())  # selected on validation, never on test


# 10. a resume between evaluations logs what the uninterrupted run logs


def test_resume_between_evaluations_logs_the_same_training_loss(tmp_path):
    cfg = dataclasses.replace(TINY, steps=80, eval_every=40, checkpoint_every=30, keep_checkpoints=5)
    fit(cfg, str(tmp_path / "a"), progress=False)
    wd = tmp_path / "b"
    fit(cfg, str(wd), progress=False)
    for step in os.listdir(wd / "checkpoints"):
        if int(step) > 30:
            shutil.rmtree(wd / "checkpoints" / step)
    (wd / "results.json").unlink()
    fit(cfg, str(wd), progress=False)  # resumes at 30, between the evaluations at 0 and 40
    want, got = runlog.read_metrics(str(tmp_path / "a")), runlog.read_metrics(str(wd))
    assert [(r["train_loss"], r["train_steps"]) for r in got] == [(r["train_loss"], r["train_steps"]) for r in want]
    assert [r["val_accuracy"] for r in got] == [r["val_accuracy"] for r in want]
    assert [r.get("test_accuracy") for r in got] == [r.get("test_accuracy") for r in want]


# 11. smaller ones


def test_analyze_evaluate_on_a_diverged_run_without_checkpoint_says_so(tmp_path, capsys):
    cfg = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, norm="none", init="normal", init_std=1e25),
                              steps=40, eval_every=20)  # logits overflow: the loss of step 0 is already NaN
    fit(cfg, str(tmp_path / "run"), progress=False)
    from experiments import analyze

    capsys.readouterr()
    analyze.main([str(tmp_path / "run"), "--evaluate"])  # in this process
    row = [line for line in capsys.readouterr().out.splitlines() if str(tmp_path) in line][0]
    assert "no readable checkpoint" in row or "no checkpoint" in row
    div = runlog.read_json(str(tmp_path / "run" / "results.json"))["diverged_at"]
    assert div == 0
    import re

    assert re.search(rf"\|\s*{div}\s*\|", row), row  # "diverged at" shows the step, also step 0
