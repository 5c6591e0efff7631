"""bnjax's own download of the canonical data files, without the network: a server on
127.0.0.1 serves small files in the canonical formats (gzip IDX, CIFAR-10's binary tar),
with HTTP Range support, and can truncate, corrupt or refuse."""

import gzip
import hashlib
import http.server
import io
import os
import struct
import sys
import tarfile
import threading

import numpy as np
import pytest

from bnjax import config as C
from bnjax import data, download

MNIST_NAMES = download._IDX


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as g:
        g.write(header + arr.astype(np.uint8).tobytes())
    return raw.getvalue()


def _mnist_like(n_train=64, n_test=32, seed=0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    y = {"train": np.arange(n_train) % 10, "t10k": np.arange(n_test) % 10}
    x = {k: (rng.random((len(v), 28, 28)) * 60 + (v * 19)[:, None, None]).astype(np.uint8) for k, v in y.items()}
    return {f"{k}-images-idx3-ubyte.gz": _idx(x[k]) for k in y} | {f"{k}-labels-idx1-ubyte.gz": _idx(y[k]) for k in y}


def _files(blobs: dict[str, bytes], names) -> tuple:
    return tuple(download.File(n, len(blobs[n]), hashlib.sha256(blobs[n]).hexdigest()) for n in names)


class _Server:
    """Serves ``blobs`` by name; ``mode``: "ok", "truncate" (half of each file, then close),
    "refuse" (503), "corrupt" (one byte changed); counts Range requests."""

    def __init__(self, blobs: dict[str, bytes]):
        self.blobs, self.mode, self.ranges, self.requests = blobs, "ok", 0, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.requests += 1
                name = self.path.rsplit("/", 1)[-1]
                if outer.mode == "refuse" or name not in outer.blobs:
                    self.send_error(503 if outer.mode == "refuse" else 404)
                    return
                body = outer.blobs[name]
                if outer.mode == "corrupt":
                    body = body[:-1] + bytes([body[-1] ^ 1])
                start = 0
                if self.headers.get("Range"):
                    outer.ranges += 1
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:len(body) // 2] if outer.mode == "truncate" else body[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server(_mnist_like())
    yield s
    s.close()


def test_the_canonical_checksums_are_tfds_s():
    """bnjax's names, sizes and SHA-256 equal those in the installed tensorflow-datasets'
    checksum files (an independent record of the same files)."""
    import tensorflow_datasets as tfds

    root = os.path.dirname(tfds.__file__)
    recorded = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            if n.endswith(("checksums.tsv", ".txt")) and ("checksums" in dirpath or n == "checksums.tsv"):
                for line in open(os.path.join(dirpath, n), errors="ignore"):
                    parts = line.split("\t")
                    if len(parts) >= 3:
                        recorded[parts[0]] = (int(parts[1]), parts[2].strip())
    for name, files in download.FILES.items():
        for f in files:
            tfds_url = download.MIRRORS[name][0] + f.name
            assert recorded.get(tfds_url) == (f.size, f.sha256), tfds_url


def test_mnist_trains_from_files_served_on_localhost_without_tensorflow(server, tmp_path, monkeypatch, capsys):
    """The full path of --data mnist with TensorFlow absent: tfds cannot prepare MNIST, bnjax
    downloads the four IDX files from the mirror, verifies them, parses them and trains."""
    import bnjax

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # importing TensorFlow fails, as where it is absent
    monkeypatch.setattr(download, "FILES", {**download.FILES, "mnist": _files(server.blobs, MNIST_NAMES)})
    monkeypatch.setenv(download.MIRRORS_ENV, f"http://127.0.0.1:9/,{server.url}")  # the first mirror is down
    cfg = C.TrainConfig(model=C.ModelConfig(arch="mlp", hidden=(16,), norm="batch"),
                        data=C.DataConfig(source="mnist", batch_size=16, data_dir=str(tmp_path)), steps=4,
                        eval_every=4)
    run = bnjax.fit(cfg, progress=False)
    assert f"tfds cannot prepare 'mnist' without tensorflow: using the canonical files in {tmp_path}/bnjax/mnist" \
        in capsys.readouterr().err
    assert run.history[-1]["step"] == 4 and 0 <= run.summary["final_test_accuracy"] <= 1
    ds = data.load("mnist", data_dir=str(tmp_path), val_fraction=0)
    assert ds.x_train.shape == (64, 28, 28, 1) and ds.y_test.tolist() == (np.arange(32) % 10).tolist()
    served = server.requests
    data.load("mnist", data_dir=str(tmp_path))  # verified files are kept: nothing fetched again
    assert server.requests == served == 4
    assert sorted(os.listdir(tmp_path / "bnjax" / "mnist")) == sorted(MNIST_NAMES)


def test_a_wrong_checksum_is_refused_naming_the_file_and_both_checksums(server, tmp_path, monkeypatch):
    files = _files(server.blobs, MNIST_NAMES)
    server.mode = "corrupt"
    monkeypatch.setenv(download.MIRRORS_ENV, server.url)
    with pytest.raises(download.DownloadError) as e:
        download.fetch("mnist", str(tmp_path), progress=False, files=files)
    body = server.blobs[files[0].name]
    bad = hashlib.sha256(body[:-1] + bytes([body[-1] ^ 1])).hexdigest()
    msg = str(e.value)
    assert files[0].name in msg and f"expected SHA-256 {files[0].sha256}, got {bad}" in msg
    assert not os.listdir(tmp_path / "mnist")  # nothing unverified is left behind


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path, monkeypatch):
    files = _files(server.blobs, MNIST_NAMES)
    monkeypatch.setenv(download.MIRRORS_ENV, server.url)
    server.mode = "truncate"
    with pytest.raises(download.DownloadError, match="of .* bytes arrived"):
        download.fetch("mnist", str(tmp_path), progress=False, files=files)
    part = tmp_path / "mnist" / (files[0].name + ".part")
    assert part.stat().st_size == files[0].size // 2  # kept for the next attempt
    server.mode = "ok"
    d = download.fetch("mnist", str(tmp_path), progress=False, files=files)
    assert server.ranges == 1  # the first file resumed from its half; the others were never started
    for f in files:
        assert hashlib.sha256(open(os.path.join(d, f.name), "rb").read()).hexdigest() == f.sha256
    assert not [n for n in os.listdir(d) if n.endswith(".part")]


def test_a_refusing_server_is_named_with_its_answer(server, tmp_path, monkeypatch):
    server.mode = "refuse"
    monkeypatch.setenv(download.MIRRORS_ENV, server.url)
    with pytest.raises(download.DownloadError, match=f"{server.url}train-images-idx3-ubyte.gz: .*Service Unavail"):
        download.fetch("mnist", str(tmp_path), progress=False, files=_files(server.blobs, MNIST_NAMES))
    with pytest.raises(download.DownloadError, match="no canonical files known for data set 'cifar100'"):
        download.fetch("cifar100", str(tmp_path))


def test_cifar10_binary_version_is_parsed_without_pickle(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    batches = {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 3}
    want, buf = {}, io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, n in batches.items():
            y, x = rng.integers(0, 10, n), rng.integers(0, 256, (n, 3, 32, 32))
            want[name] = (x.transpose(0, 2, 3, 1), y)
            raw = np.concatenate([y[:, None], x.reshape(n, -1)], axis=1).astype(np.uint8).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}.bin")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    blob = buf.getvalue()
    s = _Server({"cifar-10-binary.tar.gz": blob})
    try:
        monkeypatch.setenv(download.MIRRORS_ENV, s.url)
        monkeypatch.setitem(sys.modules, "tensorflow", None)
        monkeypatch.setattr(download, "FILES", {**download.FILES, "cifar10": _files(s.blobs, s.blobs)})
        ds = data.load("cifar10", data_dir=str(tmp_path), val_fraction=0)
    finally:
        s.close()
    xtr, ytr, xte, yte = download.read_cifar10(str(tmp_path / "bnjax" / "cifar10" / "cifar-10-binary.tar.gz"))
    np.testing.assert_array_equal(xtr, np.concatenate([want[f"data_batch_{i}"][0] for i in range(1, 6)]))
    np.testing.assert_array_equal(ytr, np.concatenate([want[f"data_batch_{i}"][1] for i in range(1, 6)]))
    np.testing.assert_array_equal(xte, want["test_batch"][0])
    np.testing.assert_array_equal(yte, want["test_batch"][1])
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.y_train.tolist() == ytr.tolist()


def test_where_the_files_live():
    assert download.data_root("/x") == "/x"
    assert download.data_root(None, {download.DIR_ENV: "/d"}) == "/d"
    assert download.data_root(None, {"XDG_DATA_HOME": "/xdg"}) == "/xdg/bnjax"
    assert download.data_root(None, {}) == os.path.join(os.path.expanduser("~"), ".local", "share", "bnjax")
    assert download.mirrors("mnist", {}) == download.MIRRORS["mnist"]
    assert download.mirrors("mnist", {download.MIRRORS_ENV: "http://a, http://b/"}) == ("http://a/", "http://b/")
