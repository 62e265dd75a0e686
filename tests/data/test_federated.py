"""Tests for fedjax_gen.data.federated."""

import numpy as np
import pytest

from fedjax_gen.data import PARTITIONS, load_dataset
from fedjax_gen.data.federated import (ClientArrays, make_federated_data,
                                       stack_clients)
from fedjax_gen.data.partition import partition


def test_stack_clients():
  x = np.arange(10 * 2 * 2, dtype=np.float64).reshape(10, 2, 2, 1) + 1
  y = np.arange(10) % 3
  idx = [np.array([4, 1, 7]), np.array([0]), np.array([], np.int64)]
  out = stack_clients(x, y, idx)
  assert isinstance(out, ClientArrays)
  assert out.x.shape == (3, 3, 2, 2, 1) and out.x.dtype == np.float32
  assert out.y.shape == (3, 3) and out.y.dtype == np.int32
  assert out.count.tolist() == [3, 1, 0] and out.count.dtype == np.int32
  np.testing.assert_array_equal(out.x[0], x[[4, 1, 7]])  # index order kept
  np.testing.assert_array_equal(out.y[0], y[[4, 1, 7]])
  assert (out.x[1, 1:] == 0).all() and (out.y[1, 1:] == 0).all()
  assert (out.x[2] == 0).all()
  padded = stack_clients(x, y, idx, pad_to=5)
  assert padded.x.shape[1] == padded.y.shape[1] == 5
  np.testing.assert_array_equal(padded.x[:, :3], out.x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(pad_to=2), "pad_to=2 is smaller than the largest client"),
    (dict(indices=[np.array([10])]), r"outside \[0, 10\)"),
    (dict(indices=[]), "indices is empty"),
    (dict(y=np.zeros(9)), "same length"),
])
def test_stack_clients_errors(kwargs, match):
  args = dict(x=np.zeros((10, 2)), y=np.zeros(10),
              indices=[np.array([0, 1, 2])])
  args.update(kwargs)
  pad_to = args.pop("pad_to", None)
  with pytest.raises(ValueError, match=match):
    stack_clients(args["x"], args["y"], args["indices"], pad_to=pad_to)


@pytest.fixture(scope="module")
def digits():
  return load_dataset("digits")


@pytest.mark.parametrize("method", PARTITIONS)
def test_make_federated_data(digits, method):
  fd = make_federated_data(digits, num_clients=8, partition=method, seed=0,
                           alpha=0.5, test_fraction=0.25)
  parts = partition(digits.y_train, 8, method, seed=0)
  n_tr, n_te = fd.train.count, fd.test.count
  assert fd.train.x.shape == (8, n_tr.max(), 8, 8, 1)
  assert fd.test.x.shape == (8, n_te.max(), 8, 8, 1)
  assert (n_tr + n_te).tolist() == [len(p) for p in parts]
  assert (n_te >= 1).all() and (n_tr >= 1).all()
  # Local train + test of each client: disjoint and exactly its partition.
  # Recover rows by matching images (digits images identify examples).
  flat = digits.x_train.reshape(len(digits.x_train), -1)
  for c, p in enumerate(parts):
    rows = np.concatenate([fd.train.x[c, :n_tr[c]], fd.test.x[c, :n_te[c]]])
    labels = np.concatenate([fd.train.y[c, :n_tr[c]], fd.test.y[c, :n_te[c]]])
    assert len(rows) == len(p)
    np.testing.assert_array_equal(np.sort(labels), np.sort(digits.y_train[p]))
    sub = flat[p]
    key = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))
    assert key(rows) == key(sub)
  assert fd.label_counts.shape == (8, 10)
  assert fd.label_counts.sum(1).tolist() == n_tr.tolist()
  assert fd.global_test_x is digits.x_test and fd.num_classes == 10
  again = make_federated_data(digits, num_clients=8, partition=method, seed=0)
  np.testing.assert_array_equal(again.train.x, fd.train.x)
  np.testing.assert_array_equal(again.test.y, fd.test.y)


def test_make_federated_data_indices_disjoint(digits):
  """Checks the index-level split via the same calls make_federated_data uses."""
  from fedjax_gen.data.federated import local_split_seed
  from fedjax_gen.data.partition import split_local
  parts = partition(digits.y_train, 5, "dirichlet", seed=3)
  train, test = split_local(parts, test_fraction=0.25,
                            seed=local_split_seed(3))
  fd = make_federated_data(digits, num_clients=5, partition="dirichlet",
                           seed=3)
  for c, (p, a, b) in enumerate(zip(parts, train, test)):
    assert np.intersect1d(a, b).size == 0
    np.testing.assert_array_equal(np.union1d(a, b), p)
    np.testing.assert_array_equal(fd.train.y[c, :len(a)], digits.y_train[a])
    np.testing.assert_array_equal(fd.test.x[c, :len(b)], digits.x_train[b])
