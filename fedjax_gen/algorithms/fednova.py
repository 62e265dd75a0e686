"""FedNova: normalized averaging removes the objective inconsistency of unequal local work.

Client i with tau_i local SGD steps (momentum rho) reports d_i = (x - y_i) / a_i with
a_i = [tau_i - rho (1 - rho^tau_i) / (1 - rho)] / (1 - rho) (a_i = tau_i without
momentum). Server: x <- x - server_step(tau_eff * sum_i w_i d_i), tau_eff = sum_i w_i a_i.

References:
  Wang et al., "Tackling the Objective Inconsistency Problem in Heterogeneous Federated
  Optimization", NeurIPS 2020 (arXiv 2007.07481); a_i with momentum as in NIID-Bench.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_gen.algorithms import base
from fedjax_gen.algorithms.fedavg import fedavg


class NovaUpload(NamedTuple):
  normalized_delta: base.Params  # (x - y_i) / a_i
  a: jax.Array                   # [] the client's normalizing factor a_i


def normalizer(tau: jax.Array, rho: float) -> jax.Array:
  tau = tau.astype(jnp.float32)
  if rho == 0:
    return tau
  return (tau - rho * (1 - rho ** tau) / (1 - rho)) / (1 - rho)


def fednova(loss_fn: base.LossFn, client_opt: optax.GradientTransformation,
            server_opt: optax.GradientTransformation = optax.sgd(1.0), *,
            momentum: float = 0.0) -> base.FederatedAlgorithm:
  """FedNova; `momentum` must be the local optimizer's momentum (rho)."""
  avg = fedavg(loss_fn, client_opt, server_opt)

  def client_final(server, client_state, carry):
    a = normalizer(carry.steps, momentum)
    inv = jnp.where(a > 0, 1.0 / jnp.maximum(a, 1e-12), 0.0)
    delta = base.tree_sub(server.params, carry.params)
    return NovaUpload(jax.tree.map(lambda d: d * inv, delta), a), client_state

  def server_update(server, uploads, weights):
    tau_eff = jnp.dot(weights, uploads.a)
    d = base.weighted_mean(uploads.normalized_delta, weights)
    return base.apply_server_opt(server_opt, server, jax.tree.map(lambda x: tau_eff * x, d))

  return avg._replace(client_final=client_final, server_update=server_update)
