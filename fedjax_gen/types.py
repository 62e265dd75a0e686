"""The types every layer shares: a minibatch, a client's padded data, and the shape of a
federated algorithm (pure functions written for one client, `vmap`ped by the engine).

An algorithm's functions, in FedJAX's vocabulary:

    server_init(params)                          -> server_state
    client_state_init(params)                    -> client_state  (persistent, one client)
    client_init(server_state, client_state, key) -> carry         (start of local training)
    client_step(server_state, carry, batch)      -> (carry, loss) (one local step)
    client_final(server_state, client_state, carry) -> (upload, client_state)
    server_update(server_state, uploads, weights) -> server_state (uploads stacked [m, ...])
    eval_params(server_state, client_state)      -> params a client evaluates with
                                                    (None: everyone uses the global model)
    personalize, newcomer: optional `Adaptation`s: local steps a training client runs
      before evaluation (e.g. FedAvg+FT), and a held-out client's recipe to join.
    server_post(server_state, sampled_client_states) -> (server_state, sampled_client_states)
      optional server work after aggregation, run as a second jitted computation of the
      round over the sampled clients' persistent states (pFedGPA's diffusion), so its time
      can be measured on its own.

All states are pytrees (NamedTuples), so `jit`, `vmap` and checkpointing need no special
cases. A server state always has a `params` field: the global model.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, NamedTuple, Optional

import jax

Params = Any  # a pytree (nested dict) of arrays: one model's parameters
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


class ClientData(NamedTuple):
  """One client's padded examples (or a population's, with a leading client axis)."""
  x: jax.Array      # [max_n, *example_shape]
  y: jax.Array      # [max_n]
  count: jax.Array  # [] int32: real examples, the rest is padding


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
  """An algorithm as pure functions for one client (see the module docstring)."""
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


class Option(NamedTuple):
  """One config key of a family of options, declared beside the code that reads it.

  `role` says what changing it does to a run in progress: "train" (it changes what is
  computed: a resumed run must keep it), "eval" (only how a trained run is evaluated:
  `fedjax-gen eval` may change it), "free" (neither: progress, speed, how long to run;
  resume and eval may change it), "sample" (only how a trained DDPM is sampled and
  judged: a DDPM resume may change it).
  """
  name: str
  default: Any
  help: str
  role: str = "train"
  algorithms: tuple[str, ...] = ()  # the algorithms that read it; () = every run


def options_of(options: tuple[Option, ...], given=None):
  """A family's options as attributes: `given` (a mapping or ConfigDict; missing keys take
  their defaults). Lets code below the config layer take a config sub-dict, a plain dict
  or nothing."""
  values = {o.name: o.default for o in options}
  if given is not None:
    unknown = set(given) - set(values)
    if unknown:
      raise ValueError(f"Unknown option(s) {', '.join(sorted(unknown))}; valid: "
                       f"{', '.join(values)}.")
    values.update({k: given[k] for k in given})
  return SimpleNamespace(**values)
