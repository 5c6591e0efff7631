"""Data sources, loaded whole into memory, normalised, and served from the device.

Sources (``DataConfig.source``):

* ``digits`` — scikit-learn's real 8x8 handwritten digits (ships with sklearn, offline):
  the first 1,437 images train, the last 360 test.
* ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` — through
  ``tfds.data_source`` where tfds has the set prepared (reading needs no TensorFlow);
  otherwise the first three from their canonical files (`bnjax.download`; docs/data.md).
* ``npz:PATH`` — a NumPy archive with x_train, y_train, x_test, y_test.
* ``idx:DIR`` — MNIST-format IDX files (``train-images-idx3-ubyte[.gz]``, ...), as in
  the original MNIST distribution or Debian's ``dataset-fashion-mnist`` package.

Images come out float32 NHWC, scaled to [0, 1] then standardised per channel with the
*training* mean and std. The epoch sampler (`epoch_batches`) is a pure function of
``(key, epoch)``: batches without replacement, reproducible, computed on the device.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import os
import sys
import zipfile
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from bnjax import download

TFDS_SOURCES = ("mnist", "fashion_mnist", "cifar10", "cifar100")
NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}


class DataError(ValueError):
    """The data set cannot be used as asked (a bad source, file, shape, label or split);
    the message names the problem. A user error, reported in one line by the scripts."""


@dataclass(frozen=True)
class Dataset:
    """In-memory train/test split. ``x_*``: float32 (N, H, W, C); ``y_*``: int32 (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    fingerprint: dict = field(default_factory=dict)  # see `fingerprint`
    x_val: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1, 1), np.float32))
    y_val: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    split: dict = field(default_factory=dict)  # see `validation_split`


def parse_source(source: str) -> tuple[str, str]:
    """Split ``"kind[:arg]"`` and check the kind. Returns ``(kind, arg)``.

    Raises:
      ValueError: unknown kind, or a path kind without a path.
    """
    kind, _, arg = source.partition(":")
    if kind in ("npz", "idx"):
        if not arg:
            raise DataError(f"data source {source!r} needs a path, e.g. '{kind}:/path/to/data'")
        return kind, arg
    if kind in ("digits",) + TFDS_SOURCES and not arg:
        return kind, ""
    raise DataError(
        f"unknown data source {source!r}; use digits, {', '.join(TFDS_SOURCES)}, npz:PATH or idx:DIR"
    )


def label(source: str) -> str:
    """A data source's name for titles: the data set, not a path (``npz:/x/mnist.npz`` ->
    ``mnist``, ``idx:/usr/share/datasets/fashion-mnist`` -> ``fashion-mnist``)."""
    kind, arg = parse_source(source)
    if not arg:
        return kind
    name = os.path.basename(os.path.normpath(arg))
    name = name[:-4] if name.endswith(".npz") else name
    # the copy built from JPEG files (shared/data/build_cifar10.py) is not CIFAR-10's pixels: say so everywhere
    return "CIFAR-10 (JPEG-decoded copy)" if name == "cifar10_jpeg" else name


def first_of_each_class(y: np.ndarray, limit: int | None = None) -> np.ndarray:
    """Indices of the first example of each class, in class order (at most ``limit``): a
    figure's sample that shows every class even when the set is stored sorted by class."""
    classes, first = np.unique(np.asarray(y), return_index=True)
    return first[np.argsort(classes)][:limit]


def natural_images(source: str) -> bool:
    """Whether a source holds 32x32 colour images: CIFAR-10/100, or an npz whose x_train is
    (N, 32, 32, 3) (read from the archive's header, without loading the images). These
    select the experiments' natural-image tier (VGG-style net, GPU-sized schedules)."""
    kind, arg = parse_source(source)
    if kind in ("cifar10", "cifar100"):
        return True
    if kind != "npz" or not os.path.isfile(arg):
        return False
    try:
        with zipfile.ZipFile(arg) as z, z.open("x_train.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
    except (KeyError, ValueError, zipfile.BadZipFile):
        return False  # `load` names the problem
    return tuple(shape[1:]) == (32, 32, 3)


def load(source: str, *, data_dir: str = "", image_size: int = 0, num_classes: int | None = None,
         val_fraction: float = -1.0, val_seed: int = 0) -> Dataset:
    """Load a data source whole, normalised, with a validation split held out of training.

    Args:
      source: see module docstring.
      data_dir: tfds data directory ("" for tfds's default).
      image_size: if > 0, zero-pad images (centred) to this height and width.
      num_classes: expected number of classes; labels outside [0, num_classes) are an
        error. Defaults to the source's known count, or max label + 1.
      val_fraction, val_seed: the validation split (`validation_split`); 0 keeps the
        whole training set for training.
    Returns:
      A `Dataset`; its ``x_train`` excludes the validation examples.
    """
    kind, arg = parse_source(source)
    if kind == "digits":
        xtr, ytr, xte, yte, scale = (*_digits(), 16.0)
    elif kind == "npz":
        xtr, ytr, xte, yte, scale = (*_npz(arg), None)
    elif kind == "idx":
        xtr, ytr, xte, yte, scale = (*_idx(arg), 255.0)
    else:
        xtr, ytr, xte, yte, scale = (*_tfds(kind, data_dir), 255.0)
    ytr, yte, num_classes = _check_labels(source, kind, xtr, ytr, xte, yte, num_classes)
    print_ = fingerprint(source, image_size, (xtr, ytr, xte, yte))
    xtr, xte = _as_nhwc(xtr, source), _as_nhwc(xte, source)
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"data source {source!r}: train images {xtr.shape[1:]} and test {xte.shape[1:]} differ")
    if scale is None:  # npz: uint8 pixels or floats already in [0, 1]
        scale = 255.0 if np.issubdtype(xtr.dtype, np.integer) else 1.0
    xtr = xtr.astype(np.float32) / scale
    xte = xte.astype(np.float32) / scale
    for split, x in (("train", xtr), ("test", xte)):
        bad = ~np.isfinite(x)
        if bad.any():
            raise DataError(f"data source {source!r}: {int(bad.sum())} non-finite pixel values in the {split} images "
                             f"(first in image {int(np.argwhere(bad)[0][0])})")
    if image_size:
        xtr, xte = _pad_to(xtr, image_size, source), _pad_to(xte, image_size, source)
    train_idx, val_idx, split = validation_split(ytr, val_fraction, val_seed, default=0.2 if kind == "digits" else 0.1)
    xva, yva, xtr, ytr = xtr[val_idx], ytr[val_idx], xtr[train_idx], ytr[train_idx]
    mean = xtr.mean(axis=(0, 1, 2))  # statistics of the examples trained on
    std = xtr.std(axis=(0, 1, 2)) + 1e-8
    return Dataset(
        name=source, x_train=(xtr - mean) / std, y_train=ytr.astype(np.int32),
        x_test=(xte - mean) / std, y_test=yte.astype(np.int32),
        num_classes=num_classes, mean=mean, std=std, fingerprint=print_,
        x_val=(xva - mean) / std, y_val=yva.astype(np.int32), split=split,
    )


def validation_split(y: np.ndarray, fraction: float, seed: int, *, default: float = 0.1
                     ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Indices of the training and validation examples: a random subset of the training
    set, stratified by class (so a training set stored sorted by class still gives a
    representative split), drawn with ``seed`` (scikit-learn's ``train_test_split``).

    ``fraction`` -1 means the default: ``default`` of the set (bnjax: 20% for digits,
    10% otherwise) and at least min(1,000, n / 5) examples; 0 means no split.

    Returns:
      ``(train indices, validation indices, description)``, both sorted; the
      description (fraction, sizes, seed, a checksum of the validation indices) goes
      into the run's meta.json.
    """
    from sklearn.model_selection import train_test_split

    n = len(y)
    if fraction == 0:
        return np.arange(n), np.zeros(0, np.int64), {"val_fraction": 0.0, "n_train": n, "n_val": 0}
    n_val = round((default if fraction < 0 else fraction) * n)
    if fraction < 0:
        n_val = max(n_val, min(1000, n // 5))
    classes, counts = np.unique(y, return_counts=True)
    if not 0 < n_val < n:
        raise DataError(f"a validation split of {n_val} of {n} training examples leaves nothing to train or validate on")
    stratify = y if counts.min() >= 2 and len(classes) <= n_val <= n - len(classes) else None
    train, val = train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=stratify)
    val = np.sort(val)
    desc = {"val_fraction": round(n_val / n, 6), "n_train": n - n_val, "n_val": n_val, "seed": seed,
            "stratified": stratify is not None,
            "val_indices_checksum": hashlib.blake2b(val.astype(np.int64).tobytes(), digest_size=8).hexdigest()}
    return np.sort(train), val, desc


def _check_labels(source, kind, xtr, ytr, xte, yte, num_classes):
    """Integer labels within [0, num_classes), one per image, non-empty splits."""
    ytr, yte = _labels(ytr, source, "train"), _labels(yte, source, "test")
    if len(xtr) == 0 or len(xte) == 0:
        raise DataError(f"data source {source!r}: empty {'training' if len(xtr) == 0 else 'test'} set")
    if num_classes is None:
        num_classes = NUM_CLASSES.get(kind, int(max(ytr.max(initial=0), yte.max(initial=0))) + 1)
    for split, y in (("train", ytr), ("test", yte)):
        bad = (y < 0) | (y >= num_classes)
        if bad.any():
            raise DataError(f"data source {source!r}: {int(bad.sum())} {split} labels outside [0, {num_classes}) "
                             f"(e.g. {int(y[bad][0])})")
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"data source {source!r}: images and labels differ in number")
    return ytr, yte, num_classes


def fingerprint(source: str, image_size: int, arrays: tuple[np.ndarray, ...]) -> dict:
    """What identifies a data set's content: its source, the shapes and dtypes of the
    raw (train images, train labels, test images, test labels) arrays, and a BLAKE2b
    checksum of their bytes (about 0.1 s for MNIST). Runs of the pool are reused only
    on data with an equal fingerprint (`bnjax.pool`)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return {"source": source, "image_size": image_size, "shapes": [list(a.shape) for a in arrays],
            "checksum": h.hexdigest()}


def _labels(y: np.ndarray, source: str, split: str) -> np.ndarray:
    """Integer class labels; float labels only when every value is a whole number."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"data source {source!r}: {split} labels must be one integer per image, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer):
        return y
    if not np.issubdtype(y.dtype, np.floating):
        raise DataError(f"data source {source!r}: {split} labels have dtype {y.dtype}; expected integers")
    bad = ~np.isfinite(y) | (y != np.round(y))
    if bad.any():
        raise DataError(f"data source {source!r}: {int(bad.sum())} {split} labels are not whole numbers "
                         f"(e.g. {float(y[bad][0])!r})")
    return y.astype(np.int64)


def _as_nhwc(x: np.ndarray, source: str) -> np.ndarray:
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4:
        return x
    raise DataError(f"data source {source!r}: images must be (N, H, W) or (N, H, W, C), got {x.shape}")


def _pad_to(x: np.ndarray, size: int, source: str) -> np.ndarray:
    h, w = x.shape[1:3]
    if h > size or w > size:
        raise DataError(f"data source {source!r}: images {h}x{w} are larger than image_size={size}")
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(x, ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0)))


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)
    y = d.target
    return x[:1437], y[:1437], x[1437:], y[1437:]


def _npz(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz data file not found: {path}")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f]
        if missing:
            raise DataError(f"npz file {path} lacks arrays {missing} (needs x_train, y_train, x_test, y_test)")
        return f["x_train"], f["y_train"], f["x_test"], f["y_test"]


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (plain or gzip), as in the original MNIST distribution."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise DataError(f"{path}: unknown IDX element type {raw[2]:#x}")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtypes[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {tuple(dims)} but holds {data.size} values (truncated?)")
    return data.reshape(dims)


def _idx(directory: str):
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"IDX data directory not found: {directory}")

    def find(prefix: str, kind: str) -> str:
        hits = sorted(glob.glob(os.path.join(directory, f"{prefix}-{kind}-idx?-ubyte*")))
        if not hits:
            raise FileNotFoundError(f"no {prefix}-{kind}-idx?-ubyte[.gz] file in {directory}")
        return hits[0]

    return tuple(read_idx(find(p, k)) for p in ("train", "t10k") for k in ("images", "labels"))


def _tfds(name: str, data_dir: str):
    """Both splits through ``tfds.data_source``. Without TensorFlow, a set tfds has not
    prepared comes from its canonical files instead (`_downloaded`): tfds would download
    them, then fail to prepare them."""
    import importlib.util

    import tensorflow_datasets as tfds

    out = []
    for split in ("train", "test"):
        try:
            ds = tfds.data_source(name, split=split, data_dir=data_dir or None,
                                  download=importlib.util.find_spec("tensorflow") is not None)
        except ModuleNotFoundError as e:
            ds = _without_tensorflow(name, data_dir, e.name or "tensorflow", e)
        except Exception as e:  # noqa: BLE001 (tfds's errors for a set it has not prepared vary)
            if importlib.util.find_spec("tensorflow") is not None:
                raise
            ds = _without_tensorflow(name, data_dir, "tensorflow", e)
        if isinstance(ds, tuple):
            return ds
        n = len(ds)
        try:  # one batched read; tfds's mock data source lacks a working __getitems__
            examples = ds.__getitems__(list(range(n)))
        except (AttributeError, TypeError):
            examples = [ds[i] for i in range(n)]
        out.append(np.stack([np.asarray(e["image"]) for e in examples]))
        out.append(np.asarray([int(e["label"]) for e in examples]))
    return tuple(out)


def _without_tensorflow(name: str, data_dir: str, missing: str, cause: Exception):
    """The arrays of a set bnjax downloads itself, else the error that says what to do."""
    if name in download.FILES:
        return _downloaded(name, data_dir, missing)
    raise DataError(
        f"tfds data set {name!r} is not prepared in {data_dir or '~/tensorflow_datasets'} and preparing it "
        f"needs a module that is not installed ({missing}). Prepare it once with TensorFlow installed "
        f"(pip install tensorflow; then python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{name}', file_format='array_record').download_and_prepare()\"), or use "
        "the idx:DIR / npz:PATH sources, which need no TensorFlow."
    ) from cause


def _downloaded(name: str, data_dir: str, missing: str):
    """The canonical files of ``name`` (`bnjax.download`), fetched once and verified."""
    root = download.data_root(os.path.join(data_dir, "bnjax") if data_dir else None)
    print(f"tfds cannot prepare {name!r} without {missing}: using the canonical files in {root}/{name} "
          "(downloaded once, checksums verified)", file=sys.stderr)
    try:
        directory = download.fetch(name, root)
    except download.DownloadError as e:
        raise DataError(f"data set {name!r}: {e}") from e
    if name == "cifar10":
        return download.read_cifar10(os.path.join(directory, download.FILES[name][0].name))
    return _idx(directory)


# --------------------------------------------------------------------------- sampling


def epoch_batches(key: jax.Array, epoch: jax.Array, n: int, batch_size: int) -> jax.Array:
    """Indices of one epoch's batches, ``(n // batch_size, batch_size)``, without
    replacement; the incomplete last batch is dropped. Pure in ``(key, epoch)``.

    The permutation sorts ``range(n)`` by 64 random bits (two uint32 sort keys, one stable
    sort): uniform up to key collisions (probability ~n^2 / 2^65, 1e-10 for n = 60,000),
    where ``jax.random.permutation`` sorts twice by 32 bits; half the cost on CPU."""
    if batch_size > n:
        raise DataError(f"batch size {batch_size} is larger than the {n} training examples")
    bits = jax.random.bits(jax.random.fold_in(key, epoch), (2, n), jnp.uint32)
    perm = jax.lax.sort((bits[0], bits[1], jnp.arange(n, dtype=jnp.int32)), num_keys=2)[2]
    steps = n // batch_size
    return perm[: steps * batch_size].reshape(steps, batch_size)


def to_device(ds: Dataset) -> dict[str, jax.Array]:
    """The arrays of a dataset as device arrays (placed once, reused by every step)."""
    return {k: jnp.asarray(getattr(ds, k)) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
