"""FedAvg: local SGD on each client, server averages the updates weighted by data size.

References:
  McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
  Data", AISTATS 2017 (arXiv 1602.05629). With a server optimizer other than SGD(1) this
  is FedOpt (Reddi et al. 2021): FedAvgM, FedAdam, FedYogi.
"""

from __future__ import annotations

import optax

from fedjax_gen.algorithms import base


def fedavg(loss_fn: base.LossFn, client_opt: optax.GradientTransformation,
           server_opt: optax.GradientTransformation = optax.sgd(1.0)
           ) -> base.FederatedAlgorithm:
  """FedAvg / FedOpt.

  Args:
    loss_fn: `loss_fn(params, batch)`, the masked mean loss of one batch.
    client_opt: the local optimizer (e.g. `optax.sgd(0.01, momentum=0.9)`).
    server_opt: applied to the weighted mean of `global - local`; `optax.sgd(1.0)` gives
      plain FedAvg.

  Returns:
    A `FederatedAlgorithm`; uploads are `global - local` parameter deltas.
  """

  def server_init(params):
    return base.ServerState(params, server_opt.init(params))

  def client_init(server, client_state, key):
    del client_state, key
    return base.local_init(client_opt, server.params)

  def client_step(server, carry, batch):
    del server
    return base.local_step(loss_fn, client_opt, carry, batch)

  def client_final(server, client_state, carry):
    return base.tree_sub(server.params, carry.params), client_state

  def server_update(server, deltas, weights):
    return base.apply_server_opt(server_opt, server, base.weighted_mean(deltas, weights))

  return base.FederatedAlgorithm(server_init, base.no_client_state, client_init,
                                 client_step, client_final, server_update)
