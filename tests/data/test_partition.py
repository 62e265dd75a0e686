"""Tests for fedjax_gen.data.partition."""

import os

import numpy as np
import pytest

from fedjax_gen.data.partition import (PARTITIONS, dirichlet, label_skew, pathological,
                                       format_label_counts, iid, label_counts,
                                       label_k, quantity, save_label_heatmap,
                                       shards, split_local)
from fedjax_gen.data.partition import partition as P

# 1000 examples, 10 balanced classes, in a shuffled order.
LABELS = np.random.default_rng(123).permutation(np.arange(1000) % 10)
N = len(LABELS)


def run(method, seed, labels=LABELS, clients=10):
  return P(labels, clients, method, seed=seed, alpha=0.5,
           classes_per_client=2, shards_per_client=2, min_client_size=10)


def check_disjoint(parts, n=N):
  flat = np.concatenate(parts)
  assert flat.dtype == np.int64
  assert len(np.unique(flat)) == len(flat)  # every index at most once
  assert flat.min() >= 0 and flat.max() < n
  for p in parts:
    assert p.size > 0 and np.all(np.diff(p) > 0)  # non-empty and sorted


@pytest.mark.parametrize("method", PARTITIONS)
def test_deterministic_disjoint(method):
  a, b, c = run(method, 0), run(method, 0), run(method, 1)
  assert len(a) == 10
  check_disjoint(a)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))
  if method != "label_k":
    assert sum(map(len, a)) == N  # all samples used


def test_iid_sizes():
  assert sorted(map(len, iid(LABELS, 7, seed=0))) == [142] + [143] * 6


def test_dirichlet_min_size_and_skew():
  parts = dirichlet(LABELS, 20, alpha=0.1, seed=3, min_client_size=20)
  assert min(map(len, parts)) >= 20
  counts = label_counts(LABELS, parts, 10)
  # Strong skew: most clients are dominated by few labels.
  assert np.median((counts > 0).sum(1)) < 10


def test_label_k():
  for k in (1, 2, 3):
    parts = label_k(LABELS, 10, k=k, seed=0)
    counts = label_counts(LABELS, parts, 10)
    assert ((counts > 0).sum(1) <= k).all()
    assert (counts[np.arange(10), np.arange(10)] > 0).all()  # own label i%K
  one = label_counts(LABELS, label_k(LABELS, 10, k=1, seed=0), 10)
  assert np.array_equal(one, np.diag(np.full(10, 100)))
  # A label held by c clients is split evenly (array_split) among them.
  parts = label_k(LABELS, 4, k=2, seed=5)
  counts = label_counts(LABELS, parts, 10)
  for c in range(10):
    held = counts[:, c][counts[:, c] > 0]
    assert held.size == 0 or held.max() - held.min() <= 1


def test_shards_sizes_and_labels():
  parts = shards(LABELS, 10, shards_per_client=2, seed=0)
  assert [len(p) for p in parts] == [2 * (N // 20)] * 10
  counts = label_counts(LABELS, parts, 10)
  assert ((counts > 0).sum(1) <= 2).all()  # 50-example shards are 1 label
  # N not divisible: N % num_shards examples are dropped, sizes stay equal.
  parts = shards(LABELS[:997], 6, shards_per_client=3, seed=0)
  assert [len(p) for p in parts] == [3 * (997 // 18)] * 6
  check_disjoint(parts, 997)


def test_quantity_min_size():
  parts = quantity(LABELS, 10, alpha=0.3, seed=0, min_client_size=15)
  assert min(map(len, parts)) >= 15
  assert len({len(p) for p in parts}) > 1  # unequal sizes


@pytest.mark.parametrize("call, match", [
    (lambda: dirichlet(LABELS, 5, alpha=0, seed=0), "alpha must be > 0"),
    (lambda: quantity(LABELS, 5, alpha=-1.0, seed=0), "alpha must be > 0"),
    (lambda: label_k(LABELS, 5, k=0, seed=0), r"k .* must be an integer in"),
    (lambda: label_k(LABELS, 5, k=11, seed=0), r"in \[1, 10\]"),
    (lambda: iid(LABELS, 0, seed=0), "num_clients must be an integer >= 1"),
    (lambda: iid(LABELS[:5], 6, seed=0), "exceeds the number of examples"),
    (lambda: label_k(LABELS[:30], 25, k=1, seed=0),
     r"left \d+ client\(s\) empty"),
    (lambda: shards(LABELS[:30], 10, shards_per_client=4, seed=0),
     "too few for 40 shards"),
    (lambda: P(LABELS, 5, "bogus", seed=0), "Unknown partition 'bogus'"),
    (lambda: split_local([np.arange(4)], test_fraction=1.0, seed=0),
     r"test_fraction must be in \[0, 1\)"),
    (lambda: split_local([np.arange(4)], test_fraction=-0.1, seed=0),
     r"test_fraction must be in \[0, 1\)"),
    (lambda: dirichlet(LABELS, 10, alpha=0.5, seed=0, min_client_size=200),
     "lower min_client_size"),
    (lambda: dirichlet(np.arange(60) % 4, 3, alpha=0.01, seed=0, min_client_size=20),
     "lower min_client_size, raise alpha, or lower num_clients"),
    (lambda: iid(LABELS.astype(float), 2, seed=0), "1-D integer array"),
])
def test_errors(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_unknown_partition_lists_valid():
  with pytest.raises(ValueError) as e:
    P(LABELS, 5, "nope", seed=0)
  assert all(m in str(e.value) for m in PARTITIONS)


def test_split_local():
  parts = [np.arange(0, 8), np.arange(8, 10), np.array([10]),
           np.arange(11, 111)]
  train, test = split_local(parts, test_fraction=0.25, seed=0)
  assert [len(t) for t in test] == [2, 1, 1, 25]
  assert [len(t) for t in train] == [6, 1, 0, 75]
  for p, a, b in zip(parts, train, test):
    assert np.array_equal(np.sort(np.concatenate([a, b])), p)
  again = split_local(parts, test_fraction=0.25, seed=0)
  assert all(np.array_equal(x, y) for x, y in zip(test, again[1]))
  train0, test0 = split_local(parts, test_fraction=0.0, seed=0)
  assert all(t.size == 0 for t in test0)
  assert all(np.array_equal(a, p) for a, p in zip(train0, parts))
  _, tiny = split_local([np.arange(4)], test_fraction=0.01, seed=0)
  assert len(tiny[0]) == 1  # test non-empty when test_fraction > 0
  big, _ = split_local([np.arange(2)], test_fraction=0.99, seed=0)
  assert len(big[0]) == 1  # >= 2 samples keep one train sample


def test_label_counts_and_table():
  parts = [np.array([0, 1, 2]), np.array([3])]
  labels = np.array([0, 0, 1, 2])
  counts = label_counts(labels, parts, 3)
  assert counts.tolist() == [[2, 1, 0], [0, 0, 1]]
  table = format_label_counts(counts, ["a", "b", "c"])
  lines = table.splitlines()
  assert lines[0].split() == ["client", "a", "b", "c", "total"]
  assert lines[2].split() == ["0", "2", "1", "0", "3"]
  assert lines[-1].split() == ["total", "2", "1", "1", "4"]
  with pytest.raises(ValueError, match="labels must lie in"):
    label_counts(labels, parts, 2)
  with pytest.raises(ValueError, match="one name per column"):
    format_label_counts(counts, ["a"])


def test_save_label_heatmap(tmp_path):
  counts = label_counts(LABELS, label_k(LABELS, 8, k=2, seed=0), 10)
  path = tmp_path / "sub" / "heat.png"
  save_label_heatmap(counts, str(path), class_names=list("abcdefghij"),
                     title="label_k k=2")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(path.parent) == ["heat.png"]  # no temp files left
  with pytest.raises(ValueError, match="non-empty"):
    save_label_heatmap(np.zeros(3), str(path))


def test_dirichlet_gives_up_early_when_no_draw_can_succeed():
  labels = np.repeat(np.arange(10), 100)  # 1,000 examples, 10 per client on average
  with pytest.raises(ValueError, match=r"cannot give every client >= 8 examples .* in 20 "
                                       r"draws .* out of reach; lower min_client_size, raise alpha"):
    dirichlet(labels, 100, alpha=0.1, seed=0, min_client_size=8)  # judged after 20, not 1,000


def test_pathological_deals_consecutive_classes_like_pfllib():
  labels = np.repeat(np.arange(10), 600)
  parts = pathological(labels, 20, k=2, seed=0, min_client_size=40)
  counts = label_counts(labels, parts, 10)
  for client in range(20):  # clients 4g..4g+3 hold classes 2g and 2g+1, nothing else
    g = client // 4
    assert set(np.flatnonzero(counts[client])) == {2 * g, 2 * g + 1}
  assert counts.sum() == len(labels) and len(np.unique(np.concatenate(parts))) == len(labels)
  # each class's first 3 holders draw from [max(150 / 10, 40 / 10), 150); the 4th: the rest
  for c in range(10):
    holders = counts[:, c][counts[:, c] > 0]
    assert len(holders) == 4 and all(15 <= n < 150 for n in holders[:3])
  assert not np.array_equal(counts, label_counts(
      labels, pathological(labels, 20, k=2, seed=1, min_client_size=40), 10))  # sizes drawn by seed
  with pytest.raises(ValueError, match=r"classes_per_client\) must be an integer in \[1, 10\]"):
    pathological(labels, 20, k=11, seed=0)


def test_label_skew_is_the_mean_total_variation_from_the_pooled_labels():
  # Pooled [1/2, 1/2]; each client is at distance 1/2 (all one class) or 1/4 (3:1).
  assert label_skew([[2, 0], [0, 2]]) == pytest.approx(0.5)
  assert label_skew([[3, 1], [1, 3]]) == pytest.approx(0.25)
  assert label_skew([[3, 1], [1, 3], [0, 0]]) == pytest.approx(0.25)  # empty: skipped
  assert label_skew(np.full((5, 10), 7)) == 0.0  # IID
  assert label_skew(np.eye(10) * 30) == pytest.approx(0.9)  # one class each of ten
  # Unweighted by size: pooled [1/2, 1/4, 1/4]; distances 1/2, 3/4, 3/4 -> mean 2/3.
  assert label_skew([[2, 0, 0], [0, 1, 0], [0, 0, 1]]) == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="counts must be"):
    label_skew([1, 2, 3])
