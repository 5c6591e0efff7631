"""Data sources (offline), the tfds path without the network, and the epoch sampler."""

import gzip
import struct
from unittest import mock

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bnjax import data


def _write_idx(path, arr, gz):
    magic = {1: 0x801, 3: 0x803}[arr.ndim]
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)


def test_digits_is_real_and_normalised():
    ds = data.load("digits", val_fraction=0)
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1) and len(ds.y_val) == 0
    assert ds.x_train.dtype == np.float32 and set(np.unique(ds.y_train)) == set(range(10))
    np.testing.assert_allclose(ds.x_train.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(), 1.0, atol=1e-4)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    arrays = {}
    for pre, n in (("train", 30), ("t10k", 10)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        _write_idx(tmp_path / f"{pre}-images-idx3-ubyte{suffix}", x, gz)
        _write_idx(tmp_path / f"{pre}-labels-idx1-ubyte{suffix}", y, gz)
        arrays[pre] = (x, y)
    ds = data.load(f"idx:{tmp_path}", val_fraction=0)
    np.testing.assert_array_equal(ds.y_train, arrays["train"][1])
    raw = ds.x_train[..., 0] * ds.std + ds.mean
    np.testing.assert_allclose(raw * 255, arrays["train"][0], atol=1e-3)


def test_npz_and_padding(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_train=np.arange(20) % 10,
             x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), y_test=np.arange(5))
    ds = data.load(f"npz:{path}", image_size=32, val_fraction=0)
    assert ds.x_train.shape == (20, 32, 32, 1)


def test_tfds_source_through_mock_data():
    with tfds.testing.mock_data(num_examples=16):
        ds = data.load("mnist", val_fraction=0)
    assert ds.x_train.shape == (16, 28, 28, 1) and ds.y_train.shape == (16,)
    assert ds.y_train.min() >= 0 and ds.y_train.max() < 10


def test_tfds_preparation_without_tensorflow_says_what_to_do():
    err = ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
    with mock.patch.object(tfds, "data_source", side_effect=err):  # a set bnjax cannot download itself
        with pytest.raises(data.DataError, match="needs a module that is not installed .tensorflow.*idx:DIR"):
            data.load("cifar100")


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown data source 'imagenet'"):
        data.load("imagenet")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        data.load(f"npz:{tmp_path}/missing.npz")
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((4, 8, 8)), y_train=np.array([0, 1, 2, 12]),
             x_test=np.zeros((2, 8, 8)), y_test=np.array([0, 1]))
    with pytest.raises(ValueError, match="labels outside"):
        data.load(f"npz:{tmp_path}/bad.npz", num_classes=10)
    with pytest.raises(ValueError, match="larger than image_size"):
        data.load("digits", image_size=4)
    _write_idx(tmp_path / "short", np.zeros((3, 2, 2), np.uint8), False)
    raw = open(tmp_path / "short", "rb").read()
    open(tmp_path / "short", "wb").write(raw[:-2])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(str(tmp_path / "short"))


def test_epoch_sampler_is_a_reproducible_permutation():
    key = jax.random.key(0)
    a = np.asarray(data.epoch_batches(key, 3, 100, 32))
    b = np.asarray(data.epoch_batches(key, 3, 100, 32))
    c = np.asarray(data.epoch_batches(key, 4, 100, 32))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 32) and len(np.unique(a)) == 96  # without replacement, last partial batch dropped
    assert not np.array_equal(a, c)


def test_tfds_preparation_from_files_written_here(tmp_path, monkeypatch):
    """Run tfds's real MNIST builder on IDX files this test writes (the download step is
    redirected to them). Preparing needs TensorFlow in tfds 4.9.10 (its MNIST builder reads
    with tf.io.gfile): without it bnjax turns to its own download (here to a port where
    nothing listens, so it must fail naming the file; tests/test_download.py serves files);
    with it the prepared data must load."""
    import importlib.util

    from tensorflow_datasets.image_classification import mnist as tfds_mnist

    rng = np.random.default_rng(2)
    files, labels = {}, {}
    for split, pre, n in (("train", "train", 12), ("test", "t10k", 6)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(tmp_path / f"{pre}-images-idx3-ubyte", x, False)
        _write_idx(tmp_path / f"{pre}-labels-idx1-ubyte", y, False)
        files[f"{split}_data"] = str(tmp_path / f"{pre}-images-idx3-ubyte")
        files[f"{split}_labels"] = str(tmp_path / f"{pre}-labels-idx1-ubyte")
        labels[split] = y
    with mock.patch.object(tfds_mnist, "_TRAIN_EXAMPLES", 12), mock.patch.object(tfds_mnist, "_TEST_EXAMPLES", 6), \
            mock.patch.object(tfds.download.DownloadManager, "download_and_extract", lambda self, urls: files):
        if importlib.util.find_spec("tensorflow") is None:
            monkeypatch.setenv("BNJAX_DATA_MIRRORS", "http://127.0.0.1:9/")
            with pytest.raises(data.DataError, match="could not download train-images-idx3-ubyte.gz"):
                data.load("mnist", data_dir=str(tmp_path / "tfds"))
        else:
            ds = data.load("mnist", data_dir=str(tmp_path / "tfds"))
            assert sorted(ds.y_train.tolist()) == sorted(labels["train"].tolist())


def test_validation_split_is_stratified_disjoint_fixed_and_never_trained_on(tmp_path):
    """A training set stored sorted by class (as some npz exports are) still gives a
    split with every class in its share; train and validation are disjoint and together
    the whole training set; the split depends only on its seed."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(10), [300, 200, 100, 400, 250, 250, 150, 350, 500, 500])  # 3,000, sorted by class
    x = rng.integers(0, 256, (len(y), 6, 6), dtype=np.uint8)
    x[:, 0, 0] = np.arange(len(y)) % 256  # make rows identifiable
    x[:, 0, 1] = np.arange(len(y)) // 256
    np.savez(tmp_path / "s.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    ds = data.load(f"npz:{tmp_path / 's.npz'}")
    assert ds.split["n_val"] == 600 and len(ds.y_val) == 600 and len(ds.y_train) == 2400  # 10% < min(1000, n/5)
    np.testing.assert_allclose(np.bincount(ds.y_val, minlength=10) / 600, np.bincount(y) / len(y), atol=2e-3)

    def ids(xs):
        raw = np.rint((xs[..., 0] * ds.std + ds.mean) * 255).astype(int)
        return set((raw[:, 0, 0] + 256 * raw[:, 0, 1]).tolist())

    assert ids(ds.x_train).isdisjoint(ids(ds.x_val)) and ids(ds.x_train) | ids(ds.x_val) == set(range(len(y)))
    again = data.load(f"npz:{tmp_path / 's.npz'}")
    other = data.load(f"npz:{tmp_path / 's.npz'}", val_seed=1)
    assert ids(again.x_val) == ids(ds.x_val) and ids(other.x_val) != ids(ds.x_val)
    assert data.load(f"npz:{tmp_path / 's.npz'}", val_fraction=0.5).split["n_val"] == 1500
    np.testing.assert_allclose(ds.x_train.mean(), 0.0, atol=1e-4)  # standardised with the training part only
    digits = data.load("digits")
    assert (len(digits.y_train), len(digits.y_val)) == (1150, 287)  # digits: 20%


def test_validation_split_sizes_stratification_and_checksum_follow_their_rules():
    import hashlib

    y = np.repeat(np.arange(4), 500)  # 2,000, sorted by class
    tr, va, d = data.validation_split(y, -1, 0)  # default 10% = 200 < min(1000, n / 5) = 400
    assert d["n_val"] == len(va) == 400 and len(tr) == 1600 and d["stratified"]
    assert np.all(np.diff(va) > 0) and np.all(np.diff(tr) > 0) and set(tr).isdisjoint(va)
    assert d["val_indices_checksum"] == hashlib.blake2b(va.astype(np.int64).tobytes(), digest_size=8).hexdigest()
    assert data.validation_split(np.repeat(np.arange(4), 5000), -1, 0)[2]["n_val"] == 2000  # 10% above the floor
    assert data.validation_split(y, 0.05, 0)[2]["n_val"] == 100  # an explicit fraction has no floor
    assert data.validation_split(y, -1, 0, default=0.3)[2]["n_val"] == 600
    tr0, va0, d0 = data.validation_split(y, 0, 0)
    assert len(va0) == 0 and tr0.tolist() == list(range(2000)) and d0["n_val"] == 0
    lone = np.concatenate([y, [4]])  # a class with one example cannot be stratified
    assert not data.validation_split(lone, -1, 0)[2]["stratified"]
    with pytest.raises(data.DataError, match="leaves nothing to train"):
        data.validation_split(y, 1.0, 0)


def test_fingerprint_changes_with_any_byte_dtype_or_shape():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    base = data.fingerprint("npz:x", 0, (a, a[:, 0, 0]))
    assert data.fingerprint("npz:x", 0, (a.copy(), a[:, 0, 0].copy())) == base
    b = a.copy()
    b[1, 2, 3] ^= 1
    for arrays in ((b, a[:, 0, 0]), (a.reshape(2, 4, 3), a[:, 0, 0]), (a.view(np.int8), a[:, 0, 0])):
        assert data.fingerprint("npz:x", 0, arrays)["checksum"] != base["checksum"]
    assert data.fingerprint("npz:y", 0, (a, a[:, 0, 0]))["source"] == "npz:y"
    assert base["shapes"] == [[2, 3, 4], [2]]


def test_padding_centres_the_image_and_refuses_a_larger_one():
    x = np.ones((1, 27, 26, 1))
    p = data._pad_to(x, 32, "s")
    assert p.shape == (1, 32, 32, 1)
    rows, cols = np.flatnonzero(p[0, :, 0, 0] + p[0, :, -1, 0] + p[0, :, 15, 0]), np.flatnonzero(p[0, 15, :, 0])
    assert (rows[0], 31 - rows[-1]) == (2, 3) and (cols[0], 31 - cols[-1]) == (3, 3)
    with pytest.raises(data.DataError, match="larger than image_size=24"):
        data._pad_to(x, 24, "s")


@pytest.mark.parametrize("code, dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, ">i2"), (0x0C, ">i4"),
                                         (0x0D, ">f4"), (0x0E, ">f8")])
def test_idx_files_of_every_element_type_read_back(tmp_path, code, dtype):
    """IDX as specified (LeCun's format): magic 0, 0, type, ndim; big-endian dimensions; data."""
    arr = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    if code == 0x08:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, code, 3]) + struct.pack(">3I", 2, 3, 4) + arr.astype(dtype).tobytes()
    (tmp_path / "f").write_bytes(raw)
    got = data.read_idx(str(tmp_path / "f"))
    assert got.shape == (2, 3, 4) and np.array_equal(got.astype(np.float64), arr.astype(np.float64))


def test_idx_headers_that_are_not_idx_are_named(tmp_path):
    for name, raw in (("short", b"\x00\x00\x08"), ("first", b"\x01\x00\x08\x01\x00\x00\x00\x01\x05"),
                      ("second", b"\x00\x01\x08\x01\x00\x00\x00\x01\x05")):
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(data.DataError, match=f"^{tmp_path / name} is not an IDX file \\(bad magic number\\)$"):
            data.read_idx(str(tmp_path / name))
    (tmp_path / "scalar").write_bytes(b"\x00\x00\x08\x00")  # a valid header of a 0-d array without its value
    with pytest.raises(data.DataError, match=r"header says \(\) but holds 0 values \(truncated\?\)"):
        data.read_idx(str(tmp_path / "scalar"))


def test_small_helpers_of_the_data_sources(tmp_path):
    assert data.first_of_each_class(np.array([3, 1, 3, 0, 1, 2])).tolist() == [3, 1, 5, 0]
    assert data.first_of_each_class(np.array([3, 1, 3, 0, 1, 2]), limit=2).tolist() == [3, 1]
    np.savez(tmp_path / "c.npz", x_train=np.zeros((2, 32, 32, 3), np.uint8), y_train=np.zeros(2),
             x_test=np.zeros((1, 32, 32, 3), np.uint8), y_test=np.zeros(1))
    np.savez(tmp_path / "m.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    assert data.natural_images("cifar10") and data.natural_images(f"npz:{tmp_path / 'c.npz'}")
    assert not data.natural_images(f"npz:{tmp_path / 'm.npz'}") and not data.natural_images("digits")
    with pytest.raises(data.DataError, match=r"lacks arrays \['y_train', 'x_test', 'y_test'\] \(needs x_train"):
        data.load(f"npz:{tmp_path / 'm.npz'}")
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((3, 8, 8)), y_train=np.array([0, 1, 12]),
             x_test=np.zeros((1, 8, 8)), y_test=np.array([0]))
    with pytest.raises(data.DataError, match=r": 1 train labels outside \[0, 10\) \(e.g. 12\)"):
        data.load(f"npz:{tmp_path / 'bad.npz'}", num_classes=10, val_fraction=0)


def test_a_validation_split_of_one_example_is_allowed_and_of_none_refused():
    y = np.arange(20) % 2
    train, val, desc = data.validation_split(y, 0.05, 0)  # 1 of 20
    assert len(val) == 1 and len(train) == 19 and desc["n_val"] == 1
    with pytest.raises(data.DataError, match="a validation split of 0 of 20 training examples leaves nothing"):
        data.validation_split(y, 0.01, 0)


def test_label_and_padding_errors_name_the_split_the_first_bad_value_and_the_source(tmp_path):
    path = tmp_path / "l.npz"
    np.savez(path, x_train=np.zeros((3, 8, 8)), y_train=np.array([0, 1, 2]), x_test=np.zeros((2, 8, 8)),
             y_test=np.array([0, 11]))
    with pytest.raises(data.DataError, match=r": 1 test labels outside \[0, 10\) \(e.g. 11\)"):
        data.load(f"npz:{path}", num_classes=10, val_fraction=0)
    np.savez(path, x_train=np.zeros((3, 8, 8)), y_train=np.array([0.0, 1.5, 2.25]), x_test=np.zeros((1, 8, 8)),
             y_test=np.array([0.0]))
    with pytest.raises(data.DataError, match=r": 2 train labels are not whole numbers \(e.g. 1.5\)"):
        data.load(f"npz:{path}", val_fraction=0)
    with pytest.raises(data.DataError, match=r"^data source 'digits': images 8x8 are larger than image_size=4"):
        data.load("digits", image_size=4)
