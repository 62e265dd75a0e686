"""The shape every federated algorithm takes: a `FederatedAlgorithm` of pure functions.

An algorithm is written for ONE client (Equinox style); the engine `vmap`s the client
functions over a chunk of sampled clients and runs the local steps (batching, masking
of padded steps, unrolled or scanned loops). Names follow FedJAX's vocabulary:

    server_init(params)                         -> server_state
    client_state_init(params)                   -> client_state   (persistent, one client)
    client_init(server_state, client_state, key) -> carry          (start of local training)
    client_step(server_state, carry, batch)     -> (carry, loss)  (one local step)
    client_final(server_state, client_state, carry) -> (upload, client_state)
    server_update(server_state, uploads, weights) -> server_state  (uploads stacked [m, ...])
    eval_params(server_state, client_state)     -> params a client evaluates with
                                                   (None: everyone uses the global model)

All states are pytrees (NamedTuples), so `jit`, `vmap` and checkpointing need no special
cases. A server state always has a `params` field: the global model.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

Params = Any
PyTree = Any


class Batch(NamedTuple):
  """One local minibatch; `mask` marks real (not padded) examples."""
  x: jax.Array     # [batch, *example_shape]
  y: jax.Array     # [batch] int32
  mask: jax.Array  # [batch] bool


LossFn = Callable[[Params, Batch], jax.Array]  # masked mean loss, a scalar


class FederatedAlgorithm(NamedTuple):
  server_init: Callable[[Params], PyTree]
  client_state_init: Callable[[Params], PyTree]
  client_init: Callable[[PyTree, PyTree, jax.Array], PyTree]
  client_step: Callable[[PyTree, PyTree, Batch], tuple[PyTree, jax.Array]]
  client_final: Callable[[PyTree, PyTree, PyTree], tuple[PyTree, PyTree]]
  server_update: Callable[[PyTree, PyTree, jax.Array], PyTree]
  eval_params: Optional[Callable[[PyTree, PyTree], Params]] = None


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
               carry: LocalState, batch: Batch) -> tuple[LocalState, jax.Array]:
  """One optimizer step on `loss_fn`."""
  loss, grads = jax.value_and_grad(loss_fn)(carry.params, batch)
  updates, opt_state = client_opt.update(grads, carry.opt_state, carry.params)
  return LocalState(optax.apply_updates(carry.params, updates), opt_state,
                    carry.steps + 1), loss


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
