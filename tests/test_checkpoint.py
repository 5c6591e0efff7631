"""Checkpoints in real use: SIGKILL mid-run then resume, Ctrl-C saves, load_run/evaluate."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import bnjax
from bnjax import config as C
from bnjax.checkpoint import Checkpoints

CFG = C.TrainConfig(
    model=C.ModelConfig(arch="mlp", hidden=(64, 64), norm="batch", activation="relu", dropout=0.1),
    optim=C.OptimConfig(name="adam", learning_rate=1e-3),
    data=C.DataConfig(source="digits", batch_size=32, augment="rotate:10"),
    steps=4000, eval_every=100, keep_checkpoints=3,
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = """
import json, sys
from bnjax import config as C, fit
cfg = C.from_dict(C.TrainConfig, json.loads(sys.argv[1]))
fit(cfg, sys.argv[2], progress=False)
"""


def _start(cfg, workdir):
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(C.to_dict(cfg)), workdir], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(workdir, min_step, proc, timeout=120):
    ckdir = os.path.join(workdir, "checkpoints")
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"child ended early: {proc.stdout.read()}")
        if os.path.isdir(ckdir) and any(d.isdigit() and int(d) >= min_step for d in os.listdir(ckdir)):
            return
        time.sleep(0.05)
    pytest.fail("no checkpoint appeared")


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    cfg = dataclasses.replace(CFG, steps=1200)  # killed at a checkpoint >= 300: 900 steps (9 evaluations) to spare
    killed = str(tmp_path / "killed")
    proc = _start(cfg, killed)
    _wait_for_checkpoint(killed, 300, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(killed, "results.json"))  # it really was cut short
    resumed = bnjax.fit(cfg, killed, progress=False)
    straight = bnjax.fit(cfg, str(tmp_path / "straight"), progress=False)
    assert _same(resumed.state.params, straight.state.params)
    assert _same(resumed.state.batch_stats, straight.state.batch_stats)
    assert _same(resumed.state.opt_state, straight.state.opt_state)
    steps = [r["step"] for r in bnjax.runlog.read_metrics(killed)]
    assert steps == list(range(100, 1201, 100))  # no duplicated or lost records


def test_ctrl_c_saves_a_checkpoint_and_says_so(tmp_path):
    wd = str(tmp_path / "run")
    proc = _start(CFG, wd)
    _wait_for_checkpoint(wd, 200, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "interrupted: checkpoint saved at step" in out
    step = int(out.split("checkpoint saved at step ")[1].split()[0])
    store = Checkpoints(os.path.join(wd, "checkpoints"), keep=3)
    assert step in store.steps()
    store.close()


def test_load_run_and_evaluate_round_trip(tmp_path):
    cfg = dataclasses.replace(CFG, steps=300)
    res = bnjax.fit(cfg, str(tmp_path), progress=False)
    run = bnjax.load_run(str(tmp_path))
    assert run.step == 300 and run.config == cfg and len(run.history) == 3
    assert _same(run.state.params, res.state.params)
    ev = bnjax.evaluate(run)
    assert abs(ev["accuracy"] - res.summary["final_test_accuracy"]) < 1e-6
    pop = bnjax.evaluate(run, population_batches=20)  # Algorithm 2 after loading == at the end of training
    trained = bnjax.fit(dataclasses.replace(cfg, population_stats_batches=20), progress=False)
    assert pop["accuracy"] == pytest.approx(trained.summary["test_accuracy_population_stats"], abs=1e-6)
    best = bnjax.load_run(str(tmp_path), step="best")
    accs = {r["step"]: r["val_accuracy"] for r in run.history}
    assert accs[best.step] == max(accs[s] for s in accs if s in (100, 200, 300))
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 7"):
        bnjax.load_run(str(tmp_path), step=7)


def test_keeps_the_last_k_plus_the_best(tmp_path):
    cfg = dataclasses.replace(CFG, steps=600, keep_checkpoints=2, optim=C.OptimConfig(name="sgd", learning_rate=3.0))
    res = bnjax.fit(cfg, str(tmp_path), progress=False)
    accs = {r["step"]: r["val_accuracy"] for r in res.history if "val_accuracy" in r}
    best = max(accs, key=accs.get)
    store = Checkpoints(os.path.join(tmp_path, "checkpoints"), keep=2)
    kept = store.steps()
    store.close()
    last = sorted(accs)[-2:]
    assert set(last) <= set(kept) and best in kept and set(kept) <= set(last) | {best}


def test_keys_are_typed_and_a_checkpoint_with_legacy_keys_restores(tmp_path):
    """A state's keys are typed PRNG keys; saved as key data and wrapped again on restore,
    so a checkpoint written with legacy uint32 keys (before typed keys) restores as well."""
    from bnjax.programs import model_for, optimizer_for
    from bnjax.train import create_state

    model, tx = model_for(CFG.model), optimizer_for(CFG.optim, CFG.steps)
    state = create_state(model, tx, np.zeros((2, 8, 8, 1), np.float32), seed=3)
    assert jax.dtypes.issubdtype(state.keys.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(state.keys[0]),  # the legacy stream's bits, unchanged
                                  jax.random.split(jax.random.PRNGKey(3), 4)[1])
    typed = Checkpoints(str(tmp_path / "typed"))
    typed.save(5, state, {"val_accuracy": 0.5})
    legacy = Checkpoints(str(tmp_path / "legacy"))
    legacy.save(5, state.replace(keys=jax.random.key_data(state.keys)), {"val_accuracy": 0.5})
    for store in (typed, legacy):
        back = store.restore(5, state)
        assert back.keys.dtype == state.keys.dtype
        np.testing.assert_array_equal(jax.random.key_data(back.keys), jax.random.key_data(state.keys))
        store.close()


def _tiny_state(k: float = 0.0) -> dict:
    return {"w": np.arange(6, dtype=np.float32).reshape(2, 3) + k, "b": np.ones(3, np.float32) * k}


def test_an_array_missing_from_the_checksums_is_not_restored_unverified(tmp_path):
    store = Checkpoints(str(tmp_path / "ck"), keep=3)
    store.save(10, _tiny_state(1.0), {"val_accuracy": 0.5})
    sums_path = tmp_path / "ck" / "10" / "bnjax_checksums.json"
    sums = json.loads(sums_path.read_text())
    assert len(sums) == 2
    jax.tree.map(np.testing.assert_array_equal, store.restore(10, _tiny_state()), _tiny_state(1.0))
    dropped = sorted(sums)[0]
    sums_path.write_text(json.dumps({k: v for k, v in sums.items() if k != dropped}))
    with pytest.raises(bnjax.checkpoint.CheckpointError, match="fails its checksums") as e:
        store.restore(10, _tiny_state())
    assert dropped in str(e.value)


def test_set_aside_keeps_the_step_the_run_resumed_from(tmp_path):
    store = Checkpoints(str(tmp_path / "ck"), keep=5)
    for step in (10, 20, 30):
        store.save(step, _tiny_state(step), {"val_accuracy": step / 100})
    moved = store.set_aside(20)
    assert store.steps() == [10, 20] and len(moved) == 1 and os.path.basename(moved[0]).startswith("30.")
    assert os.path.isdir(moved[0])  # kept, not deleted
    assert store.set_aside(20) == []


def test_a_read_only_store_refuses_to_save_and_writes_nothing(tmp_path):
    Checkpoints(str(tmp_path / "ck")).save(10, _tiny_state(1.0), {"val_accuracy": 0.5})
    before = sorted(os.listdir(tmp_path / "ck"))
    ro = Checkpoints(str(tmp_path / "ck"), read_only=True)
    with pytest.raises(bnjax.checkpoint.CheckpointError, match="opened read-only"):
        ro.save(20, _tiny_state(2.0), {"val_accuracy": 0.6})
    assert sorted(os.listdir(tmp_path / "ck")) == before and ro.steps() == [10]


def test_set_aside_moves_each_later_step_beside_the_store_named_by_step_time_and_process(tmp_path):
    import re

    store = Checkpoints(str(tmp_path / "run" / "checkpoints"), keep=5)
    for step in (10, 20, 30, 40):
        store.save(step, _tiny_state(step), {"val_accuracy": step / 100})
    moved = store.set_aside(20)  # two steps: the aside folder exists for the second
    assert [os.path.dirname(m) for m in moved] == [str(tmp_path / "run" / "checkpoints_aside")] * 2
    for m, step in zip(moved, (30, 40), strict=True):
        assert re.fullmatch(rf"{step}\.\d{{8}}T\d{{6}}\.{os.getpid()}", os.path.basename(m)), m
    assert store.steps() == [10, 20]


def test_restore_reads_the_step_asked_for_not_the_newest(tmp_path):
    store = Checkpoints(str(tmp_path / "ck"), keep=5)
    for step in (10, 20):
        store.save(step, _tiny_state(float(step)), {"val_accuracy": step / 100})
    old = store.restore(10, _tiny_state(0.0))
    assert _same(old, _tiny_state(10.0)) and not _same(old, _tiny_state(20.0))


def test_the_store_keeps_exactly_the_last_k_and_the_best_by_validation_accuracy(tmp_path):
    store = Checkpoints(str(tmp_path / "ck"), keep=1)
    for step, acc in ((10, 0.9), (20, 0.5), (30, 0.7), (40, 0.6)):
        store.save(step, _tiny_state(float(step)), {"val_accuracy": acc})
    assert store.steps() == [10, 40]  # the best (highest), the last; not 30 (the second best)


def test_tree_checksums_cover_dtype_shape_and_bytes():
    from bnjax.checkpoint import tree_checksums

    x = np.arange(6, dtype=np.float32)
    sums = tree_checksums({"a": x, "b": x.reshape(2, 3), "c": x.view(np.int32), "d": x + 1})
    assert len(set(sums.values())) == 4 and all(len(v) == 32 for v in sums.values())  # 16-byte BLAKE2b, in hex
    assert tree_checksums({"a": x.copy()}) == {"['a']": sums["['a']"]}  # content, not identity
    import hashlib
    want = hashlib.blake2b(b"<f4(6,)", digest_size=16)
    want.update(x.tobytes())
    assert sums["['a']"] == want.hexdigest()


def test_by_default_the_last_two_steps_are_kept_beside_the_best(tmp_path):
    store = Checkpoints(str(tmp_path / "ck"))
    for step, acc in ((10, 0.9), (20, 0.5), (30, 0.6), (40, 0.7)):  # the best (step 10) comes first
        store.save(step, _tiny_state(float(step)), {"val_accuracy": acc})
    assert store.steps() == [10, 30, 40]


def test_only_process_zero_keeps_checkpoints_on_several_hosts():
    """Orbax's multiprocessing options: alone, its defaults; with several processes, process
    0 is the primary host and the only active one (so no barrier waits for the others)."""
    from bnjax.checkpoint import multiprocessing_options
    import orbax.checkpoint as ocp

    assert multiprocessing_options(1) == ocp.options.MultiprocessingOptions()
    for n in (2, 4):
        multi = multiprocessing_options(n)
        assert multi.primary_host == 0 and multi.active_processes == {0}
    assert multiprocessing_options(2) != ocp.options.MultiprocessingOptions()


def test_restore_latest_falls_back_and_names_the_cause_in_200_characters_at_the_caller(tmp_path, monkeypatch):
    store = Checkpoints(str(tmp_path / "ck"), keep=5)
    for step in (10, 20):
        store.save(step, _tiny_state(float(step)), {"val_accuracy": step / 100})
    real = store.restore

    def unreadable_20(step, target):
        if step == 20:
            raise ValueError("a" * 199 + "bc" + "d" * 100)
        return real(step, target)

    monkeypatch.setattr(store, "restore", unreadable_20)
    with pytest.warns(UserWarning) as caught:
        state, step = store.restore_latest(_tiny_state())
    assert step == 10 and _same(state, _tiny_state(10.0))
    (w,) = caught
    text = str(w.message)
    assert "step 20" in text and "(ValueError: " + "a" * 199 + "b); trying an older one" in text  # 200 characters
    # attributed to the caller, not to bnjax/checkpoint.py (under mutmut, its trampoline is the frame in between)
    assert w.filename == __file__ or w.filename.endswith(os.path.join("mutmut", "mutation", "trampoline.py"))


def test_short_error_keeps_a_message_without_the_disk_cause_and_cuts_at_300_characters():
    from bnjax.checkpoint import short_error

    assert short_error(ValueError("cannot read k")) == "cannot read k"  # no cause added where there is none
    assert short_error(OSError("No space left on device: writing k")) == "No space left on device: writing k"
    assert short_error(ValueError("x" * 300)) == "x" * 300
    assert short_error(ValueError("x" * 301)) == "x" * 300 + " ..."
    spec = ValueError("Error writing [tensorstore_spec='{\"a\": 1}'] No space left on device")
    assert short_error(spec) == "No space left on device: Error writing"  # the cause kept where the cut drops it


def test_an_unreadable_checksum_file_is_named_with_its_error(tmp_path):
    store = Checkpoints(str(tmp_path / "ck"), keep=3)
    store.save(10, _tiny_state(1.0), {"val_accuracy": 0.5})
    (tmp_path / "ck" / "10" / "bnjax_checksums.json").write_text("{not json")
    with pytest.raises(bnjax.checkpoint.CheckpointError,
                       match=r"step 10 .*checksum file cannot be read \(JSONDecodeError: .*cannot be verified"):
        store.restore(10, _tiny_state())
