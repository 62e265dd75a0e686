"""Ditto, APFL, pFedMe and Per-FedAvg: each defining step on a tiny problem, by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from fedjax_gen.algorithms import Batch
from fedjax_gen.algorithms.apfl import APFLClientState, apfl, mix
from fedjax_gen.algorithms.ditto import DittoClientState, ditto
from fedjax_gen.algorithms.perfedavg import perfedavg
from fedjax_gen.algorithms.pfedme import pfedme
from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation
from tests.helpers import assert_trees_close, linear_problem

KEY = jax.random.key(0)
tmap = jax.tree.map


def problem(n=4, max_n=4):
  """One client's full batch, the initial params and the loss."""
  train, _, params, loss_fn = linear_problem(counts=(n,), max_n=max_n)
  batch = Batch(jnp.asarray(train.x[0]), jnp.asarray(train.y[0]), jnp.arange(max_n) < n)
  return batch, params, loss_fn


def sgd_step(params, grads, lr):
  return tmap(lambda p, g: p - lr * g, params, grads)


def sq_dist(a, b):
  return sum(float(jnp.sum((x - y) ** 2)) for x, y in zip(jax.tree.leaves(a),
                                                          jax.tree.leaves(b)))


# --- Ditto -------------------------------------------------------------------------------
def test_ditto_step_trains_global_plainly_and_personal_with_prox_term():
  batch, params, loss_fn = problem()
  lr, lam = 0.2, 3.0
  alg = ditto(loss_fn, optax.sgd(lr), lam=lam)
  server = alg.server_init(params)
  v0 = tmap(lambda p: p + 0.3, params)  # away from w_g: the prox gradient is not zero
  (w, v), loss = alg.client_step(server, alg.client_init(server, DittoClientState(v0), KEY),
                                 batch)
  grad = jax.grad(loss_fn)
  assert float(loss) == pytest.approx(float(loss_fn(params, batch)), rel=1e-6)
  assert_trees_close(w.params, sgd_step(params, grad(params, batch), lr))
  expected_v = tmap(lambda x, g, p: x - lr * (g + lam * (x - p)), v0, grad(v0, batch), params)
  assert_trees_close(v.params, expected_v)
  upload, state = alg.client_final(server, DittoClientState(v0), (w, v))
  assert_trees_close(upload, tmap(jnp.subtract, params, w.params))
  assert_trees_close(alg.eval_params(server, state), v.params)


def test_ditto_large_lam_keeps_personal_model_near_global():
  batch, params, loss_fn = problem()
  dists = []
  for lam in (0.0, 8.0):
    alg = ditto(loss_fn, optax.sgd(0.2), lam=lam)
    server = alg.server_init(params)
    carry = alg.client_init(server, alg.client_state_init(params), KEY)
    for _ in range(4):
      carry, _ = alg.client_step(server, carry, batch)
    dists.append(sq_dist(carry[1].params, params))
  assert dists[1] < 0.5 * dists[0]


# --- APFL --------------------------------------------------------------------------------
def test_apfl_step_moves_alpha_against_mixed_loss_gradient():
  batch, params, loss_fn = problem()
  lr, alpha_lr, a0 = 0.2, 0.5, 0.4
  alg = apfl(loss_fn, optax.sgd(lr), alpha=a0, alpha_lr=alpha_lr)
  server = alg.server_init(params)
  v0 = tmap(lambda p: p + 0.3, params)
  carry, loss = alg.client_step(
      server, alg.client_init(server, APFLClientState(v0, jnp.float32(a0)), KEY), batch)
  w1 = sgd_step(params, jax.grad(loss_fn)(params, batch), lr)
  assert_trees_close(carry.w.params, w1)
  assert float(loss) == pytest.approx(float(loss_fn(params, batch)), rel=1e-6)
  # Independent check: d loss(a v + (1 - a) w)/d a, and the chain rule for v.
  mixed = tmap(lambda v, w: a0 * v + (1 - a0) * w, v0, w1)
  g_alpha = jax.grad(lambda a: loss_fn(tmap(lambda v, w: a * v + (1 - a) * w, v0, w1),
                                       batch))(a0)
  by_hand = sum(jnp.vdot(g, v - w) for g, v, w in zip(
      jax.tree.leaves(jax.grad(loss_fn)(mixed, batch)), jax.tree.leaves(v0),
      jax.tree.leaves(w1)))
  assert float(g_alpha) == pytest.approx(float(by_hand), rel=1e-4)
  assert float(carry.alpha) == pytest.approx(a0 - alpha_lr * float(g_alpha), rel=1e-5)
  assert (float(carry.alpha) - a0) * float(g_alpha) < 0
  expected_v = sgd_step(v0, tmap(lambda g: a0 * g, jax.grad(loss_fn)(mixed, batch)), lr)
  assert_trees_close(carry.v.params, expected_v)


@pytest.mark.parametrize("a0", [0.0, 0.5, 1.0])
def test_apfl_alpha_stays_in_unit_interval(a0):
  batch, params, loss_fn = problem()
  alg = apfl(loss_fn, optax.sgd(0.2), alpha=a0, alpha_lr=1e4)
  server = alg.server_init(params)
  state = APFLClientState(tmap(lambda p: p + 0.5, params), jnp.float32(a0))
  carry = alg.client_init(server, state, KEY)
  for _ in range(3):
    carry, _ = alg.client_step(server, carry, batch)
    assert 0.0 <= float(carry.alpha) <= 1.0
  assert float(carry.alpha) in (0.0, 1.0)  # a huge step lands on the boundary


def test_apfl_eval_params_is_the_mix_with_the_global_model():
  _, params, loss_fn = problem()
  alg = apfl(loss_fn, optax.sgd(0.1), alpha=0.3, alpha_lr=0.1)
  server = alg.server_init(params)
  state = APFLClientState(tmap(lambda p: p + 1.0, params), jnp.float32(0.25))
  assert_trees_close(alg.eval_params(server, state), tmap(lambda p: p + 0.25, params))
  assert_trees_close(mix(jnp.float32(1.0), state.v, params), state.v)


# --- pFedMe ------------------------------------------------------------------------------
def test_pfedme_inner_loop_solves_prox_problem_and_outer_step():
  batch, params, loss_fn = problem()
  lr, lam = 0.1, 2.0
  alg = pfedme(loss_fn, optax.sgd(lr), lam=lam, inner_steps=500, personal_lr=0.05)
  server = alg.server_init(params)
  w0 = tmap(lambda p: p + 0.2, params)
  carry = alg.client_init(server, alg.client_state_init(params), KEY)
  carry = carry._replace(w=carry.w._replace(params=w0))
  new, loss = alg.client_step(server, carry, batch)
  assert float(loss) == pytest.approx(float(loss_fn(w0, batch)), rel=1e-6)
  theta = new.theta
  residual = tmap(lambda g, t, w: g + lam * (t - w), jax.grad(loss_fn)(theta, batch), theta,
                  w0)
  assert max(float(jnp.abs(r).max()) for r in jax.tree.leaves(residual)) < 1e-5
  assert sq_dist(theta, w0) > 1e-4  # the solution is not w itself
  assert_trees_close(new.w.params, tmap(lambda w, t: w - lr * lam * (w - t), w0, theta))
  upload, state = alg.client_final(server, alg.client_state_init(params), new)
  assert_trees_close(upload, tmap(jnp.subtract, params, new.w.params))
  assert_trees_close(alg.eval_params(server, state), theta)


def test_pfedme_takes_exactly_inner_steps_prox_steps():
  batch, params, loss_fn = problem()
  lam, plr = 1.5, 0.3
  alg = pfedme(loss_fn, optax.sgd(0.1), lam=lam, inner_steps=2, personal_lr=plr)
  server = alg.server_init(params)
  carry = alg.client_init(server, alg.client_state_init(params), KEY)
  new, _ = alg.client_step(server, carry, batch)
  grad = jax.grad(loss_fn)
  theta = sgd_step(params, grad(params, batch), plr)  # first step: prox term is zero
  theta = tmap(lambda t, g, w: t - plr * (g + lam * (t - w)), theta, grad(theta, batch),
               params)
  assert_trees_close(new.theta, theta)


def test_pfedme_rejects_unstable_inner_step():
  _, _, loss_fn = problem()
  with pytest.raises(ValueError):
    pfedme(loss_fn, optax.sgd(0.1), lam=15.0, inner_steps=5, personal_lr=0.2)


# --- Per-FedAvg --------------------------------------------------------------------------
def per_fedavg_by_hand(n=7, max_n=8, alpha=0.3, beta=0.2):
  batch, params, loss_fn = problem(n, max_n)
  sub = lambda idx: Batch(batch.x[idx], batch.y[idx], jnp.ones(len(idx), bool))
  d1, d2 = sub(np.arange(0, n, 2)), sub(np.arange(1, n, 2))  # real examples, even / odd
  temp = sgd_step(params, jax.grad(loss_fn)(params, d1), alpha)
  g = jax.grad(loss_fn)(temp, d2)
  return batch, params, loss_fn, d1, temp, g


def test_perfedavg_first_order_step():
  alpha, beta = 0.3, 0.2
  batch, params, loss_fn, _, temp, g = per_fedavg_by_hand(alpha=alpha, beta=beta)
  alg = perfedavg(loss_fn, optax.sgd(0.1), alpha=alpha, beta=beta, hessian_free=False)
  server = alg.server_init(params)
  w, loss = alg.client_step(server, alg.client_init(server, (), KEY), batch)
  assert_trees_close(w, sgd_step(params, g, beta))
  assert float(loss) == pytest.approx(
      float(loss_fn(temp, Batch(batch.x[1::2], batch.y[1::2], jnp.arange(4) < 3))), rel=1e-6)
  upload, state = alg.client_final(server, (), w)
  assert state == () and alg.eval_params is None
  assert_trees_close(upload, tmap(jnp.subtract, params, w))


def test_perfedavg_hessian_free_adds_hessian_vector_product():
  alpha, beta = 0.3, 0.2
  batch, params, loss_fn, d1, _, g = per_fedavg_by_hand(alpha=alpha, beta=beta)
  server_and_step = lambda hf: (lambda a: a.client_step(
      a.server_init(params), params, batch)[0])(
          perfedavg(loss_fn, optax.sgd(0.1), alpha=alpha, beta=beta, hessian_free=hf))
  fo, hf = server_and_step(False), server_and_step(True)
  flat, unravel = ravel_pytree(params)
  hessian = jax.hessian(lambda f: loss_fn(unravel(f), d1))(flat)  # [15, 15]
  hg = unravel(hessian @ ravel_pytree(g)[0])
  assert sq_dist(hf, fo) > 1e-10
  assert_trees_close(tmap(jnp.subtract, hf, fo), tmap(lambda h: beta * alpha * h, hg),
                     atol=1e-6)


def test_perfedavg_personalize_is_sgd_with_alpha():
  batch, params, loss_fn = problem()
  alg = perfedavg(loss_fn, optax.sgd(0.1), alpha=0.3, beta=0.2, hessian_free=False)
  ad = alg.personalize
  assert alg.newcomer is ad
  server = alg.server_init(params)
  carry, _ = ad.step(server, ad.init(server, (), KEY), batch)
  assert_trees_close(ad.final(server, (), carry),
                     sgd_step(params, jax.grad(loss_fn)(params, batch), 0.3))


# --- through the engine ------------------------------------------------------------------
def _algorithms(loss_fn):
  opt = optax.sgd(0.1)
  return {
      "ditto": ditto(loss_fn, opt, lam=1.0),
      "apfl": apfl(loss_fn, opt, alpha=0.5, alpha_lr=0.1),
      "pfedme": pfedme(loss_fn, opt, lam=1.0, inner_steps=3, personal_lr=0.1),
      "perfedavg_fo": perfedavg(loss_fn, opt, alpha=0.1, beta=0.1, hessian_free=False),
      "perfedavg_hf": perfedavg(loss_fn, opt, alpha=0.1, beta=0.1, hessian_free=True),
  }


@pytest.mark.parametrize("name", ["ditto", "apfl", "pfedme", "perfedavg_fo", "perfedavg_hf"])
def test_two_rounds_and_newcomer_through_the_engine(name):
  train, _, params, loss_fn = linear_problem()  # clients of 5, 3, 8 examples
  alg = _algorithms(loss_fn)[name]
  sim = Simulation(alg, train, LocalSchedule(2, 1, 0), clients_per_round=2,
                   plan=ExecutionPlan(2, 0), train_ids=[0, 1])  # client 2 is a newcomer
  server, states = sim.init(params)
  for r in range(2):
    server, states, m = sim.round(server, states, jax.random.key(r))
    assert np.isfinite(float(m.train_loss))
  assert sq_dist(server.params, params) > 0
  finite = lambda t: all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(t))
  assert finite(server.params) and finite(states)
  ids = [2, 1]
  adapted = sim.adapt(alg.newcomer, server, states, ids, jax.random.key(0), 3)
  assert jax.tree.structure(adapted) == jax.tree.structure(params)
  for a, p in zip(jax.tree.leaves(adapted), jax.tree.leaves(params)):
    assert a.shape == (len(ids), *p.shape)
  assert finite(adapted)
  if alg.eval_params is not None:  # every training client's personal model, stacked
    personal = jax.vmap(alg.eval_params, in_axes=(None, 0))(server, states)
    assert all(a.shape == (3, *p.shape) for a, p in zip(jax.tree.leaves(personal),
                                                        jax.tree.leaves(params)))
