"""A protocol: the design of confirmatory runs, fixed from a pilot before they start, as data.

A protocol file (JSON, committed; e.g. ``experiments/protocols/mnist.json``, written by
``python -m experiments.protocol``) says which seeds the confirmatory runs use (fresh ones,
from ``first_seed``, past every pilot seed), how many per arm for each section and network
kind, and the primary accuracy metric of the comparisons. It also keeps the reasons: each
claim's pilot spread, rule, power at the smallest effect of interest and the seeds it needs
(read by people, not by the suite). ``reproduce --protocol FILE`` runs it; the report's header
says "Confirmatory" and names the file and the commit it was committed in, which must
precede the runs (a protocol that is not committed, or has changes, is refused).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping

from bnjax.config import ConfigError

METRICS = ("final_test_accuracy", "selected_test_accuracy")
METRIC_WORDS = {"final_test_accuracy": "final test accuracy",
                "selected_test_accuracy": "test accuracy at the validation-selected step"}
ARCHS = ("mlp", "convnet", "vgg")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The part of a protocol file the suite reads.

    Attributes:
      path: the file.
      first_seed: the confirmatory runs' first seed.
      metric: the primary accuracy metric of the comparisons (one of `METRICS`).
      seeds: section -> network kind (`ARCHS`) -> seeds per arm.
      arm_seeds: section -> arm -> seeds, for an arm whose claim alone needs more (a
        divergence count needs 6 seeds to decide; its section's other arms do not).
      sha256: the file's SHA-256 (what the report's header names beside the commit).
    """

    path: str
    first_seed: int
    metric: str
    seeds: Mapping[str, Mapping[str, int]]
    sha256: str
    arm_seeds: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)

    def seeds_for(self, section: str, arch: str, arm: str = "") -> int | None:
        """Seeds for ``section``'s arm ``arm`` of kind ``arch``: its own count if the
        protocol gives one, else its kind's; None when the protocol is silent (the suite's
        default then)."""
        return self.arm_seeds.get(section, {}).get(arm) or self.seeds.get(section, {}).get(arch)


def load(path: str) -> Protocol:
    """Read and check a protocol file.

    Raises:
      ConfigError: the file is missing, not JSON, or a field is missing or wrong (named).
    """
    if not os.path.exists(path):
        raise ConfigError("protocol", f"file not found: {path}")
    raw = open(path, "rb").read()
    try:
        d = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError("protocol", f"{path} is not JSON: {e}") from None
    for key in ("first_seed", "metric", "seeds"):
        if key not in d:
            raise ConfigError(f"protocol.{key}", f"missing in {path}")
    if not isinstance(d["first_seed"], int) or d["first_seed"] < 0:
        raise ConfigError("protocol.first_seed", f"must be an integer >= 0, got {d['first_seed']!r}")
    if d["metric"] not in METRICS:
        raise ConfigError("protocol.metric", f"must be one of {METRICS}, got {d['metric']!r}")
    for key in ("seeds", "arm_seeds"):
        for section, counts in d.get(key, {}).items():
            for name, n in counts.items():
                if key == "seeds" and name not in ARCHS:
                    raise ConfigError(f"protocol.seeds.{section}.{name}", f"unknown network kind; one of {ARCHS}")
                if not isinstance(n, int) or n < 2:
                    raise ConfigError(f"protocol.{key}.{section}.{name}", f"must be an integer >= 2, got {n!r}")
    return Protocol(path=path, first_seed=d["first_seed"], metric=d["metric"], seeds=d["seeds"],
                    sha256=hashlib.sha256(raw).hexdigest(), arm_seeds=d.get("arm_seeds", {}))


def commit_of(path: str) -> str:
    """The commit that last changed ``path``, which must be committed as it is now.

    Raises:
      ConfigError: the file is not tracked by git, or has uncommitted changes (a protocol
        must be committed before the runs it governs).
    """
    where = os.path.dirname(os.path.abspath(path))

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = git("log", "-1", "--format=%H", "--", os.path.abspath(path))
    if not commit:
        raise ConfigError("protocol", f"{path} is not committed: commit the protocol before the runs it governs")
    if git("status", "--porcelain", "--", os.path.abspath(path)):
        raise ConfigError("protocol", f"{path} has uncommitted changes: commit the protocol before the runs it "
                                      "governs")
    return commit
