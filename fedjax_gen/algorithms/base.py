"""Pieces every algorithm shares: plain local SGD, server optimizer steps, tree maths.

The algorithm protocol itself (`FederatedAlgorithm`, `Adaptation`, `Batch`) lives in
`fedjax_gen.types`, below the engine that runs it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_gen.types import (Adaptation, Batch, FederatedAlgorithm, LossFn, Params,
                              PyTree)

__all__ = ["Adaptation", "Batch", "FederatedAlgorithm", "LossFn", "LocalState", "Params",
           "PyTree", "ServerState", "apply_server_opt", "local_init", "local_step",
           "no_client_state", "tree_sq_norm", "tree_sub", "weighted_mean"]


class ServerState(NamedTuple):
  params: Params             # global model, no client axis
  opt_state: optax.OptState  # server optimizer state (optax), same tree as params' moments


class LocalState(NamedTuple):
  """Carry of plain local SGD: the local model, its optimizer state, steps taken."""
  params: Params
  opt_state: optax.OptState
  steps: jax.Array  # int32 [], local steps actually taken (padded steps excluded)


def no_client_state(params: Params) -> tuple:
  del params
  return ()


def local_init(client_opt: optax.GradientTransformation, params: Params) -> LocalState:
  return LocalState(params, client_opt.init(params), jnp.zeros((), jnp.int32))


def local_step(loss_fn: LossFn, client_opt: optax.GradientTransformation,
               carry: LocalState, batch: Batch, trainable: PyTree = None
               ) -> tuple[LocalState, jax.Array]:
  """One optimizer step on `loss_fn`.

  Args:
    trainable: optional pytree of booleans (Python or traced scalars) over the params:
      frozen leaves get zero gradient and keep their value exactly (so neither momentum
      nor weight decay moves them).
  """
  loss, grads = jax.value_and_grad(loss_fn)(carry.params, batch)
  if trainable is not None:
    grads = jax.tree.map(lambda t, g: jnp.where(t, g, 0), trainable, grads)
  updates, opt_state = client_opt.update(grads, carry.opt_state, carry.params)
  params = optax.apply_updates(carry.params, updates)
  if trainable is not None:
    params = jax.tree.map(lambda t, n, o: jnp.where(t, n, o), trainable, params, carry.params)
  return LocalState(params, opt_state, carry.steps + 1), loss


def weighted_mean(tree: PyTree, weights: jax.Array) -> PyTree:
  """Mean over the leading client axis of every leaf, with `weights` [m] summing to 1."""
  return jax.tree.map(lambda x: jnp.tensordot(weights, x, axes=1).astype(x.dtype), tree)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
  return jax.tree.map(jnp.subtract, a, b)


def tree_sq_norm(tree: PyTree) -> jax.Array:
  return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def apply_server_opt(server_opt: optax.GradientTransformation, state: ServerState,
                     pseudo_grad: Params) -> ServerState:
  """Server step on the aggregated pseudo-gradient `global - local` (Reddi et al. 2021)."""
  updates, opt_state = server_opt.update(pseudo_grad, state.opt_state, state.params)
  return state._replace(params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state)
