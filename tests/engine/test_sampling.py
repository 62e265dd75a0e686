"""Sampling a round's clients: large populations in O(m) (Floyd), the same law."""

import jax
import numpy as np

from fedjax_gen.engine import simulation


def test_floyd_draws_distinct_clients_uniformly():
  draws = np.asarray(jax.jit(jax.vmap(lambda k: simulation._floyd(k, 20, 5)))(
      jax.random.split(jax.random.key(1), 20000)))
  ordered = np.sort(draws, axis=1)
  assert (ordered[:, 1:] != ordered[:, :-1]).all() and draws.min() >= 0 and draws.max() < 20
  freq = np.bincount(draws.ravel(), minlength=20) / len(draws)
  assert np.abs(freq - 5 / 20).max() < 0.015  # 4 sigma of a binomial(20000, 0.25) share
  pairs = np.zeros((20, 20))  # every pair equally likely: C(18,3)/C(20,5) = 0.0526
  for row in ordered:
    pairs[np.ix_(row, row)] += 1
  off = pairs[~np.eye(20, dtype=bool)] / len(draws)
  assert np.abs(off - 5 * 4 / (20 * 19)).max() < 0.01


def test_large_populations_use_floyd_small_ones_keep_their_draws():
  key = jax.random.key(3)
  small = np.arange(1000, dtype=np.int32)
  ids, _ = simulation.sample_clients(small, key, 10)
  k_sample, _ = jax.random.split(key)
  assert (np.asarray(ids) == np.asarray(jax.random.choice(k_sample, 1000, (10,),
                                                          replace=False))).all()
  large = np.arange(simulation.FLOYD_FROM, dtype=np.int32) * 2
  ids, keys = simulation.sample_clients(large, key, 10)
  assert (np.asarray(ids) == 2 * np.asarray(simulation._floyd(k_sample, len(large), 10))).all()
  assert len(set(np.asarray(ids).tolist())) == 10 and keys.shape == (10,)
