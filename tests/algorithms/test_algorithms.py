"""Each algorithm's defining step on tiny cases computable by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_gen.algorithms import (ALGORITHMS, Batch, fedavg, fednova, fedprox, make_algorithm,
                                   scaffold)
from fedjax_gen.algorithms.fednova import normalizer
from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation
from tests.helpers import assert_trees_close, linear_problem, normnet_problem


def one_round(alg, counts=(4, 4), schedule=LocalSchedule(4, 1, 2), seed=0):
  train, _, params, _ = linear_problem(counts=counts, max_n=max(counts), seed=seed)
  sim = Simulation(alg, train, schedule, clients_per_round=len(counts),
                   plan=ExecutionPlan(len(counts), 0))
  server, states = sim.init(params)
  server2, states2, _ = sim.round(server, states, jax.random.key(0))
  return params, server2, states2


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_inits_abstractly_and_trains(name):
  train, _, params, loss_fn = normnet_problem()  # has body, norm and head layers
  alg = make_algorithm(name, loss_fn, lr=0.1, momentum=0.5, num_clients=3, params=params)
  shapes = jax.eval_shape(alg.server_init, params)
  assert jax.tree.structure(shapes.params) == jax.tree.structure(params)
  sim = Simulation(alg, train, LocalSchedule(2, 1, 0), clients_per_round=2,
                   plan=ExecutionPlan(2, 0))
  server, states = sim.init(params)
  init_states = jax.tree.map(np.array, states)
  for r in range(3):
    server, states, m = sim.round(server, states, jax.random.key(r))
  assert np.isfinite(float(m.train_loss))
  moved = lambda a, b: not all(np.array_equal(x, y) for x, y in
                               zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert moved(server.params, params) or moved(states, init_states)  # Local-only: states


def test_fedavg_aggregate_is_data_weighted_mean_of_local_models():
  _, loss_fn_params, _, loss_fn = linear_problem()
  opt = optax.sgd(0.2)
  params, server, _ = one_round(fedavg(loss_fn, opt), counts=(2, 6),
                                schedule=LocalSchedule(8, 1, 1))
  train, *_ = linear_problem(counts=(2, 6), max_n=6)
  local_models = []
  for i, n in enumerate((2, 6)):
    batch = Batch(jnp.asarray(train.x[i]), jnp.asarray(train.y[i]), jnp.arange(6) < n)
    g = jax.grad(loss_fn)(params, batch)
    local_models.append(jax.tree.map(lambda p, g: p - 0.2 * g, params, g))
  expected = jax.tree.map(lambda a, b: 0.25 * a + 0.75 * b, *local_models)
  assert_trees_close(server.params, expected)


def test_fedprox_mu_zero_is_fedavg_and_mu_pulls_toward_global():
  _, _, _, loss_fn = linear_problem()
  opt = optax.sgd(0.5)
  params, avg, _ = one_round(fedavg(loss_fn, opt))
  _, prox0, _ = one_round(fedprox(loss_fn, opt, mu=0.0))
  _, prox, _ = one_round(fedprox(loss_fn, opt, mu=5.0))
  assert_trees_close(avg.params, prox0.params)
  dist = lambda p: sum(float(jnp.sum((a - b) ** 2)) for a, b in
                       zip(jax.tree.leaves(p), jax.tree.leaves(params)))
  assert dist(prox.params) < dist(avg.params)


def test_fedprox_second_step_feels_the_proximal_gradient():
  """Step 1 starts at w_global (no pull); step 2's gradient adds mu * (w - w_global)."""
  train, _, params, loss_fn = linear_problem(counts=(4,), max_n=4)
  lr, mu = 0.5, 3.0
  _, server, _ = one_round(fedprox(loss_fn, optax.sgd(lr), mu=mu), counts=(4,),
                           schedule=LocalSchedule(4, 1, 2))
  batch = Batch(jnp.asarray(train.x[0]), jnp.asarray(train.y[0]), jnp.ones(4, bool))
  w1 = jax.tree.map(lambda p, g: p - lr * g, params, jax.grad(loss_fn)(params, batch))
  g2 = jax.grad(loss_fn)(w1, batch)
  w2 = jax.tree.map(lambda w, g, p: w - lr * (g + mu * (w - p)), w1, g2, params)
  assert_trees_close(server.params, w2)


def test_scaffold_control_variates():
  """Round 1 (c = c_i = 0) equals FedAvg; then c_i = (x - y_i)/(K lr), c = |S|/N mean."""
  _, _, _, loss_fn = linear_problem()
  lr, steps = 0.3, 2
  opt = optax.sgd(lr)
  params, avg, _ = one_round(fedavg(loss_fn, opt), schedule=LocalSchedule(4, 1, steps))
  train, _, _, _ = linear_problem(counts=(4, 4), max_n=4)
  sim = Simulation(scaffold(loss_fn, opt, lr=lr, num_clients=4),
                   train, LocalSchedule(4, 1, steps), clients_per_round=2,
                   plan=ExecutionPlan(2, 0))
  server, states = sim.init(params)
  server, states, _ = sim.round(server, states, jax.random.key(0))
  assert_trees_close(server.params, avg.params)
  # Both clients took K=2 full-batch steps; c_i = (x - y_i) / (K lr); c = (2/4) mean(c_i).
  local_models = []
  for i in range(2):
    batch = Batch(jnp.asarray(train.x[i]), jnp.asarray(train.y[i]), jnp.ones(4, bool))
    p = params
    for _ in range(steps):
      p = jax.tree.map(lambda w, g: w - lr * g, p, jax.grad(loss_fn)(p, batch))
    local_models.append(p)
  c_i = [jax.tree.map(lambda x, y: (x - y) / (steps * lr), params, p) for p in local_models]
  assert_trees_close(jax.tree.map(lambda s: s[0], states), c_i[0], atol=1e-4)
  assert_trees_close(server.c, jax.tree.map(lambda a, b: 0.5 * (a + b) / 2, *c_i), atol=1e-4)


def test_fednova_normalizer_and_equal_work_equals_fedavg():
  assert float(normalizer(jnp.int32(7), 0.0)) == 7.0
  rho, tau = 0.9, 3  # a = sum_{k<tau} (1 - rho^(k+1)) / (1 - rho)... = 1 + 1.9 + 2.71
  assert float(normalizer(jnp.int32(tau), rho)) == pytest.approx(1 + 1.9 + 2.71, rel=1e-5)
  _, _, _, loss_fn = linear_problem()
  opt = optax.sgd(0.3)
  _, avg, _ = one_round(fedavg(loss_fn, opt))
  _, nova, _ = one_round(fednova(loss_fn, opt))
  assert_trees_close(avg.params, nova.params)


def test_fednova_unequal_work_is_normalized():
  """client_final uploads ((x - y_i)/a_i, a_i); the server steps tau_eff * sum w_i d_i."""
  _, _, params, loss_fn = linear_problem()
  rho = 0.5
  alg = fednova(loss_fn, optax.sgd(0.1, momentum=rho), momentum=rho)
  server = alg.server_init(params)
  ones = jax.tree.map(jnp.ones_like, params)
  ys, taus = [], [1, 3]
  for tau, shift in zip(taus, (1.0, 2.0)):
    y = jax.tree.map(lambda p: p - shift, params)   # x - y_i = shift everywhere
    carry = alg.client_init(server, (), jax.random.key(0))._replace(
        params=y, steps=jnp.int32(tau))
    ys.append(alg.client_final(server, (), carry)[0])
  a = [float(normalizer(jnp.int32(t), rho)) for t in taus]
  assert a[0] == pytest.approx(1.0) and a[1] == pytest.approx((3 - 0.5 * 0.875 / 0.5) / 0.5)
  for up, shift, ai in zip(ys, (1.0, 2.0), a):
    assert_trees_close(up.normalized_delta, jax.tree.map(lambda o: o * shift / ai, ones))
  uploads = jax.tree.map(lambda *u: jnp.stack(u), *ys)
  w = jnp.array([0.25, 0.75])
  new = alg.server_update(server, uploads, w)
  tau_eff = 0.25 * a[0] + 0.75 * a[1]
  step = tau_eff * (0.25 * 1.0 / a[0] + 0.75 * 2.0 / a[1])
  assert_trees_close(new.params, jax.tree.map(lambda p: p - step, params))
