"""A persistent XLA compilation cache shared by runs, processes and invocations.

JAX can keep every compiled executable on disk (``jax_compilation_cache_dir``) keyed by
a hash of its HLO, compile options, XLA flags, platform, device kind and jaxlib version
(jax/_src/cache_key.py), so a later process that traces and lowers the same program
loads it instead of compiling it again. bnjax turns it on in every entry point, with:

* every executable written, however quick its compile (JAX's default skips those under
  one second, which are most of ours on a CPU);
* `DirectoryStore` as the store: each entry written to a temporary file and renamed into
  place (atomic on POSIX), so two processes that compile the same program at once each
  leave a whole entry and a reader never sees half of one; reads take no lock; the
  least-recently-used entries (file modification time, touched on every read) are
  evicted past a size bound, checked when the store opens and whenever this process's
  writes could have crossed it. JAX's own bounded store (``jax_compilation_cache_max_size``)
  rescans and reads a timestamp file per entry under a directory lock on *every* write:
  0.2 s per write at 2,700 entries on 2 CPU cores (measured), minutes over a test run.

A cached executable computes bitwise what a fresh compile does (tests/test_xla_cache.py);
on a CPU, the thread count (a process's cores) decides the last bits of a run at run
time, not in the executable, so one cache serves every core layout. The processor does
not: XLA compiles for the host's instruction set, and JAX's cache key does not name it
(the same ConvNet run compiled on two hosts gave different bits), so entries live in a
subdirectory per host processor (`host_signature`): a cache shared over a network
filesystem never hands one machine's code to another.

Library functions take their paths as arguments; the entry points resolve the user's
choice (`resolve`: flag, then ``$BNJAX_XLA_CACHE``, then ``$XDG_CACHE_HOME``, then
``~/.cache``).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import platform
import tempfile
from collections.abc import Mapping

import filelock
import jax
from jax._src import compilation_cache as _jax_cache  # the store is installed where JAX looks for it
from jax._src.compilation_cache_interface import CacheInterface

#: The environment variable that names the cache directory ("off": no cache).
ENV = "BNJAX_XLA_CACHE"
#: The cache's size bound (bytes). The quick suite writes 6.5 MB on a CPU.
DEFAULT_MAX_BYTES = 2 * 1024**3
OFF = "off"
SUFFIX = "-cache"  # JAX's entry suffix, so a directory JAX wrote is read as is


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


def host_signature() -> str:
    """A short hash of this host's processor: architecture, model and instruction-set
    flags (from /proc/cpuinfo where there is one)."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":")[0].strip()
                if key in ("model name", "flags", "Features", "CPU part"):
                    text += line
                if key == "flags" or key == "Features":
                    break  # the first processor describes them all
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def store_dir(path: str) -> str:
    """Where the entries of the cache ``path`` live for this host."""
    return os.path.join(path, f"host-{host_signature()}")


class DirectoryStore(CacheInterface):
    """Cache entries as files ``<key>-cache`` in one directory, shared by processes.

    Args:
      path: the directory (created if missing).
      max_bytes: the size bound: past it, the least recently read or written entries go.
    """

    def __init__(self, path: str, *, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._path = pathlib.Path(path)
        self._path.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = filelock.FileLock(str(self._path / ".evict.lock"))
        self._size = self.evict()  # bytes on disk, as far as this process knows

    def _file(self, key: str) -> pathlib.Path:
        if not key:
            raise ValueError("key cannot be empty")
        return self._path / f"{key}{SUFFIX}"

    def get(self, key: str) -> bytes | None:
        """The entry's bytes (and its time of last use set to now), or None."""
        f = self._file(key)
        try:
            value = f.read_bytes()
        except FileNotFoundError:
            return None
        try:
            os.utime(f)  # least-recently-used: reads count as use
        except FileNotFoundError:
            pass  # evicted by another process meanwhile: the bytes read are whole
        return value

    def put(self, key: str, value: bytes) -> None:
        """Write the entry unless it exists: a temporary file renamed into place."""
        f = self._file(key)
        if f.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self._path, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(value)
            os.replace(tmp, f)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self._size += len(value)
        if self._size > self.max_bytes:
            self._size = self.evict()

    def evict(self) -> int:
        """Remove the least recently used entries until the directory is within the
        bound (one process at a time); returns the bytes left."""
        with self._lock:
            entries = []
            for e in os.scandir(self._path):
                if e.name.endswith(SUFFIX):
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue
                    entries.append((st.st_mtime_ns, st.st_size, e.path))
            total = sum(size for _, size, _ in entries)
            for _, size, p in sorted(entries):
                if total <= self.max_bytes:
                    break
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
                total -= size
            return total


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
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    store = None
    if path is not None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise OSError(f"XLA cache directory {path!r} cannot be created: {e.strerror}") from e
        if not os.access(path, os.W_OK):
            raise PermissionError(f"XLA cache directory {path!r} is not writable (choose another with --xla-cache "
                                  f"DIR or ${ENV}, or turn it off with --no-xla-cache)")
        store = DirectoryStore(store_dir(path), max_bytes=max_bytes)
    jax.config.update("jax_enable_compilation_cache", path is not None)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    _jax_cache.reset_cache()
    if store is not None:
        with _jax_cache._cache_initialized_mutex:  # what JAX's lazy initialisation would set, with our store
            _jax_cache._cache, _jax_cache._cache_initialized = store, True
    return path


def size_bytes(path: str) -> int:
    """The bytes the cache's entries take on disk (every host's)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files
               if f.endswith(SUFFIX))
