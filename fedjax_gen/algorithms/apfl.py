"""APFL: each client mixes a personal model with the global one, learning the mix.

Reference: Deng, Kamani, Mahdavi, "Adaptive Personalized Federated Learning",
arXiv 2003.13461 (2020).

Each local step, on one batch: the global copy w takes a `client_opt` step on loss(w)
(uploaded as `global - w`, as in FedAvg); with mixed = alpha v + (1 - alpha) w, the
personal v takes a `client_opt` step (own optimizer state) on grad_v loss(mixed), and
alpha <- clip(alpha - alpha_lr * d loss(mixed)/d alpha, 0, 1).

Our choices: the mix uses this step's new w, and the v and alpha gradients come from one
`jax.grad` at that point (old v, new w); a training client evaluates with
alpha_i v_i + (1 - alpha_i) w_global (its w is reset to the global model); a newcomer runs
the same steps from v = w = w_global and evaluates with its final alpha v + (1 - alpha) w;
v's optimizer state starts afresh each round; the reported train loss is w's.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_gen.algorithms import base
from fedjax_gen.algorithms.fedavg import fedavg


class APFLClientState(NamedTuple):
  v: base.Params    # personal model, same tree (no client axis) as params
  alpha: jax.Array  # f32 [], mixing weight in [0, 1]


class APFLCarry(NamedTuple):
  w: base.LocalState  # local copy of the global model
  v: base.LocalState  # personal model and its optimizer state
  alpha: jax.Array    # f32 []


def mix(alpha, v, w):
  return jax.tree.map(lambda a, b: (alpha * a + (1 - alpha) * b).astype(a.dtype), v, w)


def apfl(loss_fn: base.LossFn, client_opt: optax.GradientTransformation,
         server_opt: optax.GradientTransformation = optax.sgd(1.0), *,
         alpha: float = 0.5, alpha_lr: float) -> base.FederatedAlgorithm:
  """APFL with a persistent personal model and mixing weight per client.

  Args:
    alpha: every client's initial mixing weight (1: personal only, 0: global only);
      0.5 (ours) starts without preference.
    alpha_lr: SGD step size of alpha (0 freezes alpha: APFL with a fixed mix); no
      default, as no published value fits every loss scale.
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"APFL alpha must be in [0, 1], got {alpha}.")

  def client_state_init(params):
    return APFLClientState(params, jnp.float32(alpha))

  def client_init(server, state, key):
    del key
    return APFLCarry(base.local_init(client_opt, server.params),
                     base.local_init(client_opt, state.v), state.alpha)

  def client_step(server, carry, batch):
    del server
    w, loss = base.local_step(loss_fn, client_opt, carry.w, batch)
    mixed_loss = lambda v, a: loss_fn(mix(a, v, w.params), batch)
    g_v, g_alpha = jax.grad(mixed_loss, argnums=(0, 1))(carry.v.params, carry.alpha)
    updates, opt_state = client_opt.update(g_v, carry.v.opt_state, carry.v.params)
    v = base.LocalState(optax.apply_updates(carry.v.params, updates), opt_state,
                        carry.v.steps + 1)
    return APFLCarry(w, v, jnp.clip(carry.alpha - alpha_lr * g_alpha, 0.0, 1.0)), loss

  def client_final(server, state, carry):
    del state
    return (base.tree_sub(server.params, carry.w.params),
            APFLClientState(carry.v.params, carry.alpha))

  newcomer = base.Adaptation(
      init=lambda server, state, key: client_init(
          server, client_state_init(server.params), key),
      step=client_step,
      final=lambda server, state, carry: mix(carry.alpha, carry.v.params, carry.w.params))
  return fedavg(loss_fn, client_opt, server_opt)._replace(
      client_state_init=client_state_init, client_init=client_init,
      client_step=client_step, client_final=client_final,
      eval_params=lambda server, state: mix(state.alpha, state.v, server.params),
      newcomer=newcomer)
