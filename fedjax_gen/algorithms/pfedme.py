"""pFedMe: the global model is updated through the clients' Moreau envelopes.

Reference: Dinh, Tran, Nguyen, "Personalized Federated Learning with Moreau
Envelopes", NeurIPS 2020 (arXiv 2006.08848).

Each local step, on one batch: theta approximately solves min f(theta) + (lam/2)||theta -
w||^2 by `inner_steps` steps theta <- theta - personal_lr (grad f(theta) + lam (theta - w))
on that same batch, from theta = w; then w takes a `client_opt` step on the envelope's
gradient lam (w - theta): with `optax.sgd(lr)` exactly the paper's w <- w - lr lam (w -
theta) (our choice: momentum / weight decay of `client_opt` apply on top, and the factory
takes the client optimizer every algorithm takes).

Server: the paper's w <- (1 - beta) w + beta mean_i(w_i) is `optax.sgd(beta)` on the
pseudo-gradient mean_i(w - w_i): beta is the server optimizer's learning rate (default
`optax.sgd(1.0)`: beta = 1, plain averaging). Our choices: the mean is data-weighted like
FedAvg's (the paper's is uniform); theta restarts from w every step (the authors' code
warm-starts it); a client evaluates with its last theta (a training client never sampled:
the initial params); the reported train loss is f(w) on the batch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax

from fedjax_gen.algorithms import base
from fedjax_gen.algorithms.fedavg import fedavg


class PFedMeClientState(NamedTuple):
  theta: base.Params  # personal model, same tree (no client axis) as params


class PFedMeCarry(NamedTuple):
  w: base.LocalState  # local model (uploaded)
  theta: base.Params  # personal model of the last local step


def pfedme(loss_fn: base.LossFn, client_opt: optax.GradientTransformation,
           server_opt: optax.GradientTransformation = optax.sgd(1.0), *,
           lam: float = 15.0, inner_steps: int = 5, personal_lr: float = 0.1
           ) -> base.FederatedAlgorithm:
  """pFedMe; the defaults are the authors' MNIST settings (lam 15, K 5, personal lr 0.1).

  Args:
    lam: Moreau-envelope regularization (pull of theta toward w).
    inner_steps: K, gradient steps on the prox problem per local step (>= 1).
    personal_lr: step size of those inner steps; personal_lr * lam < 2 is needed for
      the inner iteration to be stable.
  """
  if inner_steps < 1:
    raise ValueError(f"pFedMe inner_steps must be >= 1, got {inner_steps}.")
  if not 0 <= personal_lr * lam < 2:
    raise ValueError(f"pFedMe needs 0 <= personal_lr * lam < 2, got {personal_lr * lam}.")

  def client_init(server, state, key):
    del key
    return PFedMeCarry(base.local_init(client_opt, server.params), state.theta)

  def client_step(server, carry, batch):
    del server
    w = carry.w.params

    def prox_step(theta):
      loss, g = jax.value_and_grad(loss_fn)(theta, batch)
      return jax.tree.map(lambda t, gt, wt: t - personal_lr * (gt + lam * (t - wt)),
                          theta, g, w), loss

    theta, loss = prox_step(w)  # theta starts at w, so `loss` is f(w)
    # Unrolled (K is small and static): XLA:CPU runs native convolutions inside a loop
    # several times slower (see models/conv.py): a CNN4 round of the PFLlib config took
    # 1480 s rolled, 316 s unrolled (each with compilation, on a shared 2-core CPU).
    theta = jax.lax.fori_loop(1, inner_steps, lambda _, t: prox_step(t)[0], theta,
                              unroll=True)
    grad_w = jax.tree.map(lambda wt, t: lam * (wt - t), w, theta)
    updates, opt_state = client_opt.update(grad_w, carry.w.opt_state, w)
    new_w = base.LocalState(optax.apply_updates(w, updates), opt_state, carry.w.steps + 1)
    return PFedMeCarry(new_w, theta), loss

  def client_final(server, state, carry):
    del state
    return base.tree_sub(server.params, carry.w.params), PFedMeClientState(carry.theta)

  newcomer = base.Adaptation(
      init=lambda server, state, key: client_init(server, PFedMeClientState(server.params),
                                                  key),
      step=client_step,
      final=lambda server, state, carry: carry.theta)
  return fedavg(loss_fn, client_opt, server_opt)._replace(
      client_state_init=PFedMeClientState, client_init=client_init,
      client_step=client_step, client_final=client_final,
      eval_params=lambda server, state: state.theta, newcomer=newcomer)
