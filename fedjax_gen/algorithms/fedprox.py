"""FedProx: FedAvg whose local loss adds the proximal term (mu/2)||w - w_global||^2.

References:
  Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020
  (arXiv 1812.06127).
"""

from __future__ import annotations

import optax

from fedjax_gen.algorithms import base
from fedjax_gen.algorithms.fedavg import fedavg


def proximal_loss(loss_fn: base.LossFn, mu: float, anchor: base.Params) -> base.LossFn:
  """`loss_fn` plus (mu/2)||params - anchor||^2; reused by personalized methods."""
  return lambda params, batch: (loss_fn(params, batch)
                                + 0.5 * mu * base.tree_sq_norm(base.tree_sub(params, anchor)))


def fedprox(loss_fn: base.LossFn, client_opt: optax.GradientTransformation,
            server_opt: optax.GradientTransformation = optax.sgd(1.0), *,
            mu: float = 0.01) -> base.FederatedAlgorithm:
  """FedAvg with a proximal local loss pulling toward the round's global model.

  Args:
    mu: proximal strength; NIID-Bench searches {0.001, 0.01, 0.1, 1}, default 0.01.
  """
  if mu < 0:
    raise ValueError(f"FedProx mu must be >= 0, got {mu}.")

  def client_step(server, carry, batch):
    return base.local_step(proximal_loss(loss_fn, mu, server.params), client_opt, carry,
                           batch)

  return fedavg(loss_fn, client_opt, server_opt)._replace(client_step=client_step)
