"""GenFL's generative aggregation and the AIGC-only baseline, as `FederatedAlgorithm`s.

GenFL (arXiv 2503.20166): clients run FedAvg's local SGD; the server computes the FedAvg
aggregate `theta_agg` (client weights from data size and label skew, then the server
optimizer, SGD(1) for plain FedAvg), trains a copy of it on its synthetic set for
`server_steps` SGD steps, giving `theta_syn`, and moves to

    theta_next = (1 - lam_t) * theta_agg + lam_t * theta_syn.

The paper leaves the details open; our choices (config keys `genfl_*`):

* `lam_t` (`lam_value`), `t` = the number of server updates before this one (0 in the
  first round): "constant" `lam0`; "exp" `lam0 * decay**t`; "cos"
  `lam0 * (1 + cos(pi * min(t, rounds) / rounds)) / 2` (from lam0 at the first round
  towards 0 at `rounds`; the default, since the paper's weight decays as FL converges);
  "adaptive" `lam0 * clip(1 - L_syn / L_agg, 0, 1)` with `L_agg`, `L_syn` the mean losses
  of `theta_agg` and `theta_syn` on a held-out validation split of the server's synthetic
  set (`VAL_FRACTION` of it, never trained on): lam is large while server training still
  improves held-out synthetic loss (the aggregate is far from the balanced distribution),
  and goes to 0 when it no longer helps (FL converged, or the server overfits).
* client weights: `w_i ~ n_i * (1 - skew_weight * d_i)`, renormalised, where `n_i` is the
  client's data size (the engine's weights) and `d_i = 1 - H(p_i) / log(C)` the client's
  normalised label-entropy deficit (0 for balanced data, 1 for a single class). Each client
  measures `p_i` from the labels of the batches it trained on this round (with epochs,
  exactly its training set: real data + its synthetic share) and uploads the scalar factor
  beside its update, never its histogram. `skew_weight=0` gives FedAvg's size weights
  exactly. It must be < 1 so that no weight vanishes.
* server training: SGD (the clients' optimizer: lr, momentum, weight decay of the config,
  state fresh every round) on batches of `batch_size` (at most the set's size) drawn
  without replacement from per-epoch permutations keyed by the round; all inside the
  jitted round (`lax.fori_loop`), the synthetic set being device arrays in the server
  state (jit arguments, not compile-time constants; it is also checkpointed with it). The
  adaptive policy's validation split sits at the end of that set and is never trained on.

AIGC-only (the paper's baseline, `aigc_only`): a model trained on synthetic data alone.
Ours: the server trains the global model on its synthetic set for `server_steps` SGD steps
per round (one optimizer state across rounds: plain centralized training, `rounds *
server_steps` steps) and ignores the clients, whose local steps are no-ops (their
`train_loss` reads 0). It shares the synthetic set and its trainer with GenFL.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_gen.algorithms import base

LAM_POLICIES = ("constant", "exp", "cos", "adaptive")
VAL_FRACTION = 0.2  # share of the server's synthetic set held out for the adaptive policy


def check_lam_policy(policy: str) -> None:
  if policy not in LAM_POLICIES:
    raise ValueError(f"Unknown genfl.lam_policy {policy!r}; valid policies: "
                     f"{', '.join(LAM_POLICIES)}.")


def lam_value(policy: str, t, *, lam0: float, decay: float = 0.9, rounds: int = 1,
              loss_agg=None, loss_syn=None):
  """`lam_t` of the policy at server update `t` (0-based); see the module docstring.

  Works on Python/NumPy numbers and on traced JAX scalars.
  """
  check_lam_policy(policy)
  xp = jnp if any(isinstance(v, jax.Array) for v in (t, loss_agg, loss_syn)) else np
  t = xp.asarray(t, xp.float32)
  if policy == "constant":
    return xp.asarray(lam0, xp.float32) + 0.0 * t
  if policy == "exp":
    return (lam0 * xp.power(xp.float32(decay), t)).astype(xp.float32)
  if policy == "cos":
    frac = xp.minimum(t, rounds) / max(rounds, 1)
    return (lam0 * 0.5 * (1.0 + xp.cos(xp.float32(math.pi) * frac))).astype(xp.float32)
  if loss_agg is None or loss_syn is None:
    raise ValueError("The adaptive policy needs loss_agg and loss_syn.")
  gain = 1.0 - xp.asarray(loss_syn, xp.float32) / xp.maximum(
      xp.asarray(loss_agg, xp.float32), 1e-12)
  return (lam0 * xp.clip(gain, 0.0, 1.0)).astype(xp.float32)


def skew_factor(label_hist, skew_weight: float):
  """`1 - skew_weight * (1 - H(p) / log C)` for a label histogram `[C]` (JAX or NumPy)."""
  xp = jnp if isinstance(label_hist, jax.Array) else np
  h = xp.asarray(label_hist, xp.float32)
  c = h.shape[-1]
  if c < 2:
    return xp.ones(h.shape[:-1], xp.float32)
  p = h / xp.maximum(h.sum(-1, keepdims=True), 1e-12)
  entropy = -xp.sum(xp.where(p > 0, p * xp.log(xp.where(p > 0, p, 1.0)), 0.0), -1)
  return (1.0 - skew_weight * (1.0 - entropy / np.log(c))).astype(xp.float32)


def split_validation(x: np.ndarray, y: np.ndarray, seed: int, fraction: float = VAL_FRACTION
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(train_x, train_y, val_x, val_y): a seeded split holding out `fraction` (>= 1
  example, and >= 1 left to train on)."""
  n = len(y)
  if n < 2:
    raise ValueError(f"The adaptive policy needs >= 2 synthetic examples, got {n}.")
  n_val = min(max(int(round(fraction * n)), 1), n - 1)
  perm = np.random.default_rng([seed, 8]).permutation(n)
  tr, va = np.sort(perm[n_val:]), np.sort(perm[:n_val])
  return x[tr], y[tr], x[va], y[va]


def train_steps(loss_fn: base.LossFn, opt: optax.GradientTransformation, params, opt_state,
                x: jax.Array, y: jax.Array, key: jax.Array, *, steps: int, batch_size: int):
  """`steps` optimizer steps on `(x, y)`; returns `(params, opt_state)`. Traceable.

  Step `t` uses batch `t % per_epoch` (`per_epoch = n // b`, `b = min(batch_size, n)`;
  the last incomplete batch of an epoch is dropped) of the permutation
  `jax.random.permutation(fold_in(k_perm, t // per_epoch), n)`, where
  `k_perm, k_step = jax.random.split(key)`; the batch's own key is `fold_in(k_step, t)`.
  """
  n = x.shape[0]
  if steps == 0 or n == 0:
    return params, opt_state
  b = min(batch_size, n)
  per_epoch = n // b
  epochs = -(-steps // per_epoch)
  k_perm, k_step = jax.random.split(key)  # batch order; per-step keys (noisy losses)
  perms = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(k_perm, e), n))(
      jnp.arange(epochs))
  mask = jnp.ones((b,), bool)

  def body(t, carry):
    params, opt_state = carry
    epoch, i = jnp.divmod(t, per_epoch)
    idx = jax.lax.dynamic_slice(perms[epoch], (i * b,), (b,))
    batch = base.Batch(x[idx], y[idx], mask, t, steps, jax.random.fold_in(k_step, t))
    grads = jax.grad(loss_fn)(params, batch)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return jax.lax.fori_loop(0, steps, body, (params, opt_state))


def mean_loss(loss_fn: base.LossFn, params, x: jax.Array, y: jax.Array, chunk: int = 256):
  """Mean `loss_fn` over all of `(x, y)`, in chunks of `chunk` (padded, masked)."""
  n = x.shape[0]
  chunk = max(1, min(chunk, n))
  num = -(-n // chunk)
  pad = num * chunk - n
  xs = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape(num, chunk, *x.shape[1:])
  ys = jnp.pad(y, (0, pad)).reshape(num, chunk)
  valid = (jnp.arange(num * chunk) < n).reshape(num, chunk)

  def body(i, total):
    m = valid[i]
    return total + loss_fn(params, base.Batch(xs[i], ys[i], m)) * m.sum()
  return jax.lax.fori_loop(0, num, body, jnp.zeros(())) / n


def _mix(agg, syn, lam):
  return jax.tree.map(lambda a, s: ((1.0 - lam) * a + lam * s).astype(a.dtype), agg, syn)


class GenFLServerState(NamedTuple):
  params: base.Params        # global model
  opt_state: Any             # server optimizer state (FedOpt); FedAvg: SGD(1), empty
  round: jax.Array           # int32 [], server updates done
  lam: jax.Array             # float32 [], lam_t of the last update (0 before the first)
  syn_x: jax.Array           # the server's synthetic set: training examples, then (adaptive
  syn_y: jax.Array           #   policy only) the held-out validation split at the end


class GenFLCarry(NamedTuple):
  local: base.LocalState
  label_hist: jax.Array      # [C] labels of the real + synthetic examples trained on


def genfl(loss_fn: base.LossFn, client_opt: optax.GradientTransformation,
          server_opt: optax.GradientTransformation = optax.sgd(1.0), *,
          synthetic_x, synthetic_y, num_classes: int, server_steps: int,
          server_batch_size: int, lam_policy: str = "cos", lam0: float = 0.5,
          lam_decay: float = 0.9, rounds: int = 1, skew_weight: float = 0.0,
          seed: int = 0, synthetic_opt: optax.GradientTransformation | None = None
          ) -> base.FederatedAlgorithm:
  """GenFL's generative aggregation around FedAvg's local training (module docstring).

  Args:
    loss_fn, client_opt, server_opt: as for `fedavg`.
    synthetic_x, synthetic_y: the server-held synthetic set (NumPy).
    num_classes: classes, for the clients' label histograms.
    server_steps, server_batch_size: server training of `theta_syn` per round.
    lam_policy, lam0, lam_decay, rounds: `lam_t` (`lam_value`).
    skew_weight: in [0, 1); 0 = size weights (FedAvg's).
    seed: keys the server's batch order (`fold_in(key(seed), round)`) and the adaptive
      policy's validation split.
    synthetic_opt: the server's optimizer on synthetic data (default: `client_opt`).
  """
  check_lam_policy(lam_policy)
  if not 0 <= lam0 <= 1:
    raise ValueError(f"genfl.lam0 must be in [0, 1], got {lam0}.")
  if not 0 <= skew_weight < 1:
    raise ValueError(f"genfl.skew_weight must be in [0, 1), got {skew_weight}.")
  if server_steps < 0:
    raise ValueError(f"genfl.server_steps must be >= 0, got {server_steps}.")
  synthetic_opt = synthetic_opt or client_opt
  x, y = np.asarray(synthetic_x, np.float32), np.asarray(synthetic_y, np.int32)
  n_train = len(y)
  if lam_policy == "adaptive":
    tx, ty, vx, vy = split_validation(x, y, seed)
    n_train, x, y = len(ty), np.concatenate([tx, vx]), np.concatenate([ty, vy])
  base_key = jax.random.key(seed)

  def server_init(params):
    return GenFLServerState(params, server_opt.init(params), jnp.zeros((), jnp.int32),
                            jnp.zeros((), jnp.float32), jnp.asarray(x), jnp.asarray(y))

  def client_init(server, client_state, key):
    del client_state, key
    return GenFLCarry(base.local_init(client_opt, server.params),
                      jnp.zeros((num_classes,), jnp.float32))

  def client_step(server, carry, batch):
    del server
    local, loss = base.local_step(loss_fn, client_opt, carry.local, batch)
    seen = jax.nn.one_hot(batch.y, num_classes) * batch.mask[:, None]
    return GenFLCarry(local, carry.label_hist + seen.sum(0)), loss

  def client_final(server, client_state, carry):
    delta = base.tree_sub(server.params, carry.local.params)
    return (delta, skew_factor(carry.label_hist, skew_weight)), client_state

  def server_update(server, uploads, weights):
    deltas, factors = uploads
    if skew_weight > 0:
      weights = weights * factors
      weights = weights / jnp.maximum(weights.sum(), 1e-12)
    agg = base.apply_server_opt(server_opt, base.ServerState(server.params, server.opt_state),
                                base.weighted_mean(deltas, weights))
    key = jax.random.fold_in(base_key, server.round)
    syn, _ = train_steps(loss_fn, synthetic_opt, agg.params, synthetic_opt.init(agg.params),
                         server.syn_x[:n_train], server.syn_y[:n_train], key,
                         steps=server_steps, batch_size=server_batch_size)
    if lam_policy == "adaptive":
      vx, vy = server.syn_x[n_train:], server.syn_y[n_train:]
      lam = lam_value("adaptive", server.round, lam0=lam0,
                      loss_agg=mean_loss(loss_fn, agg.params, vx, vy),
                      loss_syn=mean_loss(loss_fn, syn, vx, vy))
    else:
      lam = lam_value(lam_policy, server.round, lam0=lam0, decay=lam_decay, rounds=rounds)
    return server._replace(params=_mix(agg.params, syn, lam), opt_state=agg.opt_state,
                           round=server.round + 1, lam=lam)

  return base.FederatedAlgorithm(server_init, base.no_client_state, client_init,
                                 client_step, client_final, server_update)


class AIGCServerState(NamedTuple):
  params: base.Params
  opt_state: Any
  round: jax.Array
  syn_x: jax.Array
  syn_y: jax.Array


def aigc_only(loss_fn: base.LossFn, opt: optax.GradientTransformation, *, synthetic_x,
              synthetic_y, server_steps: int, batch_size: int, seed: int = 0
              ) -> base.FederatedAlgorithm:
  """The AIGC-only baseline: the server trains on synthetic data alone (module docstring)."""
  if server_steps < 1:
    raise ValueError(f"aigc_only trains genfl.server_steps >= 1 steps per round, got "
                     f"{server_steps}.")
  x, y = np.asarray(synthetic_x, np.float32), np.asarray(synthetic_y, np.int32)
  base_key = jax.random.key(seed)

  def server_init(params):
    return AIGCServerState(params, opt.init(params), jnp.zeros((), jnp.int32),
                           jnp.asarray(x), jnp.asarray(y))

  def client_init(server, client_state, key):
    del server, client_state, key
    return jnp.zeros(())

  def client_step(server, carry, batch):
    del server, batch
    return carry, jnp.zeros(())

  def client_final(server, client_state, carry):
    del server
    return carry, client_state

  def server_update(server, uploads, weights):
    del uploads, weights
    params, opt_state = train_steps(loss_fn, opt, server.params, server.opt_state,
                                    server.syn_x, server.syn_y,
                                    jax.random.fold_in(base_key, server.round),
                                    steps=server_steps, batch_size=batch_size)
    return server._replace(params=params, opt_state=opt_state, round=server.round + 1)

  return base.FederatedAlgorithm(server_init, base.no_client_state, client_init,
                                 client_step, client_final, server_update)
