"""The run pool reuses a finished run only when its stored config, data fingerprint and code
version all equal the present ones; otherwise it retrains (the old run kept aside) or
refuses, naming what differs."""

import importlib.util
import os
import shutil

import numpy as np
import pytest

from bnjax import pool, runlog
from bnjax.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(source: str = "digits") -> TrainConfig:
    return TrainConfig(model=ModelConfig(arch="mlp", hidden=(16,), norm="batch", activation="relu"),
                       optim=OptimConfig(name="momentum", learning_rate=0.05),
                       data=DataConfig(source=source, batch_size=16), steps=10, eval_every=5)


def _train(tmp_path, arms, **kw):
    return pool.run_arms(arms, [0], str(tmp_path / "pool"), progress=False, **kw)


def _stamp(run) -> float:
    return os.path.getmtime(os.path.join(run.workdir, "results.json"))


def test_matching_run_is_read_back_and_the_hash_covers_every_field(tmp_path):
    first = _train(tmp_path, {"a": _cfg()})["a"][0]
    again = _train(tmp_path, {"a": _cfg()})["a"][0]
    assert again.workdir == first.workdir and _stamp(again) == _stamp(first)
    assert again.summary == first.summary
    # the directory is keyed by the complete config: a changed default value is another run
    other = _cfg().__class__(**{**_cfg().__dict__, "probe_examples": 999})
    assert pool.run_dir("p", other) != pool.run_dir("p", _cfg())


def test_edited_config_is_refused_or_retrained_with_the_old_run_kept(tmp_path, capsys):
    run = _train(tmp_path, {"a": _cfg()})["a"][0]
    stored = runlog.read_json(f"{run.workdir}/config.json")
    stored["optim"]["learning_rate"] *= 2  # the stored run is not what the config asks for
    runlog.write_json(f"{run.workdir}/config.json", stored)
    with pytest.raises(pool.StaleRunError, match=r"config \(optim.learning_rate\)"):
        _train(tmp_path, {"a": _cfg()}, stale="refuse")
    assert runlog.read_json(f"{run.workdir}/config.json") == stored  # refusing touched nothing
    new = _train(tmp_path, {"a": _cfg()}, stale="retrain")["a"][0]
    out = capsys.readouterr().out
    assert "stale run" in out and "optim.learning_rate" in out and "training it again" in out
    assert runlog.read_json(f"{new.workdir}/config.json")["optim"]["learning_rate"] == 0.05
    kept = os.listdir(os.path.join(os.path.dirname(run.workdir), "stale"))
    assert len(kept) == 1 and kept[0].startswith("seed_0-")
    aside = os.path.join(os.path.dirname(run.workdir), "stale", kept[0])
    assert runlog.read_json(f"{aside}/config.json") == stored  # never deleted


def test_changed_data_is_detected_by_its_fingerprint(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (64, 6, 6), dtype=np.uint8), "y_train": np.arange(64) % 10,
              "x_test": rng.integers(0, 256, (20, 6, 6), dtype=np.uint8), "y_test": np.arange(20) % 10}
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    arms = {"a": _cfg(f"npz:{path}")}
    run = _train(tmp_path, arms)["a"][0]
    assert _stamp(_train(tmp_path, arms)["a"][0]) == _stamp(run)  # same file: read back
    arrays["x_train"][3, 2, 2] ^= 1  # one pixel, one bit: same source, same shapes
    np.savez(path, **arrays)
    with pytest.raises(pool.StaleRunError, match="data fingerprint"):
        _train(tmp_path, arms, stale="refuse")
    new = _train(tmp_path, arms)["a"][0]
    stale_dir = os.path.join(os.path.dirname(new.workdir), "stale")
    (aside,) = os.listdir(stale_dir)
    old_fp = runlog.read_json(os.path.join(stale_dir, aside, "meta.json"))["data_fingerprint"]
    new_fp = runlog.read_json(f"{new.workdir}/meta.json")["data_fingerprint"]
    assert old_fp["shapes"] == new_fp["shapes"] and old_fp["checksum"] != new_fp["checksum"]


def test_changed_code_is_detected_by_its_version(tmp_path, monkeypatch):
    run = _train(tmp_path, {"a": _cfg()})["a"][0]
    real = runlog.code_version()
    assert runlog.read_json(f"{run.workdir}/meta.json")["code_version"] == real
    monkeypatch.setattr(runlog, "code_version", lambda: {**real, "sources": "0123456789abcdef"})
    changed = f"code version \\(sources of bnjax's number modules {real['sources']} -> 0123456789abcdef\\)"
    with pytest.raises(pool.StaleRunError, match=changed):
        _train(tmp_path, {"a": _cfg()}, stale="refuse")
    new = _train(tmp_path, {"a": _cfg()})["a"][0]
    assert runlog.read_json(f"{new.workdir}/meta.json")["code_version"]["sources"] == "0123456789abcdef"


def test_the_code_version_is_the_same_however_bnjax_is_installed(tmp_path, monkeypatch):
    """A checkout has no package metadata, `pip install -e .` and a wheel have "0.1.0": the
    same sources give the same version, and a run recorded by an installed package (which
    used to record its metadata version) is reused by a checkout and the other way round."""
    import importlib.metadata as md

    checkout = runlog.code_version()
    monkeypatch.setattr(md, "version", lambda name: "0.1.0")  # what an installed bnjax answers
    assert runlog.code_version() == checkout
    monkeypatch.undo()
    run = _train(tmp_path, {"a": _cfg()})["a"][0]
    meta = runlog.read_json(f"{run.workdir}/meta.json")
    meta["code_version"] = {**meta["code_version"], "package": "0.1.0"}
    runlog.write_json(f"{run.workdir}/meta.json", meta)
    again = _train(tmp_path, {"a": _cfg()}, stale="refuse")["a"][0]  # not stale, not retrained
    assert again.summary == run.summary and _stamp(again) == _stamp(run)
    assert not runlog.same_code({"package": "source", "sources": "0123456789abcdef"}, checkout)
    assert not runlog.same_code(None, checkout) and runlog.same_code(dict(checkout), checkout)


def test_code_version_covers_what_decides_numbers_only(tmp_path):
    """`runlog.code_version` hashes the modules that decide a run's numbers: a copy of the
    package with an edited norm.py gives another version (the pool retrains), an edited
    stats.py, report.py or plots.py the same one (the pool keeps its runs); every module
    of the package is classified."""
    copy = tmp_path / "bnjax"
    shutil.copytree(os.path.join(ROOT, "bnjax"), copy, ignore=shutil.ignore_patterns("__pycache__"))
    modules = {p[:-3] for p in os.listdir(copy) if p.endswith(".py")}
    assert modules == set(runlog.NUMBER_MODULES) | set(runlog.OTHER_MODULES)
    assert not set(runlog.NUMBER_MODULES) & set(runlog.OTHER_MODULES)

    def version_of(directory):
        spec = importlib.util.spec_from_file_location("runlog_copy", directory / "runlog.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.code_version()["sources"]

    now = runlog.code_version()["sources"]
    assert version_of(copy) == now
    for name in ("stats.py", "report.py", "plots.py", "verdicts.py", "experiment.py"):
        with open(copy / name, "a") as f:
            f.write("\n# an edit to the analysis\n")
    assert version_of(copy) == now
    with open(copy / "norm.py", "a") as f:
        f.write("\n# an edit\n")
    assert version_of(copy) != now


def test_differences_names_each_kind_of_change_and_nothing_else(tmp_path):
    """`pool.differences` on a run directory written by hand: each kind of difference is
    named (with the old and new value where there is one), and a match is an empty list."""
    import dataclasses
    import json

    from bnjax import config as config_lib

    rdir = tmp_path / "run"
    assert pool.differences(str(rdir), _cfg(), {}, {}) is None  # nothing stored
    rdir.mkdir()
    cfg, fp, code = _cfg(), {"source": "digits", "checksum": "abc"}, {"package": "source", "sources": "s1"}
    versions = {lib: "1.0" for lib in runlog.NUMBER_LIBRARIES}
    now = {"versions": versions, "backend": "cpu"}
    split = {"val_indices_checksum": "v1"}
    (rdir / "config.json").write_text(json.dumps(config_lib.to_dict(cfg)))
    meta = {"data_fingerprint": fp, "code_version": code, "versions": versions, "backend": "cpu", "split": split}
    (rdir / "meta.json").write_text(json.dumps(meta))
    assert pool.differences(str(rdir), cfg, fp, code, now, split) == []
    assert pool.differences(str(rdir), dataclasses.replace(cfg, steps=11), fp, code) == ["config (steps)"]
    assert pool.differences(str(rdir), cfg, {**fp, "checksum": "x"}, code) == ["data fingerprint"]
    assert pool.differences(str(rdir), cfg, fp, {**code, "sources": "s2"}) == \
        ["code version (sources of bnjax's number modules s1 -> s2)"]
    assert pool.differences(str(rdir), cfg, fp, {**code, "package": "0.1.0"}) == []  # how it is installed: no
    lib = runlog.NUMBER_LIBRARIES[0]
    assert pool.differences(str(rdir), cfg, fp, code, {"versions": {**versions, lib: "2.0"}, "backend": "cpu"}) == \
        [f"{lib} 1.0 -> 2.0"]
    assert pool.differences(str(rdir), cfg, fp, code, {**now, "backend": "gpu"}) == ["backend cpu -> gpu"]
    assert pool.differences(str(rdir), cfg, fp, code, now, {"val_indices_checksum": "v2"}) == \
        ["validation split (its indices differ)"]
    (rdir / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "data_fingerprint"}))
    assert pool.differences(str(rdir), cfg, fp, code) == ["data fingerprint (not recorded)"]
    (rdir / "config.json").write_text("{not json")
    assert pool.differences(str(rdir), cfg, fp, code)[0].startswith("config (unreadable: ")
