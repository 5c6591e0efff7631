"""Typed PRNG keys (``jax.random.key``) through numpy-based I/O: orbax checkpoints and
multi-process transfers hold arrays of numbers, not keys, so keys travel as their uint32
key data (for threefry2x32 the same bytes a legacy ``PRNGKey`` array held) and are
wrapped again, with their implementation, on the other side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def is_key(a: Any) -> bool:
    """Whether ``a`` is a typed PRNG key array."""
    return isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)


def key_data(tree: Any) -> Any:
    """``tree`` with every typed key array replaced by its key data."""
    return jax.tree.map(lambda a: jax.random.key_data(a) if is_key(a) else a, tree)


def rewrap(tree: Any, like: Any) -> Any:
    """``tree`` (key data where ``like`` has typed keys) with those leaves wrapped as keys
    of ``like``'s implementation."""
    return jax.tree.map(lambda a, t: jax.random.wrap_key_data(a, impl=jax.random.key_impl(t)) if is_key(t) else a,
                        tree, like)


def over_key_data(fn: Callable[[Any], Any], tree: Any) -> Any:
    """``fn(tree)`` with typed keys passed as key data and wrapped again afterwards
    (``fn`` keeps the tree's structure)."""
    return rewrap(fn(key_data(tree)), tree)
