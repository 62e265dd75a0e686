"""Centralised image-classification datasets as plain numpy arrays.

Every loader returns a :class:`Dataset` with images ``[N, H, W, C]`` float32
in ``[0, 1]`` and labels ``[N]`` int32. Sources:

* ``digits``: scikit-learn's bundled 8x8 digits (no download). It has no test
  split, so a deterministic stratified 75/25 train/test split (seed 0) is made.
* ``fashion_mnist`` / ``mnist``: IDX files (``source="idx"``), gzipped or
  plain, e.g. from the Debian package ``dataset-fashion-mnist``; or TFDS.
* ``cifar10``, ``cifar100``, ``emnist``: TensorFlow Datasets through
  ``tfds.data_source`` (ArrayRecord, works without TensorFlow). ``emnist`` is
  the TFDS config ``emnist/balanced`` (47 classes); its images are transposed
  back to the upright orientation.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import NamedTuple

import numpy as np

DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "emnist")
SOURCES = ("auto", "sklearn", "idx", "tfds")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# EMNIST "balanced" label i -> character (digits, upper case, 11 lower case).
EMNIST_BALANCED_CLASSES = tuple(
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4",
               0x0D: ">f4", 0x0E: ">f8"}


class Dataset(NamedTuple):
  """A centralised train/test dataset (images in [0, 1], int32 labels)."""
  name: str
  x_train: np.ndarray  # [N, H, W, C] float32 in [0, 1]
  y_train: np.ndarray  # [N] int32
  x_test: np.ndarray  # [M, H, W, C] float32 in [0, 1]
  y_test: np.ndarray  # [M] int32
  num_classes: int
  class_names: tuple[str, ...]


def _tfds_name(name: str) -> str:
  """Returns the TFDS builder name (with config) used for dataset `name`."""
  return {"emnist": "emnist/balanced"}.get(name, name)


def load_dataset(name: str, *, data_dir: str | None = None,
                 source: str = "auto") -> Dataset:
  """Loads a dataset by name.

  Args:
    name: one of `DATASETS`.
    data_dir: folder with the IDX files (``source="idx"``) or the TFDS data
      dir (``source="tfds"``; None means TFDS's default). For fashion_mnist
      with the IDX source it defaults to `FASHION_MNIST_DIR`.
    source: one of `SOURCES`. "auto" picks sklearn for digits, idx for
      fashion_mnist, idx for mnist when `data_dir` is given (else tfds), and
      tfds for the rest.

  Returns:
    The `Dataset`.

  Raises:
    ValueError: unknown name or source, or a source the dataset lacks.
    FileNotFoundError: missing IDX folder or file.
    ImportError: tensorflow-datasets is needed but not installed.
  """
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; use one of {DATASETS}.")
  if source not in SOURCES:
    raise ValueError(f"Unknown data source {source!r}; use one of {SOURCES}.")
  if source == "auto":
    source = {"digits": "sklearn", "fashion_mnist": "idx",
              "mnist": "idx" if data_dir else "tfds"}.get(name, "tfds")
  valid = {"digits": ("sklearn",), "fashion_mnist": ("idx", "tfds"),
           "mnist": ("idx", "tfds")}.get(name, ("tfds",))
  if source not in valid:
    raise ValueError(f"Dataset {name!r} cannot be loaded from source "
                     f"{source!r}; use source='auto' or one of {valid}.")
  if source == "sklearn":
    return _load_digits()
  if source == "idx":
    if data_dir is None and name == "mnist":
      raise ValueError("mnist has no default IDX folder: pass data.dir=<folder "
                       "with the four MNIST IDX files>, or use data.source=tfds.")
    return _load_idx(name, data_dir or FASHION_MNIST_DIR)
  return _load_tfds(name, data_dir)


def _load_digits() -> Dataset:
  """sklearn digits, 8x8x1 scaled by 1/16, stratified 75/25 split (seed 0)."""
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split
  digits = load_digits()
  x = (digits.images[..., None] / 16.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  x_tr, x_te, y_tr, y_te = train_test_split(
      x, y, test_size=0.25, stratify=y, random_state=0)
  return Dataset("digits", x_tr, y_tr, x_te, y_te, 10,
                 tuple(str(i) for i in range(10)))


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (gzipped when the name ends in .gz) into an array.

  Args:
    path: file path.

  Returns:
    The array, with the shape and dtype stored in the header (native order).

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is not a valid IDX file.
  """
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise ValueError(f"{path} is truncated or corrupt ({e}); re-download or reinstall "
                     "it.") from None
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{path} is not an IDX file (bad magic number "
                     f"{raw[:4].hex()}); re-download or reinstall it.")
  ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
  dims = np.frombuffer(raw, ">i4", count=ndim, offset=4).astype(np.int64)
  offset = 4 + 4 * ndim
  if len(raw) - offset != int(np.prod(dims)) * dtype.itemsize:
    raise ValueError(f"{path} is truncated or corrupt: header says shape "
                     f"{tuple(dims)} but the payload has {len(raw) - offset} "
                     "bytes; re-download or reinstall it.")
  data = np.frombuffer(raw, dtype, offset=offset).reshape(dims)
  return data.astype(dtype.newbyteorder("="))


def _idx_path(data_dir: str, stem: str, name: str) -> str:
  """Finds `stem` (.gz or plain) in `data_dir`, raising a helpful error."""
  for path in (os.path.join(data_dir, stem + ".gz"),
               os.path.join(data_dir, stem)):
    if os.path.isfile(path):
      return path
  missing = (f"folder {data_dir} does not exist" if not os.path.isdir(data_dir) else
             f"{data_dir} has neither {stem}.gz nor {stem}")
  hint = ("install it with `apt-get install -y dataset-fashion-mnist`, "
          if name == "fashion_mnist" else "")
  raise FileNotFoundError(
      f"{name} IDX files not found: {missing}. Fix: {hint}pass "
      "data.dir=<folder with the four IDX files> (data_dir= in Python), or use "
      "data.source=tfds when online.")


def _load_idx(name: str, data_dir: str) -> Dataset:
  """Loads MNIST-format IDX files from `data_dir`."""
  x_tr, y_tr, x_te, y_te = (read_idx(_idx_path(data_dir, s, name))
                            for s in _IDX_FILES)
  for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
      raise ValueError(f"{name} IDX {split} files in {data_dir} have shapes "
                       f"{x.shape} and {y.shape}; expected [N, H, W] images "
                       "and [N] labels. Check data_dir.")
  names = (FASHION_MNIST_CLASSES if name == "fashion_mnist"
           else tuple(str(i) for i in range(10)))
  scale = lambda a: (a[..., None].astype(np.float32) / 255.0)
  return Dataset(name, scale(x_tr), y_tr.astype(np.int32), scale(x_te),
                 y_te.astype(np.int32), 10, names)


def _import_tfds():
  """Imports tensorflow_datasets lazily, with an install hint."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("This dataset needs tensorflow-datasets: "
                      "pip install 'fedjax-gen[tfds]'") from e
  return tfds


def _source_to_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
  """Reads every example of a TFDS data source into (uint8 images, labels).

  Examples are read one by one with ``ds[i]``; the batched ``__getitems__``
  is avoided because ``tfds.testing.mock_data`` (tfds 4.9.x) breaks it.
  """
  n = len(ds)
  if n == 0:
    raise ValueError(f"TFDS data source {ds!r} is empty; re-prepare the "
                     "dataset or check data_dir.")
  first = np.asarray(ds[0]["image"])
  x = np.empty((n, *first.shape), first.dtype)
  y = np.empty((n,), np.int32)
  for i in range(n):
    ex = ds[i]
    x[i], y[i] = ex["image"], ex["label"]
  return x, y


def _load_tfds(name: str, data_dir: str | None) -> Dataset:
  """Loads `name` via `tfds.data_source` (no TensorFlow needed)."""
  tfds = _import_tfds()
  tfds_name = _tfds_name(name)
  arrays, info = [], None
  for split in ("train", "test"):
    try:
      ds = tfds.data_source(tfds_name, split=split, data_dir=data_dir)
    except Exception as e:  # download/prepare failures of many kinds
      raise RuntimeError(
          f"Could not load TFDS dataset {tfds_name!r} split {split!r} "
          f"(data_dir={data_dir!r}): {e}. Fix: run once online so TFDS can "
          "download and prepare it, or pass data.dir=<a TFDS data dir where "
          "it is prepared>.") from e
    x, y = _source_to_arrays(ds)
    if x.ndim == 3:  # [N, H, W] -> [N, H, W, 1]
      x = x[..., None]
    if name == "emnist":  # TFDS keeps EMNIST's transposed orientation
      x = np.swapaxes(x, 1, 2)
    xf = x.astype(np.float32)
    xf /= 255.0
    arrays += [xf, y]
    info = ds.dataset_info
  label = info.features["label"]
  num_classes = int(label.num_classes)
  names = tuple(label.names or ())
  if name == "emnist" and num_classes == len(EMNIST_BALANCED_CLASSES):
    names = EMNIST_BALANCED_CLASSES
  if len(names) != num_classes:
    names = tuple(str(i) for i in range(num_classes))
  return Dataset(name, *arrays, num_classes, names)


def from_arrays(x_train, y_train, x_test, y_test, *, name: str = "custom") -> Dataset:
  """A user's dataset from NumPy arrays: examples `[N, *example_shape]` (cast to float32),
  integer labels `[N]` in [0, num_classes); num_classes is the largest label + 1."""
  x_train, x_test = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
  y_train, y_test = np.asarray(y_train), np.asarray(y_test)
  for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
    if y.ndim != 1 or len(x) != len(y) or not len(y):
      raise ValueError(f"dataset {split} split: expected examples [N, ...] and labels [N] "
                       f"with N > 0, got {x.shape} and {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
      raise ValueError(f"dataset {split} labels must be integers >= 0 (class indices), got "
                       f"dtype {y.dtype}, min {y.min()}.")
  if x_train.shape[1:] != x_test.shape[1:]:
    raise ValueError(f"dataset train and test examples differ in shape: "
                     f"{x_train.shape[1:]} vs {x_test.shape[1:]}.")
  num_classes = int(max(y_train.max(), y_test.max())) + 1
  return Dataset(name, x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32),
                 num_classes, tuple(str(i) for i in range(num_classes)))
