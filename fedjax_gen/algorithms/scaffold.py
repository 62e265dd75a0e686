"""SCAFFOLD: control variates correct each client's drift.

Local step: y <- y - lr * (g(y) - c_i + c) (the correction term applied outside the
local optimizer's momentum, as NIID-Bench does). After K local steps (option II of the paper):
c_i+ = c_i - c + (x - y) / (K * lr). Server: x <- x - server_step(mean_w(x - y_i)),
c <- c + (|S| / N) * mean(c_i+ - c_i).

References:
  Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated
  Learning", ICML 2020 (arXiv 1910.06378).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_gen.algorithms import base


class ScaffoldServerState(NamedTuple):
  params: base.Params        # global model
  opt_state: optax.OptState  # server optimizer state
  c: base.Params             # global control variate, same tree as params


class ScaffoldUpload(NamedTuple):
  delta: base.Params    # x - y_i
  delta_c: base.Params  # c_i+ - c_i


def scaffold(loss_fn: base.LossFn, client_opt: optax.GradientTransformation,
             server_opt: optax.GradientTransformation = optax.sgd(1.0), *,
             lr: float, num_clients: int) -> base.FederatedAlgorithm:
  """SCAFFOLD with persistent per-client control variates `c_i` (the client state).

  Args:
    lr: the local learning rate (enters the control-variate update).
    num_clients: population size N (the global variate moves by |S|/N).
  """

  def server_init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return ScaffoldServerState(params, server_opt.init(params), zeros)

  def client_state_init(params):
    return jax.tree.map(jnp.zeros_like, params)  # c_i

  def client_init(server, c_i, key):
    # The carry holds the drift correction c - c_i for the whole local run.
    del key
    return (base.local_init(client_opt, server.params), base.tree_sub(server.c, c_i))

  def client_step(server, carry, batch):
    local, correction = carry
    local, loss = base.local_step(loss_fn, client_opt, local, batch)
    # The correction is applied to the weights after the optimizer step, outside any
    # momentum (as NIID-Bench does); with plain SGD this is exactly the paper's step.
    params = jax.tree.map(lambda p, c: p - lr * c, local.params, correction)
    return (local._replace(params=params), correction), loss

  def client_final(server, c_i, carry):
    local, _ = carry
    delta = base.tree_sub(server.params, local.params)
    scale = 1.0 / (jnp.maximum(local.steps, 1) * lr)
    new_c_i = jax.tree.map(
        lambda ci, c, d: jnp.where(local.steps > 0, ci - c + scale * d, ci),
        c_i, server.c, delta)
    return ScaffoldUpload(delta, base.tree_sub(new_c_i, c_i)), new_c_i

  def server_update(server, uploads, weights):
    state = base.apply_server_opt(server_opt, server,
                                  base.weighted_mean(uploads.delta, weights))
    m = weights.shape[0]
    c = jax.tree.map(lambda c, dc: c + (m / num_clients) * dc.mean(0), server.c,
                     uploads.delta_c)
    return state._replace(c=c)

  return base.FederatedAlgorithm(server_init, client_state_init, client_init,
                                 client_step, client_final, server_update)
