"""Synthetic data is appended, never replacing real data; one cached generation call;
incompatible generators and bad arguments fail before anything is generated."""

import numpy as np
import pytest

from fedjax_gen import config as config_lib
from fedjax_gen.data import ClientArrays, FederatedData, stack_clients
from fedjax_gen.augment import (augment_clients, fill_counts, gen_fedsd_data, genfl_data,
                                share_indices)
from fedjax_gen.trainer.generation import prepare
from tests.augment.fakes import ConstantGenerator, RaisingGenerator

# Three clients over 3 classes, 2x2x1 images whose pixels encode a unique example id.
LABELS = [np.array([0, 0, 0, 1]), np.array([2]), np.array([1, 1, 2, 2, 0])]


def tiny_fed() -> FederatedData:
  y = np.concatenate(LABELS).astype(np.int32)
  x = np.broadcast_to((10.0 + np.arange(len(y)))[:, None, None, None],
                      (len(y), 2, 2, 1)).astype(np.float32)
  ends = np.cumsum([len(l) for l in LABELS])
  idx = [np.arange(e - len(l), e) for l, e in zip(LABELS, ends)]
  train = stack_clients(x, y, idx, pad_to=6)
  counts = np.stack([np.bincount(l, minlength=3) for l in LABELS])
  return FederatedData(train, stack_clients(x, y, idx), x, y, 3, ("a", "b", "c"), counts)


def assert_real_data_kept(before: ClientArrays, after: ClientArrays, marker):
  for k, n in enumerate(before.count):
    np.testing.assert_array_equal(after.x[k, :n], before.x[k, :n])
    np.testing.assert_array_equal(after.y[k, :n], before.y[k, :n])
    assert not marker[k, :n].any()
    assert marker[k, n:after.count[k]].all() and not marker[k, after.count[k]:].any()
    assert not after.x[k, after.count[k]:].any()  # padding stays zero


def test_augment_appends_after_real_examples():
  fed = tiny_fed()
  extra_x = np.full((4, 2, 2, 1), -1.0, np.float32) * np.arange(1, 5)[:, None, None, None]
  extra_y = np.array([2, 1, 0, 1], np.int32)
  train, marker = augment_clients(fed.train, extra_x, extra_y,
                                  [np.array([3, 0]), np.array([], int), np.array([1, 2, 3])])
  np.testing.assert_array_equal(train.count, [6, 1, 8])
  assert train.x.shape == (3, 8, 2, 2, 1) and marker.shape == (3, 8)
  assert_real_data_kept(fed.train, train, marker)
  np.testing.assert_array_equal(train.y[0, 4:6], [1, 2])
  np.testing.assert_array_equal(train.x[2, 5:8, 0, 0, 0], [-2, -3, -4])
  np.testing.assert_array_equal(marker.sum(1), [2, 0, 3])


def test_gen_fedsd_one_cached_call_fills_the_gaps(tmp_path):
  fed, gen = tiny_fed(), ConstantGenerator()
  aug = gen_fedsd_data(fed, gen, "max", seed=3, cache_dir=str(tmp_path))
  need = fill_counts(fed.label_counts)
  np.testing.assert_array_equal(need, [[0, 2, 3], [1, 1, 0], [1, 0, 0]])
  assert len(gen.calls) == 1
  np.testing.assert_array_equal(gen.calls[0], [1, 1, 2, 2, 2, 0, 1, 0])  # client-major
  np.testing.assert_array_equal(aug.synthetic_per_client, need.sum(1))
  assert_real_data_kept(fed.train, aug.fed.train, aug.is_synthetic)
  np.testing.assert_array_equal(aug.fed.train.count, fed.train.count + need.sum(1))
  np.testing.assert_array_equal(aug.fed.label_counts, fed.label_counts + need)
  for k in range(3):  # every synthetic image shows its own label
    sl = aug.is_synthetic[k]
    np.testing.assert_allclose(aug.fed.train.x[k][sl][:, 0, 0, 0],
                               (aug.fed.train.y[k][sl] + 1) / 4.0)
  np.testing.assert_array_equal(aug.fed.test.x, fed.test.x)  # local test data untouched
  again = gen_fedsd_data(fed, gen, "max", seed=3, cache_dir=str(tmp_path))
  assert len(gen.calls) == 1  # served from the cache
  np.testing.assert_array_equal(again.fed.train.x, aug.fed.train.x)


def test_genfl_server_shares_are_subsets_and_clients_draw_fresh(tmp_path):
  fed = tiny_fed()
  gen = ConstantGenerator()
  aug = genfl_data(fed, gen, per_class=4, share=0.5, generator_on="server", seed=1,
                   cache_dir=str(tmp_path / "s"))
  assert len(gen.calls) == 1
  np.testing.assert_array_equal(aug.server_y, np.repeat([0, 1, 2], 4))
  shares = share_indices(12, 3, 0.5, 1)
  np.testing.assert_array_equal(aug.synthetic_per_client, [6, 6, 6])
  assert_real_data_kept(fed.train, aug.fed.train, aug.is_synthetic)
  for k, idx in enumerate(shares):
    n = fed.train.count[k]
    np.testing.assert_array_equal(aug.fed.train.y[k, n:n + 6], aug.server_y[idx])
    np.testing.assert_array_equal(aug.fed.train.x[k, n:n + 6], aug.server_x[idx])
  assert not all(np.array_equal(shares[0], s) for s in shares[1:])  # own subsets
  np.testing.assert_array_equal(share_indices(12, 3, 0.5, 1)[2], shares[2])  # seeded

  gen_c = ConstantGenerator()
  on_clients = genfl_data(fed, gen_c, per_class=4, share=0.5, generator_on="clients",
                          seed=1, cache_dir=str(tmp_path / "c"))
  assert len(gen_c.calls) == 2  # the server's set, then all clients' shares in one call
  np.testing.assert_array_equal(gen_c.calls[1], np.concatenate([aug.server_y[i]
                                                                for i in shares]))
  np.testing.assert_array_equal(on_clients.fed.train.y, aug.fed.train.y)

  baseline = genfl_data(fed, ConstantGenerator(), per_class=4, share=0.5, seed=1,
                        cache_dir=None, augment=False)
  np.testing.assert_array_equal(baseline.synthetic_per_client, [0, 0, 0])
  np.testing.assert_array_equal(baseline.fed.train.count, fed.train.count)
  assert len(baseline.server_y) == 12


@pytest.mark.parametrize("shape, classes, message", [
    ((4, 4, 1), 3, r"shape \(4, 4, 1\) but the dataset's are \(2, 2, 1\)"),
    ((2, 2, 3), 3, r"shape \(2, 2, 3\)"),
    ((2, 2, 1), 10, "knows 10 classes but the dataset has 3"),
])
def test_incompatible_generator_fails_before_generating(tmp_path, shape, classes, message):
  fed = tiny_fed()
  gen = RaisingGenerator(shape, classes)
  with pytest.raises(ValueError, match=message):
    gen_fedsd_data(fed, gen, "max", cache_dir=str(tmp_path))
  with pytest.raises(ValueError, match=message):
    genfl_data(fed, gen, per_class=2, share=0.5, cache_dir=str(tmp_path))
  config = config_lib.base_config()
  config.algorithm = "genfl"
  with pytest.raises(ValueError, match=message):
    prepare(config, fed, str(tmp_path), generator=gen)
  assert not (tmp_path / "generated").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(share=1.5), r"genfl.share must be in \[0, 1\]"),
    (dict(share=-0.1), r"genfl.share must be in \[0, 1\]"),
    (dict(generator_on="cloud"), "Unknown genfl.generator_on 'cloud'; valid: server, clients"),
    (dict(per_class=0), "genfl.synthetic_per_class must be >= 1"),
])
def test_genfl_bad_arguments_fail_before_generating(kwargs, message):
  args = dict(per_class=2, share=0.5, generator_on="server") | kwargs
  with pytest.raises(ValueError, match=message):
    genfl_data(tiny_fed(), RaisingGenerator(), **args)


def test_gen_fedsd_bad_budget_fails_before_generating():
  with pytest.raises(ValueError, match="budget must be a non-negative integer"):
    gen_fedsd_data(tiny_fed(), RaisingGenerator(), "budget", budget=-3)
  with pytest.raises(ValueError, match="Unknown fill rule 'most'"):
    gen_fedsd_data(tiny_fed(), RaisingGenerator(), "most")
