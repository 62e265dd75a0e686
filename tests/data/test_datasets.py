"""Tests for fedjax_gen.data.datasets."""

import gzip
import os
import sys

import numpy as np
import pytest

from fedjax_gen.data.datasets import (DATASETS, FASHION_MNIST_DIR, SOURCES,
                                      load_dataset, read_idx)


def check_dataset(ds, shape, num_classes):
  for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.shape[1:] == shape and len(x) == len(y) > 0
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert 0 <= y.min() and y.max() < num_classes
  assert ds.num_classes == num_classes == len(ds.class_names)


def test_digits():
  a, b = load_dataset("digits"), load_dataset("digits")
  check_dataset(a, (8, 8, 1), 10)
  assert (len(a.x_train), len(a.x_test)) == (1347, 450)
  assert a.x_train.max() == 1.0
  assert a.class_names == tuple("0123456789")
  np.testing.assert_array_equal(a.x_train, b.x_train)  # deterministic
  np.testing.assert_array_equal(a.y_test, b.y_test)
  # Stratified: each class is ~25% test.
  frac = np.bincount(a.y_test) / (np.bincount(a.y_test) +
                                  np.bincount(a.y_train))
  assert np.allclose(frac, 0.25, atol=0.02)


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason=f"{FASHION_MNIST_DIR} absent; install it with "
                    "`apt-get install -y dataset-fashion-mnist`")
def test_fashion_mnist_idx():
  ds = load_dataset("fashion_mnist")
  check_dataset(ds, (28, 28, 1), 10)
  assert (len(ds.x_train), len(ds.x_test)) == (60000, 10000)
  assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == (
      "Ankle boot")
  assert (np.bincount(ds.y_train) == 6000).all()


def write_idx(path, arr, gz):
  header = bytes([0, 0, 0x08, arr.ndim]) + np.array(
      arr.shape, ">i4").tobytes()
  with (gzip.open if gz else open)(path, "wb") as f:
    f.write(header + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_from_dir(tmp_path, gz):
  rng = np.random.default_rng(0)
  ext = ".gz" if gz else ""
  for split, n in (("train", 12), ("t10k", 5)):
    write_idx(tmp_path / f"{split}-images-idx3-ubyte{ext}",
              rng.integers(0, 256, (n, 28, 28)), gz)
    write_idx(tmp_path / f"{split}-labels-idx1-ubyte{ext}",
              np.arange(n) % 10, gz)
  ds = load_dataset("mnist", data_dir=str(tmp_path))  # auto -> idx
  check_dataset(ds, (28, 28, 1), 10)
  assert len(ds.y_train) == 12 and ds.y_test.tolist() == [0, 1, 2, 3, 4]
  raw = read_idx(str(tmp_path / f"t10k-images-idx3-ubyte{ext}"))
  np.testing.assert_allclose(ds.x_test[..., 0], raw / 255.0, rtol=1e-6)


def test_read_idx_rejects_garbage(tmp_path):
  path = tmp_path / "bad"
  path.write_bytes(b"\x01\x02\x03\x04rest")
  with pytest.raises(ValueError, match="not an IDX file"):
    read_idx(str(path))
  path.write_bytes(bytes([0, 0, 8, 1]) + np.array([10], ">i4").tobytes()
                   + b"abc")
  with pytest.raises(ValueError, match="truncated or corrupt"):
    read_idx(str(path))


def test_missing_dir_message(tmp_path):
  missing = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError) as e:
    load_dataset("fashion_mnist", data_dir=missing)
  msg = str(e.value)
  assert missing in msg and "apt-get install -y dataset-fashion-mnist" in msg
  assert "data.dir=" in msg and "tfds" in msg
  (tmp_path / "half").mkdir()  # folder present, files missing
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
    load_dataset("mnist", data_dir=str(tmp_path / "half"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="svhn"), "Unknown dataset 'svhn'; use one of"),
    (dict(name="digits", source="web"), "Unknown data source 'web'"),
    (dict(name="digits", source="tfds"), "cannot be loaded from source"),
    (dict(name="cifar10", source="idx"), "cannot be loaded from source"),
    (dict(name="mnist", source="idx"), "mnist has no default IDX folder"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match) as e:
    load_dataset(**kwargs)
  if "Unknown dataset" in match:
    assert all(d in str(e.value) for d in DATASETS)
  if "Unknown data source" in match:
    assert all(s in str(e.value) for s in SOURCES)


def test_tfds_import_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match=r"pip install 'fedjax-gen\[tfds\]'"):
    load_dataset("cifar10")


@pytest.mark.parametrize("name, shape, num_classes", [
    ("cifar10", (32, 32, 3), 10),
    ("cifar100", (32, 32, 3), 100),
    ("emnist", (28, 28, 1), 47),
    ("fashion_mnist", (28, 28, 1), 10),
    ("mnist", (28, 28, 1), 10),
])
def test_tfds_mock(name, shape, num_classes):
  # mock_data patches tfds.data_source's ArrayRecord reader with random
  # examples generated from the builder's feature spec (no download, no TF).
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=20):
    ds = load_dataset(name, source="tfds")
  check_dataset(ds, shape, num_classes)
  assert len(ds.x_train) == len(ds.x_test) == 20
  assert ds.name == name and ds.x_train.std() > 0  # random pixels
  if name == "fashion_mnist":
    assert ds.class_names[0] == "T-shirt/top"
  if name == "emnist":
    assert ds.class_names[10] == "A" and ds.class_names[-1] == "t"
