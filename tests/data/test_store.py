"""The host population store: the padded arrays `stack_clients` makes, without the padding;
saved and opened memory-mapped; files that do not match their index refused in one line."""

import json

import numpy as np
import pytest

from fedjax_gen.data import (PopulationStore, from_arrays, make_federated_data,
                             make_federated_store, power_law_population, power_law_sizes,
                             stack_clients)


def small(seed=0, n=50, sizes=(3, 0, 7, 1, 12)):
  rng = np.random.default_rng(seed)
  x = rng.random((n, 4, 3), np.float32)
  y = rng.integers(0, 5, n).astype(np.int32)
  idx = [rng.choice(n, s) for s in sizes]  # with repeats, unsorted, one client empty
  return x, y, idx


def one_line(excinfo) -> str:
  msg = str(excinfo.value)
  assert "\n" not in msg
  return msg


def test_gather_equals_stack_clients():
  x, y, idx = small()
  store = PopulationStore.from_indices(x, y, idx)
  assert store.num_clients == 5 and store.num_examples == 23 and store.max_size == 12
  np.testing.assert_array_equal(store.sizes, [3, 0, 7, 1, 12])
  padded = stack_clients(x, y, idx)
  got = store.to_arrays()
  for a, b in zip(got, padded):
    np.testing.assert_array_equal(a, b)
  ids = [4, 0, 2]
  some = store.gather(ids, pad_to=16)
  assert some.x.shape == (3, 16, 4, 3) and some.x.dtype == np.float32
  np.testing.assert_array_equal(some.x[:, :12], padded.x[ids])
  assert not some.x[:, 12:].any() and not some.y[:, 12:].any()
  np.testing.assert_array_equal(some.count, padded.count[ids])


def test_gather_flat_holds_the_clients_back_to_back():
  x, y, idx = small()
  store = PopulationStore.from_indices(x, y, idx)
  flat = store.gather_flat([2, 1, 4], total=32)
  assert flat.x.shape == (32, 4, 3)
  np.testing.assert_array_equal(flat.start, [0, 7, 7])
  np.testing.assert_array_equal(flat.count, [7, 0, 12])
  np.testing.assert_array_equal(flat.x[:7], x[idx[2]])
  np.testing.assert_array_equal(flat.y[7:19], y[idx[4]])
  assert not flat.x[19:].any()
  xs, ys = store.examples([4, 0], [11, 2])
  np.testing.assert_array_equal(xs, x[[idx[4][11], idx[0][2]]])
  np.testing.assert_array_equal(ys, y[[idx[4][11], idx[0][2]]])


def test_client_beyond_the_population_is_one_clear_line():
  store = PopulationStore.from_indices(*small())
  with pytest.raises(ValueError) as e:
    store.gather([0, 5])
  assert "client id 5 is outside this population of 5 clients" in one_line(e)
  with pytest.raises(ValueError, match="client id -1"):
    store.gather_flat([-1])
  with pytest.raises(ValueError, match="pad_to=4 is smaller than the largest"):
    store.gather([4], pad_to=4)


def test_save_and_open_memory_mapped(tmp_path):
  x, y, idx = small()
  store = PopulationStore.from_indices(x, y, idx)
  store.save(str(tmp_path / "pop"))
  meta = json.loads((tmp_path / "pop" / "index.json").read_text())
  assert meta["num_clients"] == 5 and meta["arrays"]["index"]["dtype"] == "<i4"
  opened = PopulationStore.open(str(tmp_path / "pop"))
  assert all(isinstance(getattr(opened, a), np.memmap) for a in ("x_base", "y_base", "index"))
  for a, b in zip(opened.gather([4, 1, 0], pad_to=12), store.gather([4, 1, 0], pad_to=12)):
    np.testing.assert_array_equal(a, b)
  read = PopulationStore.open(str(tmp_path / "pop"), mmap=False)
  assert not isinstance(read.x_base, np.memmap)
  np.testing.assert_array_equal(read.sizes, store.sizes)


def _saved(tmp_path):
  folder = tmp_path / "pop"
  PopulationStore.from_indices(*small()).save(str(folder))
  return folder


@pytest.mark.parametrize("damage, expect", [
    (lambda f: np.save(f / "offsets.npy", np.array([0, 3, 3, 10, 11], np.int64)),
     "offsets.npy holds <i8 [5] but index.json says <i8 [6]"),
    (lambda f: np.save(f / "index.npy", np.zeros(23, np.int64)),
     "index.npy holds <i8 [23] but index.json says <i4 [23]"),
    (lambda f: np.save(f / "offsets.npy", np.array([0, 3, 2, 10, 11, 23], np.int64)),
     "offsets must not decrease, but offsets[2]=2 < offsets[1]=3"),
    (lambda f: np.save(f / "offsets.npy", np.array([0, 3, 3, 10, 11, 22], np.int64)),
     "offsets must start at 0 and end at len(index)=23"),
    (lambda f: np.save(f / "index.npy", np.full(23, 50, np.int32)),
     "outside the base's 50 examples"),
    (lambda f: (f / "y_base.npy").unlink(), "y_base.npy is missing"),
    (lambda f: (f / "x_base.npy").write_bytes(b"not an npy file"), "x_base.npy is unreadable"),
    (lambda f: (f / "index.json").unlink(), "no index.json: not a population store"),
    (lambda f: (f / "index.json").write_text("{"), "index.json is unreadable"),
], ids=["shape", "dtype", "decreasing", "end", "bounds", "missing", "garbage", "no-index",
        "bad-json"])
def test_open_rejects_files_that_do_not_match(tmp_path, damage, expect):
  folder = _saved(tmp_path)
  damage(folder)
  with pytest.raises(ValueError) as e:
    PopulationStore.open(str(folder))
  msg = one_line(e)
  assert expect in msg and str(folder) in msg


def test_power_law_population_is_seeded_and_heavy_tailed():
  sizes = power_law_sizes(20000, seed=3)
  assert 18 <= np.median(sizes) <= 22 and sizes.max() == 2000 and sizes.min() >= 1
  assert 55 <= sizes.mean() <= 70
  np.testing.assert_array_equal(sizes, power_law_sizes(20000, seed=3))
  base_x, base_y = np.zeros((100, 2), np.float32), np.arange(100) % 7
  a = power_law_population(base_x, base_y, 300, seed=1)
  b = power_law_population(base_x, base_y, 300, seed=1)
  np.testing.assert_array_equal(a.index, b.index)
  np.testing.assert_array_equal(a.sizes, power_law_sizes(300, seed=1))
  assert a.index.dtype == np.int32 and a.index.max() < 100


def test_make_federated_store_is_make_federated_data_unpadded():
  rng = np.random.default_rng(0)
  ds = from_arrays(rng.random((300, 5, 5, 1), np.float32), rng.integers(0, 4, 300),
                   rng.random((40, 5, 5, 1), np.float32), rng.integers(0, 4, 40))
  kw = dict(num_clients=6, partition="dirichlet", seed=2, alpha=0.5, min_client_size=5)
  padded, stored = make_federated_data(ds, **kw), make_federated_store(ds, **kw)
  assert isinstance(stored.train, PopulationStore)
  for a, b in zip(stored.train.to_arrays(), padded.train):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(stored.test, padded.test):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(stored.label_counts, padded.label_counts)
  assert stored.train.padded_bytes() == padded.train.x.nbytes + padded.train.y.nbytes \
      + padded.train.count.nbytes
