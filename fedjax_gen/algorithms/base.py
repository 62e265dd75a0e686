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
    personalize, newcomer: optional `Adaptation`s: local steps a training client runs
      before evaluation (e.g. FedAvg+FT), and a held-out client's recipe to join.
    server_post(server_state, sampled_client_states) -> (server_state, sampled_client_states)
      optional server work after aggregation, run by the engine as a SECOND jitted
      computation of the round over the sampled clients' persistent states (stacked
      [m, ...]): pFedGPA trains its diffusion model there and writes each client's
      personalized parameters. Kept apart so its time can be measured on its own.

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
  """One local minibatch; `mask` marks real (not padded) examples.

  `step` and `num_steps` say where the step falls in the client's local run (for
  algorithms with phases, e.g. FedRep trains its head first). `key` is distinct per
  client, round and step (a diffusion loss draws its timesteps and noise from it).
  """
  x: jax.Array     # [batch, *example_shape]
  y: jax.Array     # [batch] int32
  mask: jax.Array  # [batch] bool
  step: jax.Array | int = 0       # int32 [], index of this local step
  num_steps: jax.Array | int = 1  # int32 [], the client's active local steps this round
  key: jax.Array | None = None    # this step's own PRNG key, for losses that draw noise


LossFn = Callable[[Params, Batch], jax.Array]  # masked mean loss, a scalar


class Adaptation(NamedTuple):
  """A client's local adaptation without aggregation, run by the engine's local loop:
  fine-tuning before evaluation, or a newcomer's recipe (e.g. FedRep trains its head).

  `init(server, client_state, key) -> carry`, `step(server, carry, batch) -> (carry,
  loss)`, `final(server, client_state, carry) -> params` (the model it evaluates).
  """
  init: Callable[[PyTree, PyTree, jax.Array], PyTree]
  step: Callable[[PyTree, PyTree, Batch], tuple[PyTree, jax.Array]]
  final: Callable[[PyTree, PyTree, PyTree], Params]


class FederatedAlgorithm(NamedTuple):
  server_init: Callable[[Params], PyTree]
  client_state_init: Callable[[Params], PyTree]
  client_init: Callable[[PyTree, PyTree, jax.Array], PyTree]
  client_step: Callable[[PyTree, PyTree, Batch], tuple[PyTree, jax.Array]]
  client_final: Callable[[PyTree, PyTree, PyTree], tuple[PyTree, PyTree]]
  server_update: Callable[[PyTree, PyTree, jax.Array], PyTree]
  eval_params: Optional[Callable[[PyTree, PyTree], Params]] = None
  personalize: Optional[Adaptation] = None  # run before evaluating a training client
  newcomer: Optional[Adaptation] = None     # how a held-out client adapts before evaluation
  server_post: Optional[Callable[[PyTree, PyTree], tuple[PyTree, PyTree]]] = None


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
