"""A persistent XLA compilation cache shared by runs, processes and invocations.

JAX can keep every compiled executable on disk (``jax_compilation_cache_dir``) keyed by
a hash of its HLO, compile options, XLA flags, platform, device kind and jaxlib version
(jax/_src/cache_key.py), so a later process that traces and lowers the same program
loads it instead of compiling it again. bnjax turns it on in every entry point, with:

* every executable written, however quick its compile (JAX's default skips those under
  one second, which are most of ours on a CPU);
* a bounded size: least-recently-used entries are evicted past ``max_bytes``. The bound
  also makes JAX guard every read and write with a file lock (``filelock``), so two
  processes that compile the same program at once cannot interleave writing one entry,
  and a reader never sees half of one.

A cached executable computes bitwise what a fresh compile does (tests/test_xla_cache.py);
on a CPU, the thread count (a process's cores) decides the last bits of a run at run
time, not in the executable, so one cache serves every core layout.

Library functions take their paths as arguments; the entry points resolve the user's
choice (`resolve`: flag, then ``$BNJAX_XLA_CACHE``, then ``$XDG_CACHE_HOME``, then
``~/.cache``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax

#: The environment variable that names the cache directory ("off": no cache).
ENV = "BNJAX_XLA_CACHE"
#: The cache's size bound (bytes). The full MNIST suite writes about 60 MB on a CPU.
DEFAULT_MAX_BYTES = 2 * 1024**3
OFF = "off"


def resolve(flag: str | None, environ: Mapping[str, str]) -> str | None:
    """The cache directory a user asked for, or None for no cache.

    Args:
      flag: the ``--xla-cache`` value (a directory or "off"); None when not given.
      environ: the process environment (``os.environ``): ``$BNJAX_XLA_CACHE`` (a directory
        or "off"), else ``$XDG_CACHE_HOME/bnjax/xla``, else ``$HOME/.cache/bnjax/xla``.
    Returns:
      An absolute directory, or None when the choice is "off".
    """
    choice = flag if flag is not None else environ.get(ENV) or None
    if choice is None:
        base = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache")
        choice = os.path.join(base, "bnjax", "xla")
    if choice == OFF:
        return None
    return os.path.abspath(os.path.expanduser(choice))


def enable(path: str | None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str | None:
    """Point this process's JAX at the cache in ``path`` (None: turn the cache off).

    Takes effect for every program compiled after it, also when JAX already compiled
    something with another setting.

    Args:
      path: the cache directory (created if missing), or None.
      max_bytes: the size bound; least-recently-used entries are evicted past it.
    Returns:
      ``path``.
    Raises:
      ValueError: ``max_bytes`` is not positive.
      OSError: the directory cannot be created or written (named in the message).
    """
    from jax.experimental.compilation_cache import compilation_cache as cc

    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if path is not None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise OSError(f"XLA cache directory {path!r} cannot be created: {e.strerror}") from e
        if not os.access(path, os.W_OK):
            raise PermissionError(f"XLA cache directory {path!r} is not writable (choose another with --xla-cache "
                                  f"DIR or ${ENV}, or turn it off with --no-xla-cache)")
    jax.config.update("jax_enable_compilation_cache", path is not None)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_compilation_cache_max_size", max_bytes)
    cc.reset_cache()  # the next compile opens the cache with these settings
    return path


def size_bytes(path: str) -> int:
    """The bytes the cache's entries take on disk."""
    return sum(e.stat().st_size for e in os.scandir(path) if e.is_file()) if os.path.isdir(path) else 0
