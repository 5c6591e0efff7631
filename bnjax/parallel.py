"""Data parallelism with JAX's own runtime: a `jax.sharding.Mesh` over the devices, the
batch sharded along it, parameters and BN statistics replicated, the same pure train
step compiled once (XLA's SPMD partitioner inserts the collectives).

BN and data parallelism: inside the jitted step the batch axis is one *global* axis, so
`bnjax.BatchNorm`'s reductions over it are global (XLA all-reduces the sums), not
per-device statistics that would silently turn BN into ghost BN (flax#319, #902). Under
``shard_map``/``pmap`` with an ``axis_name``, `bnjax.norm.batch_moments` reduces sums of
x, (x - mean)^2 and counts across devices, never means of means, so devices holding
different numbers of valid examples (masked padding) still give exact global statistics
(flax#2417). Ghost BN across devices is ``norm="ghost"`` with ``virtual_batch_size`` =
per-device batch: the virtual batches are then exactly the devices' shards.

Multi-host: `initialize` wraps ``jax.distributed.initialize``; every process holds the
(small) data set, the sampler draws the same global batches in each process, and each
device computes on its shard. Only process 0 writes (see `is_writer`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bnjax import prng

AXIS = "data"


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Start JAX's distributed runtime (arguments, or the environment variables that
    ``jax.distributed.initialize`` reads when they are None). Call before any other JAX use."""
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def is_writer() -> bool:
    """True in the one process that writes checkpoints, metrics and reports."""
    return jax.process_index() == 0


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over the first ``num_devices`` devices (all by default).

    Raises:
      ValueError: if more devices are asked for than exist.
    """
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices, {len(devices)} available ({jax.default_backend()})")
    return Mesh(np.asarray(devices[:n]), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Shard the leading (batch) axis over the mesh."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array of ``tree`` on all devices of the mesh (parameters, statistics,
    optimiser state, and the device-resident data set)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return prng.over_key_data(lambda t: jax.tree.map(
        lambda a: jax.make_array_from_callback(np.shape(a), sharding, lambda idx: np.asarray(a)[idx]), t), tree)


def broadcast_from_writer(tree: Any) -> Any:
    """Process 0's values of ``tree`` on every process (a resumed state: only process 0
    read the checkpoints)."""
    from jax.experimental import multihost_utils

    return prng.over_key_data(multihost_utils.broadcast_one_to_all, tree)


def check_batch(batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly over the devices."""
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"data.batch_size {batch_size} does not split over {n} devices; use a multiple of {n}")
