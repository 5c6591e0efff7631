"""The canonical files of MNIST, Fashion-MNIST and CIFAR-10, downloaded without TensorFlow.

tensorflow-datasets reads a prepared data set without TensorFlow, but its builders need
TensorFlow to prepare one. Where they cannot, `bnjax.data` fetches the same files tfds and
torchvision use (names, sizes and SHA-256 as in tfds's checksum files; a test checks them
against the installed tfds) and parses them without pickle: IDX for MNIST and
Fashion-MNIST, CIFAR-10's binary version.

* Where: ``DIR/<name>/`` for `fetch`'s ``root``, else ``$BNJAX_DATA_DIR``, else
  ``$XDG_DATA_HOME/bnjax``, else ``~/.local/share/bnjax``.
* Mirrors: `MIRRORS` in order, or the comma-separated base URLs in ``$BNJAX_DATA_MIRRORS``
  (a local copy, a proxy); the file name is appended to each.
* Integrity: a file is used only once its size and SHA-256 match; an interrupted download
  (``FILE.part``) resumes with an HTTP Range request, or restarts when the server ignores
  it; a wrong checksum deletes the part and tries the next mirror; when every mirror fails,
  `DownloadError` names the file, the mirrors and what each answered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tarfile
import urllib.error
import urllib.request

import numpy as np

MIRRORS_ENV = "BNJAX_DATA_MIRRORS"
DIR_ENV = "BNJAX_DATA_DIR"
CHUNK = 1 << 16


@dataclasses.dataclass(frozen=True)
class File:
    name: str
    size: int
    sha256: str


_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz")
FILES: dict[str, tuple[File, ...]] = {
    "mnist": tuple(File(n, s, h) for n, s, h in zip(_IDX, (9912422, 28881, 1648877, 4542), (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"), strict=True)),
    "fashion_mnist": tuple(File(n, s, h) for n, s, h in zip(_IDX, (26421880, 29515, 4422102, 5148), (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"), strict=True)),
    "cifar10": (File("cifar-10-binary.tar.gz", 170052171,
                     "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),),
}
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://storage.googleapis.com/cvdf-datasets/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}


class DownloadError(RuntimeError):
    """A file could not be fetched with the right contents from any mirror."""


def data_root(root: str | None = None, environ=os.environ) -> str:
    """Where downloaded data sets live (see the module docstring)."""
    if root:
        return root
    if environ.get(DIR_ENV):
        return environ[DIR_ENV]
    base = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "bnjax")


def mirrors(name: str, environ=os.environ) -> tuple[str, ...]:
    """The base URLs to try for data set ``name``, in order."""
    given = [m.strip() for m in environ.get(MIRRORS_ENV, "").split(",") if m.strip()]
    return tuple(m if m.endswith("/") else m + "/" for m in given) or MIRRORS[name]


def fetch(name: str, root: str | None = None, *, progress: bool = True, files: tuple[File, ...] | None = None
          ) -> str:
    """Download data set ``name``'s files (`FILES`, or ``files``) into its directory,
    each verified; returns the directory. Files already there and verified are kept."""
    if name not in FILES:
        raise DownloadError(f"no canonical files known for data set {name!r}; bnjax downloads {sorted(FILES)}")
    directory = os.path.join(data_root(root), name)
    os.makedirs(directory, exist_ok=True)
    for f in files or FILES[name]:
        path = os.path.join(directory, f.name)
        if not (os.path.exists(path) and _sha256(path) == f.sha256):
            _fetch_file(f, path, mirrors(name), progress)
    return directory


def _fetch_file(f: File, path: str, bases: tuple[str, ...], progress: bool) -> None:
    answers = []
    for base in bases:
        url = base + f.name
        try:
            _download(url, path + ".part", f.size, progress)
        except (urllib.error.URLError, OSError, DownloadError) as e:
            answers.append(f"{url}: {getattr(e, 'reason', None) or e}")
            continue
        got = _sha256(path + ".part")
        if got != f.sha256:
            os.remove(path + ".part")
            answers.append(f"{url}: wrong checksum (expected SHA-256 {f.sha256}, got {got})")
            continue
        os.replace(path + ".part", path)
        return
    raise DownloadError(f"could not download {f.name} with the expected contents:\n  " + "\n  ".join(answers))


def _download(url: str, part: str, size: int, progress: bool) -> None:
    """Append ``url``'s bytes to ``part`` from its current length (HTTP Range); restart
    from zero when the server sends the whole file."""
    from tqdm.auto import tqdm

    have = os.path.getsize(part) if os.path.exists(part) else 0
    if have > size:
        os.remove(part)
        have = 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        if have and resp.status != 206:  # the server ignored the range: start again
            have = 0
        with open(part, "ab" if have else "wb") as out, \
                tqdm(total=size, initial=have, unit="B", unit_scale=True, desc=os.path.basename(url),
                     disable=not progress, leave=False) as bar:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    got = os.path.getsize(part)
    if got != size:
        raise DownloadError(f"{got} of {size} bytes arrived (interrupted; the part is kept and resumed next time)")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_cifar10(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10's binary version (``cifar-10-binary.tar.gz``): records of one label byte
    and 3,072 pixel bytes (red, green, blue planes of 32x32); ``data_batch_1..5`` train,
    ``test_batch`` tests. Returns uint8 NHWC images and int labels, train then test."""
    def batch(tar: tarfile.TarFile, member: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            raw = tar.extractfile(f"cifar-10-batches-bin/{member}.bin").read()
        except KeyError:
            raise DownloadError(f"{path}: no cifar-10-batches-bin/{member}.bin inside") from None
        if len(raw) % 3073:
            raise DownloadError(f"{path}: {member}.bin holds {len(raw)} bytes, not whole 3,073-byte records")
        rec = np.frombuffer(raw, np.uint8).reshape(-1, 3073)
        return rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), rec[:, 0].astype(np.int64)

    with tarfile.open(path, "r:gz") as tar:
        train = [batch(tar, f"data_batch_{i}") for i in range(1, 6)]
        xte, yte = batch(tar, "test_batch")
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), xte, yte
