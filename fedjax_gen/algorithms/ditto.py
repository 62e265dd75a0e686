"""Ditto: every client trains the global model and a personal model pulled toward it.

References:
  Li, Hu, Beirami, Smith, "Ditto: Fair and Robust Federated Learning Through
  Personalization", ICML 2021 (arXiv 2012.04221).

Each local step, on the same batch: the client's copy w of the global model takes a
`client_opt` step on the plain loss (the FedAvg part, uploaded as `global - w`), and the
personal model v takes a `client_opt` step (its own optimizer state) on
loss(v) + (lam/2)||v - w_g||^2, w_g the global model of this round.

Our choices: the two updates are interleaved, one each per local step on the same batch,
as in the authors' code (github.com/litian96/ditto; the paper's Algorithm 1 writes them as
two loops); v's optimizer state starts afresh each round; a training client never sampled
evaluates with v = the initial params; the reported train loss is w's.
"""

from __future__ import annotations

from typing import NamedTuple

import optax

from fedjax_gen.algorithms import base
from fedjax_gen.algorithms.fedavg import fedavg
from fedjax_gen.algorithms.fedprox import proximal_loss


class DittoClientState(NamedTuple):
  v: base.Params  # personal model, same tree (no client axis) as params


def ditto(loss_fn: base.LossFn, client_opt: optax.GradientTransformation,
          server_opt: optax.GradientTransformation = optax.sgd(1.0), *,
          lam: float = 1.0) -> base.FederatedAlgorithm:
  """Ditto with a persistent personal model per client.

  Args:
    lam: strength of the pull of v toward the global model (lam = 0: purely local
      training of v). The paper tunes it per dataset; the default 1.0 is the value of
      the authors' released run scripts (their dynamic variant picks from {0.1, 1, 2}).
  """
  if lam < 0:
    raise ValueError(f"Ditto lam must be >= 0, got {lam}.")
  avg = fedavg(loss_fn, client_opt, server_opt)
  personal_step = lambda server, carry, batch: base.local_step(
      proximal_loss(loss_fn, lam, server.params), client_opt, carry, batch)

  def client_state_init(params):
    return DittoClientState(params)

  def client_init(server, state, key):
    del key  # carry: (w, v) as LocalStates
    return base.local_init(client_opt, server.params), base.local_init(client_opt, state.v)

  def client_step(server, carry, batch):
    w, loss = base.local_step(loss_fn, client_opt, carry[0], batch)
    v, _ = personal_step(server, carry[1], batch)
    return (w, v), loss

  def client_final(server, state, carry):
    del state
    return base.tree_sub(server.params, carry[0].params), DittoClientState(carry[1].params)

  newcomer = base.Adaptation(
      init=lambda server, state, key: base.local_init(client_opt, server.params),
      step=personal_step,
      final=lambda server, state, carry: carry.params)
  return avg._replace(client_state_init=client_state_init, client_init=client_init,
                      client_step=client_step, client_final=client_final,
                      eval_params=lambda server, state: state.v, newcomer=newcomer)
