"""The suite's runs as jobs of submitit (``reproduce --executor``, bnjax/jobs.py): core sets
split disjointly; flags that name their problem; a job trains only what nobody holds and
never waits; the invoking process collects the jobs' ends section by section, replaces a
job that died and trains what is left; and, through submitit's local executor (the same
pickling and job files as on SLURM, no mock), a suite trained by one-core jobs equals the
one-process suite on one core, bitwise, with a SIGKILLed job's run resumed by another."""

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import submitit  # noqa: F401  its loggers bind sys.stdout/stderr at import: the real ones, not a test's capture

from bnjax import jobs, pool, runlog
from bnjax.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig
from bnjax.progress import SuiteProgress
from experiments import _executor, reproduce

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWO_CORES = pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                               reason="two local jobs need two cores and CPU affinity (Linux)")


def test_core_sets_split_the_cores_disjointly(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 0, 1, 2, 3}, raising=False)
    assert jobs.core_sets(2) == [[0, 1, 2], [3, 4]]
    assert jobs.core_sets(5) == [[0], [1], [2], [3], [4]]
    assert jobs.core_sets(1) == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="may run on 5 core"):
        jobs.core_sets(6)
    with pytest.raises(ValueError, match=">= 1"):
        jobs.core_sets(0)


def test_executor_specs_and_configs_name_their_problem():
    assert jobs.parse_spec("local:2", 4) == ("local", 2) and jobs.parse_spec("local", 4) == ("local", 4)
    assert jobs.parse_spec("slurm:16", 4) == ("slurm", 16) and jobs.parse_spec("slurm", 4) == ("slurm", 8)
    for bad in ("gpu:2", "local:0", "local:x", "slurm:-1", "local:1.5"):
        with pytest.raises(ConfigError, match="executor"):
            jobs.parse_spec(bad, 4)
    with pytest.raises(ConfigError, match="slurm.partition.*is for --executor slurm"):
        jobs.ExecutorConfig(engine="local", jobs=2, partition="gpu")
    with pytest.raises(ConfigError, match="slurm.time_min.*>= 1"):
        jobs.ExecutorConfig(engine="slurm", jobs=2, time_min=0)
    with pytest.raises(ConfigError, match="executor.retries"):
        jobs.ExecutorConfig(retries=-1)


@pytest.mark.parametrize("flags, named", [
    (["--executor", "gpu:2"], "--executor: 'gpu:2'"),
    (["--workers", "2", "--executor", "local:2"], "give one of them"),
    (["--slurm.partition", "gpu"], "--slurm.partition is for --executor slurm"),
    (["--executor", "local:1", "--slurm.time_min", "5"], "--slurm.time_min: is for --executor slurm"),
    (["--executor", "local:999"], "a local job needs a core of its own"),
    (["--executor", "slurm", "--slurm.gpus_per_job", "-1"], "--slurm.gpus_per_job: must be >= 0"),
    (["--executor", "slurm:4"], "--executor: slurm: no sbatch or srun on this machine's PATH"),
])
def test_bad_executor_flags_exit_2_naming_the_flag(flags, named, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no SLURM commands here, even on a cluster's login node
    with pytest.raises(SystemExit) as e:  # each refused before this process is pinned or anything trains
        reproduce.main(["--quick", "--workdir", str(tmp_path), *flags])
    assert e.value.code == 2 and named in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # nothing written: no runs, no job folder


def test_slurm_without_sbatch_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(ConfigError, match="no sbatch or srun on this machine's PATH"):
        jobs.make_executor(jobs.ExecutorConfig(engine="slurm", jobs=2, folder=str(tmp_path / "jobs")))


def test_slurm_jobs_ask_for_what_the_flags_say(tmp_path, monkeypatch):
    """submitit's own sbatch file for our parameters (it is written, not submitted: no
    SLURM here); the flags' names must reach SLURM's options unchanged in meaning."""
    for command in ("sbatch", "srun"):
        (tmp_path / command).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    ex = jobs.make_executor(jobs.ExecutorConfig(engine="slurm", jobs=4, folder=str(tmp_path / "jobs"),
                                                partition="gpu", account="lab", gpus_per_job=1, cpus_per_job=8,
                                                mem_gb=32.0, time_min=90))
    text = ex._make_submission_file_text("python -m x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32768M", "#SBATCH --time=90"):
        assert line in text, text
    default = jobs.make_executor(jobs.ExecutorConfig(engine="slurm", jobs=4, folder=str(tmp_path / "jobs2")))
    text = default._make_submission_file_text("python -m x", "uid")
    assert "#SBATCH --time=60" in text and "--partition" not in text and "--gpus" not in text


def test_a_job_argv_drops_the_executor_flags_only():
    argv = ["--data", "mnist", "--workers", "2", "--seeds", "1", "--executor=local:3", "--slurm.partition", "p",
            "--executor.retries", "2", "--slurm.time_min=5"]
    assert _executor.job_argv(argv) == ["--data", "mnist", "--seeds", "1", "--quiet"]
    assert _executor.job_argv(["--quiet", "--only", "depth"]) == ["--quiet", "--only", "depth"]


class _Job:
    """A job handle with submitit's shape whose end the test decides (for the order of
    `jobs.Slots`; the engine itself is exercised by the end-to-end tests below)."""

    def __init__(self, log, name, slot, outcome):
        self.name, self.slot, self.outcome, self.job_id = name, slot, outcome, f"{name}/{slot}/{len(log)}"
        self.ended = False
        log.append(self)

    def done(self):
        return self.ended

    def result(self):
        if self.outcome == "died":
            raise RuntimeError("Job has not produced any output (state: INTERRUPTED)")
        return {"trained": 1, "seconds": 1.0, "time_s": {}, "programs": {}}

    def cancel(self, check=True):
        self.ended = True


def test_slots_run_section_after_section_and_replace_a_dead_job(monkeypatch):
    monkeypatch.setattr(jobs, "POLL_S", 0.0)
    log, deaths = [], {("a", 1): 1, ("b", 0): 2}  # (section, slot) -> jobs that die there

    def submit(name, slot):
        left = deaths.get((name, slot), 0)
        deaths[(name, slot)] = left - 1
        return _Job(log, name, slot, "died" if left > 0 else "ok")

    warned = []
    slots = jobs.Slots(submit, ["a", "b"], 2, retries=1, warn=warned.append)
    assert [(j.name, j.slot) for j in log] == [("a", 0), ("a", 1)]  # each slot starts its first section
    log[0].ended = log[1].ended = True  # slot 0 ends a (its job for b starts); slot 1's job dies on a
    ends = []

    def end_all(name, slot):
        ends.append((name, slot))
        for j in log:
            j.ended = True  # every job started so far ends at the next look

    slots.wait_for("a", end_all)
    assert ("a", 0) in ends and ("a", 1) in ends
    assert slots.summaries[1]["sections"]["a"]["attempts"] == 2  # replaced once, then done
    slots.wait_for("b", end_all)
    # (b, 0) died twice: the retry died too, so the slot gives up on b and the caller trains what it left
    assert slots.summaries[0]["sections"]["b"] == {"trained": 0, "seconds": 0.0, "time_s": {}, "programs": {},
                                                   "failed": True, "attempts": 2}
    assert [(f["section"], f["slot"], f["attempt"]) for f in slots.failed] == [("a", 1, 0), ("b", 0, 0), ("b", 0, 1)]
    assert len(warned) == 3 and "this process trains the runs it left" in warned[-1]
    assert [(j.name, j.slot) for j in log] == [("a", 0), ("a", 1), ("b", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert not slots.running


class _Submitted:
    """What submitit's local executor returns, as far as `jobs.LocalJob` uses it; its own
    ``result()`` stands for submitit's (which waits 15 s for a missing result file)."""

    job_id, state = "7", "INTERRUPTED"

    def __init__(self, result_pickle, done=True):
        self.paths, self._done, self.cancelled = type("Paths", (), {"result_pickle": result_pickle})(), done, None

    def done(self):
        return self._done

    def result(self):
        return "submitit's result"

    def cancel(self, check=True):
        self.cancelled = check


def test_a_local_job_that_ended_without_its_result_file_is_dead_at_once(tmp_path):
    from submitit.core.utils import UncompletedJobError

    dead = jobs.LocalJob(_Submitted(tmp_path / "none_result.pkl"))
    with pytest.raises(UncompletedJobError, match="job 7 ended without writing its result .state: INTERRUPTED"):
        dead.result()
    assert dead.done() and dead.job_id == "7"
    (tmp_path / "ok_result.pkl").write_bytes(b"")
    assert jobs.LocalJob(_Submitted(tmp_path / "ok_result.pkl")).result() == "submitit's result"
    running = jobs.LocalJob(_Submitted(tmp_path / "none_result.pkl", done=False))
    assert running.result() == "submitit's result" and not running.done()  # not ended: submitit's own answer
    running.cancel(check=False)
    assert running.job.cancelled is False

    class Executor:
        def submit(self, fn, *args):
            return _Submitted(tmp_path / f"{fn(*args)}_result.pkl")

    assert isinstance(jobs.submit(Executor(), "local", str, "ok"), jobs.LocalJob)
    assert isinstance(jobs.submit(Executor(), "slurm", str, "ok"), _Submitted)  # a cluster's files may come late


def _cfg() -> TrainConfig:
    return TrainConfig(model=ModelConfig(arch="mlp", hidden=(16,), norm="batch", activation="relu"),
                       optim=OptimConfig(name="momentum", learning_rate=0.05),
                       data=DataConfig(source="digits", batch_size=16), steps=10, eval_every=5)


def test_a_worker_leaves_held_runs_and_the_analyser_collects_them(tmp_path):
    p = str(tmp_path / "pool")
    held = pool.run_dir(p, dataclasses.replace(_cfg(), seed=1))
    os.makedirs(held)
    lock = runlog.RunLock(held)  # another process trains seed 1
    assert pool.train_unheld({"a": _cfg()}, [0, 1, 2], p) == 2  # returns at once: no waiting
    assert not os.path.exists(os.path.join(held, "results.json"))
    assert pool.train_unheld({"a": _cfg()}, [0, 1, 2], p) == 0  # finished ones are read back, not trained
    stamps = {s: os.path.getmtime(os.path.join(pool.run_dir(p, dataclasses.replace(_cfg(), seed=s)),
                                               "results.json")) for s in (0, 2)}
    lock.release()
    tracker = SuiteProgress(3, bar=False)
    runs = pool.run_arms({"a": _cfg()}, [0, 1, 2], p, progress=False, tracker=tracker)["a"]
    assert [r.seed for r in runs] == [0, 1, 2] and tracker.trained == 1  # only the held run trains here
    assert stamps == {s: os.path.getmtime(os.path.join(runs[s].workdir, "results.json")) for s in (0, 2)}


def test_the_eta_divides_by_the_processes_training_at_once(capsys):
    one, two = SuiteProgress(4, bar=False), SuiteProgress(4, bar=False, parallel=2)
    for t in (one, two):
        t.finished("a", "a seed 0", 10.0, trained=True)
        t.finished("b", "b seed 0", 0.0, trained=False)  # read back: no time, still done
    assert one.eta_s() == 20.0 and two.eta_s() == 10.0  # 10 s per trained run, 2 runs left


def test_a_worker_that_starts_halfway_trains_the_other_programs_first(tmp_path):
    p = str(tmp_path / "pool")
    arms = {"a": _cfg(), "b": dataclasses.replace(_cfg(), model=dataclasses.replace(_cfg().model, hidden=(8,)))}
    assert pool.train_unheld(arms, [0, 1], p, start=0.5) == 4
    done = {(arm, s): os.stat(os.path.join(pool.run_dir(p, dataclasses.replace(cfg, seed=s)), "results.json"))
            .st_mtime_ns for arm, cfg in arms.items() for s in (0, 1)}
    assert sorted(done, key=done.get) == [("b", 0), ("b", 1), ("a", 0), ("a", 1)]
    with pytest.raises(ValueError, match="start must be in"):
        pool.train_unheld(arms, [0], p, start=1.0)


def _quick(wd, *flags):
    # the reproduce smoke test's flags (tests/test_experiments.py): the programs come from the run's XLA cache
    return [sys.executable, "-m", "experiments.reproduce", "--quick", "--seeds", "1", "--steps", "3", "--quiet",
            "--workdir", wd, *flags]


def _body(path):
    """A report's sections (everything after its header: tables, verdicts, figures)."""
    text = open(path).read()
    return text[text.index("\n## "):]


def _numbers(path):
    """A run record's numbers, bitwise (floats compare as the JSON text they were written
    as), less its wall-clock times."""
    rows = [json.loads(line) for line in open(path)] if path.endswith(".jsonl") else [json.load(open(path))]
    return [{k: v for k, v in row.items() if k not in ("elapsed_s", "train_seconds")} for row in rows]


def _one_core():
    first = sorted(os.sched_getaffinity(0))[0]
    return lambda: os.sched_setaffinity(0, {first})


@pytest.mark.slow(programs="after smoke")
@TWO_CORES
def test_local_jobs_train_each_run_once_as_one_process_on_one_core_does(tmp_path, figures_not_drawn):
    """Four jobs (2 sections of 4 runs x 2 slots) of submitit's local executor on one pool: each run
    trained once, by a one-core process; the report's sections and every run's metrics
    equal, byte for byte, those of one process pinned to one core (the same core layout)."""
    wd, one = str(tmp_path / "jobs"), str(tmp_path / "one")
    proc = subprocess.run(_quick(wd, "--only", "normalization,depth", "--executor", "local:2"), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ref = subprocess.run(_quick(one, "--only", "normalization,depth"), cwd=ROOT, capture_output=True, text=True,
                         timeout=600, preexec_fn=_one_core())
    assert ref.returncode == 0, ref.stdout + ref.stderr
    suite = json.load(open(os.path.join(wd, "suite.json")))
    runs = sorted(os.path.relpath(r, wd) for r in glob.glob(os.path.join(wd, "runs", "*", "seed_0")))
    assert runs == sorted(os.path.relpath(r, one) for r in glob.glob(os.path.join(one, "runs", "*", "seed_0")))
    assert [w["cores"] for w in suite["workers"]] == [[c] for c in sorted(os.sched_getaffinity(0))[:2]]
    trained = {n: sum(w["sections"][n]["trained"] for w in suite["workers"]) for n in ("normalization", "depth")}
    assert sum(trained.values()) == len(runs) and trained["depth"] == 4, proc.stdout + proc.stderr  # by the jobs
    assert suite["executor"] == {"engine": "local", "jobs": 2, "failed": []}
    assert len(glob.glob(os.path.join(wd, "jobs", "*_result.pkl"))) == 4  # submitit's own job files
    for r in runs:  # one segment, one core; the same numbers as the one-process run
        meta = runlog.read_json(os.path.join(wd, r, "meta.json"))
        assert meta["cpu_cores"] == 1 and len(meta["segments"]) == 1 and not runlog.is_locked(os.path.join(wd, r))
        for f in ("metrics.jsonl", "results.json"):
            assert _numbers(os.path.join(wd, r, f)) == _numbers(os.path.join(one, r, f)), (r, f)
    assert _body(os.path.join(wd, "report.md")) == _body(os.path.join(one, "report.md"))
    report = open(os.path.join(wd, "report.md")).read()
    assert "1 core (" in report and "--executor local:2" in report and "| slot 1 (cores " in report
    assert "4 jobs (2 at once, submitit's local executor)" in report
    wall, parts = suite["seconds"]["depth"], sum(suite["time_s"]["depth"].values())
    assert abs(parts - wall) <= 0.5 + 0.02 * wall  # the breakdown adds up to the section's wall time
    for w in suite["workers"]:  # a slot's "other" column is the rest of its jobs' time, never negative
        for sec in w["sections"].values():
            assert 0 <= sec["seconds"] - sum(sec["time_s"].values()) <= 1.0 + 0.05 * sec["seconds"]
    assert proc.stdout.count(": trained in ") == len(runs)  # each run counted once, as the jobs ended
    reproduce.main(["--reanalyze", "--workdir", wd])  # in this process: no jobs started, the same report
    assert open(os.path.join(wd, "report.md")).read() == report
    assert len(glob.glob(os.path.join(wd, "jobs", "*_result.pkl"))) == 4


def _held_run_with_checkpoint(pool_dir):
    """(run directory, pid) of a run a live process trains that has finished saving a
    checkpoint (orbax renames ``STEP.orbax-checkpoint-tmp`` to ``STEP`` when it is whole)."""
    for lock in glob.glob(os.path.join(pool_dir, "*", "seed_*", ".lock")):
        rdir, ckpts = os.path.dirname(lock), os.path.join(os.path.dirname(lock), "checkpoints")
        saved = os.path.isdir(ckpts) and any(c.isdigit() for c in os.listdir(ckpts))
        if saved and runlog.is_locked(rdir) and not os.path.exists(os.path.join(rdir, "results.json")):
            holder = open(lock).read().split()
            if len(holder) > 1 and holder[0] == "pid":
                return rdir, int(holder[1])
    return None


@pytest.mark.slow(programs="after smoke")
def test_a_sigkilled_job_leaves_its_run_to_a_new_job_that_resumes_it(tmp_path):
    """Chunks of 3 steps (an evaluation every 3 steps), as in the reproduce smoke's depth
    section: the jobs load its programs from the run's XLA cache; 300 steps with a
    checkpoint every 30 leave a run about 1.5 s between its first checkpoint and its end.
    One slot (``local:1``: its job may run on every core, so it pins nothing and needs no
    second core): the job that dies is replaced by a new one in the same slot, as with
    several (the slots' order and core sets: the local jobs test above)."""
    wd = str(tmp_path / "kill")
    cmd = [sys.executable, "-m", "experiments.reproduce", "--quick", "--only", "depth", "--seeds", "1", "--steps",
           "300", "--eval_every", "3", "--checkpoint_every", "30", "--quiet", "--workdir", wd,
           "--executor", "local:1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, held = time.monotonic() + 400, None
    while held is None and proc.poll() is None and time.monotonic() < deadline:
        held = _held_run_with_checkpoint(os.path.join(wd, "runs"))
        time.sleep(0.02)
    assert held is not None, "no run was caught mid-run"
    rdir, pid = held
    os.kill(pid, signal.SIGKILL)  # the job's process: no cleanup runs
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    suite = json.load(open(os.path.join(wd, "suite.json")))
    assert [(f["section"], f["attempt"]) for f in suite["executor"]["failed"]] == [("depth", 0)]
    assert "a new job resumes its runs from their checkpoints" in out
    segments = runlog.read_json(os.path.join(rdir, "meta.json"))["segments"]
    assert len(segments) == 2 and segments[1]["from_step"] in range(30, 300, 30)  # from a checkpoint, not 0
    runs = glob.glob(os.path.join(wd, "runs", "*", "seed_0"))
    assert len(runs) == 4 and all(os.path.exists(os.path.join(r, "results.json")) for r in runs)
    for r in runs:  # every other run trained once, in one segment; nothing left locked
        assert len(runlog.read_json(os.path.join(r, "meta.json"))["segments"]) == (2 if r == rdir else 1)
        assert not runlog.is_locked(r)
    assert "1 ended without a result" in open(os.path.join(wd, "report.md")).read()
