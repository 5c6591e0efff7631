"""TensorBoard event files: a view of a run's ``metrics.jsonl`` that ``tensorboard
--logdir`` reads, written as each evaluation record is appended (`bnjax.runlog`).

Writer: tensorboardX's protocol buffers and CRC (``tensorboardX.proto``,
``tensorboardX.record_writer.masked_crc32c``; a 100 KB wheel on top of protobuf, which
orbax and tfds already need; no TensorFlow), framed here as TFRecords appended to one
file per run, ``events.out.tfevents.bnjax``: a record is ``len (u64) | masked_crc(len)
(u32) | Event | masked_crc(Event) (u32)``, little-endian. Appending (rather than a
``SummaryWriter`` held open, which starts a new time-stamped file per process) keeps one
file per run across resumes and needs no open writer in the training loop: the values are
the host floats of the record just written, so writing never touches the device. A resume
rewrites the file from the kept records (`rewrite`), as it rewrites ``metrics.jsonl``.

Tags (one chart each; runs are lines): ``train/loss``, ``train/accuracy`` (averaged since
the previous evaluation), ``val/loss``, ``val/accuracy``, ``test/loss``,
``test/accuracy`` (where measured), ``optim/learning_rate`` (`learning_rates`), ``time/elapsed_s``, ``probes/<layer>/p<q>`` (Figure 1's percentiles of a
nonlinearity's input, where probed) and ``diverged_at``.

Where: the run directory itself, unless its ``tensorboard.json`` names another folder
(`point`): a suite writes each run into ``SECTION/tensorboard/<arm>/seed_<k>`` so that
``tensorboard --logdir WORKDIR`` lists runs by experiment, arm and seed. TensorBoard
follows symbolic links and lists every folder that holds event files, so each run has
exactly one event file (a link, or a copy beside the run, would show it twice).
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
from collections.abc import Callable, Iterable, Mapping

from tensorboardX.proto import event_pb2, summary_pb2
from tensorboardX.record_writer import masked_crc32c

EVENT_FILE = "events.out.tfevents.bnjax"
POINTER = "tensorboard.json"
SPLITS = ("train", "val", "test")


def logdir_of(workdir: str) -> str:
    """Where the run in ``workdir`` writes its events: the folder its ``tensorboard.json``
    names (relative to the run directory), else the run directory."""
    path = os.path.join(workdir, POINTER)
    if not os.path.exists(path):
        return workdir
    with open(path) as f:
        return os.path.normpath(os.path.join(workdir, json.load(f)["logdir"]))


def view_dir(view: str, arm: str, seed: int) -> str:
    """The folder of a run in an experiment's view: ``VIEW/<arm>/seed_<seed>``."""
    return os.path.join(view, arm.replace(os.sep, "-"), f"seed_{seed}")


def point(workdir: str, logdir: str) -> None:
    """Make the run in ``workdir`` write its events into ``logdir`` (stored relative, so
    the results folder can move)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, POINTER), "w") as f:
        json.dump({"logdir": os.path.relpath(logdir, workdir)}, f)


def scalars(record: Mapping, learning_rate: float | None = None) -> dict[str, float]:
    """The tags and values of one ``metrics.jsonl`` record (see the module docstring)."""
    out = {}
    for split in SPLITS:
        for metric in ("loss", "accuracy"):
            if f"{split}_{metric}" in record:
                out[f"{split}/{metric}"] = float(record[f"{split}_{metric}"])
    if learning_rate is not None:
        out["optim/learning_rate"] = float(learning_rate)
    if "elapsed_s" in record:
        out["time/elapsed_s"] = float(record["elapsed_s"])
    for layer, values in (record.get("probes") or {}).items():
        for q, v in zip(record["probe_qs"], values, strict=True):
            out[f"probes/{layer}/p{q:g}"] = float(v)
    if record.get("diverged_at") is not None:
        out["diverged_at"] = float(record["diverged_at"])
    return out


def learning_rates(workdir: str) -> Callable[[int], float | None]:
    """``step -> rate`` of the run in ``workdir``: its schedule (from ``config.json``) at
    the step before ``step`` (the rate of the last update before an evaluation, at
    ``lr_multiplier``; `bnjax.optim.make_schedule`), computed on the host CPU (no
    accelerator work); None without a config."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return lambda step: None
    import jax

    from bnjax import config as config_lib
    from bnjax.optim import make_schedule

    with open(path) as f:
        cfg = config_lib.from_dict(config_lib.TrainConfig, json.load(f))
    schedule = make_schedule(cfg.optim, cfg.steps)

    def rate(step: int) -> float:
        with jax.default_device(jax.devices("cpu")[0]):
            return float(schedule(max(step - 1, 0)))

    return rate


def _frame(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def _event(step: int, values: Mapping[str, float], wall_time: float) -> bytes:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v)
                                         for k, v in values.items() if not math.isnan(v)])
    return _frame(event_pb2.Event(wall_time=wall_time, step=step, summary=summary).SerializeToString())


def _header(wall_time: float) -> bytes:
    return _frame(event_pb2.Event(wall_time=wall_time, step=0, file_version="brain.Event:2").SerializeToString())


def append(workdir: str, record: Mapping) -> None:
    """Append one evaluation record of the run in ``workdir`` to its event file (created
    with TensorBoard's file-version header when absent)."""
    logdir = logdir_of(workdir)
    os.makedirs(logdir, exist_ok=True)
    path = os.path.join(logdir, EVENT_FILE)
    now = time.time()
    step = int(record["step"])
    data = _event(step, scalars(record, learning_rates(workdir)(step)), now)
    with open(path, "ab") as f:
        f.write((b"" if f.tell() else _header(now)) + data)


def rewrite(workdir: str, records: Iterable[Mapping], logdir: str | None = None) -> str:
    """Replace the event file of the run in ``workdir`` by one made from ``records`` (a
    resume's kept records), in ``logdir`` if given (a copy of a finished run for another
    experiment's view) else in `logdir_of`. Returns the file's path."""
    logdir = logdir or logdir_of(workdir)
    os.makedirs(logdir, exist_ok=True)
    path = os.path.join(logdir, EVENT_FILE)
    now = time.time()
    rate = learning_rates(workdir)
    parts = [_header(now)] + [_event(int(r["step"]), scalars(r, rate(int(r["step"]))), now) for r in records]
    tmp = os.path.join(logdir, ".events.bnjax.tmp")  # not a name TensorBoard reads
    with open(tmp, "wb") as f:
        f.write(b"".join(parts))
    os.replace(tmp, path)
    return path
