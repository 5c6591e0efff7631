"""Training state and pure step functions.

`TrainState` is the whole state of a run, one pytree: parameters, BN statistics, the
optimiser state, the step, and the keys of the data / augmentation / dropout streams.
Inside a step, keys are derived with ``fold_in(key, step)`` (and the data order with
``fold_in(data_key, epoch)``), so a run resumed at step s draws exactly what the
uninterrupted run drew.

`train_step` applies the model with ``batch_stats`` mutable and returns the new
statistics in the new state; `eval_step` uses the running statistics with nothing
mutable. `train_chunk` runs several steps in one `lax.scan`, sampling batches on the
device. `bnjax.programs` jits `train_chunk` once (``compiled_chunk``, and its K-run
form); the driver `bnjax.loop.fit` calls it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import struct

from bnjax import augment as aug
from bnjax import data as data_lib
from bnjax.norm import MOMENTS_COLLECTION

Array = jax.Array
DATA, AUGMENT, DROPOUT = 0, 1, 2  # rows of TrainState.keys


class TrainState(struct.PyTreeNode):
    """Everything a run needs to continue; see module docstring."""

    step: Array
    params: Any
    batch_stats: Any
    opt_state: Any
    keys: Array  # (3, 2) uint32: data, augmentation, dropout streams

    @property
    def variables(self) -> dict:
        """The model variables for `flax.linen.Module.apply`."""
        return {"params": self.params, **({"batch_stats": self.batch_stats} if self.batch_stats else {})}


def create_state(model: nn.Module, tx: optax.GradientTransformation, sample_x: Array, seed: int) -> TrainState:
    """Initialise a run from its seed: one root key split into init, data, augmentation
    and dropout streams.

    Args:
      model: the Flax module.
      tx: the optimiser.
      sample_x: a batch with the input shape (its values are not used beyond init).
      seed: the run's seed.
    """
    root = jax.random.key(seed)  # a typed key (threefry2x32: the same bits as the legacy PRNGKey(seed))
    k_init, k_data, k_aug, k_drop = jax.random.split(root, 4)
    variables = model.init({"params": k_init}, sample_x, False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        keys=jnp.stack([k_data, k_aug, k_drop]),
    )


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def train_step(
    state: TrainState,
    x: Array,
    y: Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    pipeline: aug.Pipeline = (),
) -> tuple[TrainState, dict[str, Array]]:
    """One optimiser step on a batch (pure).

    Args:
      state: current state.
      x, y: the batch's images and integer labels.
      model, tx: the network and optimiser (static).
      pipeline: on-device augmentation applied to ``x`` (training only).
    Returns:
      ``(new_state, {"loss", "accuracy"})`` of the batch before the update.
    """
    x = aug.augment(jax.random.fold_in(state.keys[AUGMENT], state.step), x, pipeline)
    dropout_key = jax.random.fold_in(state.keys[DROPOUT], state.step)

    def loss_fn(params):
        variables = {"params": params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
        logits, updates = model.apply(variables, x, True, rngs={"dropout": dropout_key}, mutable=["batch_stats"])
        return cross_entropy(logits, y), (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    upd, opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, upd),
        batch_stats=updates.get("batch_stats", state.batch_stats),
        opt_state=opt_state,
    )
    acc = (logits.argmax(-1) == y).mean()
    return new, {"loss": loss, "accuracy": acc}


def train_chunk(
    state: TrainState,
    train_x: Array,
    train_y: Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    pipeline: aug.Pipeline,
    batch_size: int,
    n_steps: int,
    sharding: Any = None,
) -> tuple[TrainState, dict[str, Array]]:
    """``n_steps`` train steps in one `lax.scan`, batches drawn on the device.

    With ``sharding`` (a `jax.sharding.NamedSharding` of the batch axis, see
    `bnjax.parallel`), each batch is constrained to it, so XLA partitions the step data
    parallel while BN's statistics stay those of the global batch.

    The batch of step s is row ``s mod S`` of `bnjax.data.epoch_batches` for epoch
    ``s div S`` (S = steps per epoch), so the data order depends only on the data key
    and the step: chunking and resuming do not change it.

    Returns:
      The new state and per-step metrics stacked along a leading axis of ``n_steps``.
    """
    orders = chunk_orders(state.keys[DATA], state.step, train_x.shape[0], batch_size, n_steps)

    def body(st, t):
        xb, yb = chunk_batch(train_x, train_y, orders, t, sharding)
        return train_step(st, xb, yb, model=model, tx=tx, pipeline=pipeline)

    return jax.lax.scan(body, state, jnp.arange(n_steps))


def chunk_orders(data_key: Array, step: Array, n: int, batch_size: int, n_steps: int) -> tuple[Array, Array]:
    """The batch indices of every epoch a chunk of ``n_steps`` starting at ``step`` touches,
    ``(epochs * S, batch_size)``, and the row of the chunk's first step (S = n // batch_size).

    Computed up front: no cond inside the loop, whose predicate would be batched under vmap
    (many runs) and then evaluate a permutation at every step. A chunk starting at offset o
    touches epochs first .. first + (o + n_steps - 1) // S, at most ``most`` of them; the last
    of those is computed only when the chunk reaches it (a permutation of 60,000 costs ~10 ms
    on CPU)."""
    spe = n // batch_size
    most = (n_steps + spe - 2) // spe + 1
    first, offset = step // spe, step % spe
    order = lambda e: data_lib.epoch_batches(data_key, first + e, n, batch_size)  # noqa: E731
    last = jax.lax.cond(offset + n_steps - 1 >= (most - 1) * spe, lambda: order(most - 1),
                        lambda: jnp.zeros((spe, batch_size), jnp.int32))
    idx = jnp.concatenate([*jax.vmap(order)(jnp.arange(most - 1)), last]).reshape(most * spe, batch_size)
    return idx, offset


def chunk_batch(train_x: Array, train_y: Array, orders: tuple[Array, Array], t: Array,
                sharding: Any = None) -> tuple[Array, Array]:
    """Step ``t`` of a chunk: its batch, gathered on the device (see `chunk_orders`)."""
    idx, offset = orders
    b = jax.lax.dynamic_index_in_dim(idx, offset + t, keepdims=False)
    n = train_x.shape[0]
    # Gathering rows of the flattened array is one contiguous copy per example (2x faster
    # on CPU than gathering (H, W, C) slices); the reshapes are free.
    xb = train_x.reshape(n, -1)[b].reshape((b.shape[0], *train_x.shape[1:]))
    yb = train_y[b]
    if sharding is not None:
        xb = jax.lax.with_sharding_constraint(xb, sharding)
        yb = jax.lax.with_sharding_constraint(yb, sharding)
    return xb, yb


def eval_step(variables: dict, x: Array, y: Array, mask: Array, *, model: nn.Module) -> dict[str, Array]:
    """Sums over a (padded) evaluation batch with running statistics, nothing mutable.

    Returns:
      ``{"loss": sum of losses, "correct": number correct, "count": examples}`` over the
      entries where ``mask`` is True.
    """
    logits = model.apply(variables, x, False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    w = mask.astype(jnp.float32)
    return {"loss": (losses * w).sum(), "correct": ((logits.argmax(-1) == y) * w).sum(), "count": w.sum()}


def moments_step(variables: dict, x: Array, *, model: nn.Module) -> Any:
    """Each BN layer's batch moments on ``x`` with frozen weights: the input of
    Algorithm 2 (`bnjax.norm.population_statistics`). Training-mode BN; bnjax models
    apply dropout only after the last normaliser, so it does not touch the moments."""
    _, coll = model.apply(variables, x, True, mutable=["batch_stats", MOMENTS_COLLECTION],
                          rngs={"dropout": jax.random.key(0)})
    return coll[MOMENTS_COLLECTION]
