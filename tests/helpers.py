"""Tiny federated problems whose numbers can be checked by hand."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedjax_gen.data import ClientArrays
from fedjax_gen.engine import masked_cross_entropy


class Linear(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, name="head")(x.reshape(x.shape[0], -1))


def linear_problem(counts=(5, 3, 8), max_n=8, seed=0):
  """Clients with `counts` examples of 4 features and 3 classes, padded to `max_n`."""
  rng = np.random.default_rng(seed)
  c = len(counts)
  x = np.zeros((c, max_n, 4), np.float32)
  y = np.zeros((c, max_n), np.int32)
  for i, n in enumerate(counts):
    x[i, :n] = rng.normal(size=(n, 4))
    y[i, :n] = rng.integers(0, 3, n)
  model = Linear()
  apply_fn = lambda p, xb: model.apply({"params": p}, xb)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 4)))["params"]
  return ClientArrays(x, y, np.asarray(counts, np.int32)), apply_fn, params, \
      masked_cross_entropy(apply_fn)


def assert_trees_close(a, b, atol=1e-5, rtol=1e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol)


class NormNet(nn.Module):
  """body -> LayerNorm ("norm") -> head: a model with a normalisation layer, for FedBN."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(5, name="body")(x.reshape(x.shape[0], -1))
    x = nn.LayerNorm(name="norm")(x)
    return nn.Dense(3, name="head")(nn.relu(x))


def normnet_problem(counts=(5, 3, 8), max_n=8, seed=0):
  train, _, _, _ = linear_problem(counts, max_n, seed)
  model = NormNet()
  apply_fn = lambda p, xb: model.apply({"params": p}, xb)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 4)))["params"]
  return train, apply_fn, params, masked_cross_entropy(apply_fn)
