"""Splitting a model's parameters into named parts (body/head, normalisation layers).

A part is a boolean pytree with the structure of the params: True where a leaf belongs
to the part. Personalized methods keep one part on the client (FedPer, FedRep: the head;
FedBN: normalisation layers) and average the rest.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from fedjax_gen.algorithms.base import Params, PyTree


def _path_names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def layer_mask(params: Params, layers: Sequence[str]) -> PyTree:
  """True for leaves under a top-level layer named in `layers`; clear error otherwise.

  Raises:
    ValueError: a named layer is missing, or the split leaves one side empty.
  """
  top = sorted(params.keys())
  missing = [name for name in layers if name not in top]
  if missing:
    raise ValueError(f"The model has no layer(s) {missing}; its top-level layers are "
                     f"{top}. Name some of those (e.g. personal_layers=head).")
  mask = jax.tree_util.tree_map_with_path(lambda p, _: _path_names(p)[0] in layers, params)
  _check_split(mask, f"layers {list(layers)}")
  return mask


def norm_mask(params: Params) -> PyTree:
  """True for the parameters of normalisation layers (any path part containing "norm")."""
  mask = jax.tree_util.tree_map_with_path(
      lambda p, _: any("norm" in n.lower() for n in _path_names(p)), params)
  if not any(jax.tree.leaves(mask)):
    return mask  # a model without normalisation layers: FedBN is FedAvg (documented)
  _check_split(mask, "normalisation layers")
  return mask


def _check_split(mask: PyTree, what: str) -> None:
  leaves = jax.tree.leaves(mask)
  if all(leaves):
    raise ValueError(f"Splitting by {what} leaves nothing shared: every parameter is in "
                     "the personal part. Name fewer layers.")
  if not any(leaves):
    raise ValueError(f"Splitting by {what} leaves the personal part empty.")


def select(mask: PyTree, a: PyTree, b: PyTree) -> PyTree:
  """Leaves of `a` where `mask` is True, of `b` elsewhere."""
  return jax.tree.map(lambda m, x, y: x if m else y, mask, a, b)


def zero_where(mask: PyTree, tree: PyTree) -> PyTree:
  """`tree` with the leaves under `mask` set to zero (e.g. a personal part of a delta)."""
  return jax.tree.map(lambda m, x: jnp.zeros_like(x) if m else x, mask, tree)
