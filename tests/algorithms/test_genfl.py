"""GenFL's generative aggregation: lam_t = 0 is FedAvg exactly, lam_t = 1 is the
server-trained model; the lam policies; skew-aware client weights; AIGC-only."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_gen.algorithms import Batch, fedavg
from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation, local
from fedjax_gen.algorithms.genfl import aigc_only, genfl, lam_value, skew_factor, train_steps
from fedjax_gen.algorithms.genfl import mean_loss, split_validation
from tests.helpers import assert_trees_close, linear_problem

SCHEDULE = LocalSchedule(batch_size=2, local_epochs=2, local_steps=0)
OPT = optax.sgd(0.1, momentum=0.9)


def synthetic_set(n=10, seed=1):
  """A learnable set: the label is the largest of the first three features."""
  x = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
  return x, np.argmax(x[:, :3], axis=1).astype(np.int32)


@pytest.fixture(scope="module")
def problem():
  """The linear problem and FedAvg's global model after one round."""
  train, _, params, loss_fn = linear_problem()
  return train, params, loss_fn, run(fedavg(loss_fn, OPT), train, params).params


def run(alg, train, params, rounds=1, plan=ExecutionPlan(3, 0)):
  sim = Simulation(alg, train, SCHEDULE, clients_per_round=3, plan=plan)
  server, states = sim.init(params)
  for r in range(rounds):
    server, states, _ = sim.round(server, states, jax.random.key(r))
  return server


def make_genfl(loss_fn, **kwargs):
  x, y = synthetic_set()
  args = dict(synthetic_x=x, synthetic_y=y, num_classes=3, server_steps=7,
              server_batch_size=4, lam_policy="constant", lam0=0.0, rounds=5,
              skew_weight=0.0, seed=0) | kwargs
  return genfl(loss_fn, OPT, **args)


def hand_trained(loss_fn, params, x, y, key, steps, b):
  """`train_steps` written as a plain loop over its documented batch order."""
  n = len(y)
  per_epoch = n // b
  k_perm, _ = jax.random.split(key)
  state = OPT.init(params)
  grad = jax.jit(jax.grad(loss_fn))
  for t in range(steps):
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(k_perm, t // per_epoch), n))
    idx = perm[(t % per_epoch) * b:(t % per_epoch + 1) * b]
    g = grad(params, Batch(jnp.asarray(x[idx]), jnp.asarray(y[idx]),
                                        jnp.ones(b, bool)))
    u, state = OPT.update(g, state, params)
    params = optax.apply_updates(params, u)
  return params, state


def test_lam_zero_is_fedavg_exactly(problem):
  """One engine round of GenFL with lam_t = 0 (and size weights) equals FedAvg's, bit for
  bit, although the server still trained theta_syn on synthetic data."""
  train, params, loss_fn, ref = problem
  got = run(make_genfl(loss_fn), train, params)
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(ref), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(got.round) == 1 and float(got.lam) == 0.0


def test_lam_one_is_the_server_trained_model(problem):
  train, params, loss_fn, agg = problem
  got = run(make_genfl(loss_fn, lam0=1.0, seed=5), train, params)
  x, y = synthetic_set()
  expected, _ = hand_trained(loss_fn, agg, x, y, jax.random.fold_in(jax.random.key(5), 0),
                             steps=7, b=4)
  assert_trees_close(got.params, expected)
  assert float(got.lam) == 1.0


def test_train_steps_follows_its_documented_batch_order(problem):
  _, params, loss_fn, _ = problem
  x, y = synthetic_set(n=9)
  key = jax.random.key(3)
  got, _ = jax.jit(lambda p: train_steps(loss_fn, OPT, p, OPT.init(p), jnp.asarray(x),
                                         jnp.asarray(y), key, steps=5, batch_size=4))(params)
  expected, _ = hand_trained(loss_fn, params, x, y, key, steps=5, b=4)  # 2 per epoch
  assert_trees_close(got, expected)


def test_lam_policies():
  np.testing.assert_allclose(lam_value("constant", np.arange(3), lam0=0.3), 0.3)
  np.testing.assert_allclose(lam_value("exp", np.array([0, 1, 3]), lam0=0.5, decay=0.5),
                             [0.5, 0.25, 0.0625])
  np.testing.assert_allclose(lam_value("cos", np.array([0, 1, 2, 4, 6]), lam0=0.5, rounds=4),
                             [0.5, 0.25 * (1 + np.cos(np.pi / 4)), 0.25, 0.0, 0.0], atol=1e-7)
  adaptive = lambda la, ls: lam_value("adaptive", 0, lam0=0.8, loss_agg=la, loss_syn=ls)
  np.testing.assert_allclose([adaptive(2.0, 1.0), adaptive(1.0, 2.0), adaptive(1.0, 0.0)],
                             [0.4, 0.0, 0.8])
  traced = jax.jit(lambda t: lam_value("cos", t, lam0=0.5, rounds=4))(jnp.int32(2))
  np.testing.assert_allclose(traced, 0.25)
  with pytest.raises(ValueError, match="Unknown genfl.lam_policy 'linear'; valid policies: "
                                       "constant, exp, cos, adaptive"):
    lam_value("linear", 0, lam0=0.5)
  with pytest.raises(ValueError, match="Unknown genfl.lam_policy"):
    make_genfl(linear_problem()[3], lam_policy="step")


def zero_uploads(params, m=2):
  deltas = jax.tree.map(lambda p: jnp.zeros((m, *p.shape), p.dtype), params)
  return (deltas, jnp.ones((m,))), jnp.full((m,), 1.0 / m)


def test_policies_in_the_server_update(problem):
  _, params, loss_fn, _ = problem
  for policy, expected in (("exp", [0.5, 0.25, 0.125]), ("cos", [0.5, 0.25, 0.0])):
    alg = make_genfl(loss_fn, lam_policy=policy, lam0=0.5, lam_decay=0.5, rounds=2,
                     server_steps=0)
    update = jax.jit(alg.server_update)
    server, lams = alg.server_init(params), []
    for _ in range(3):
      server = update(server, *zero_uploads(params))
      lams.append(float(server.lam))
    np.testing.assert_allclose(lams, expected, atol=1e-7)
  # adaptive: lam = lam0 * clip(1 - L_syn / L_agg) on the held-out synthetic split.
  alg = make_genfl(loss_fn, lam_policy="adaptive", lam0=0.5, server_steps=20)
  server = jax.jit(alg.server_update)(alg.server_init(params), *zero_uploads(params))
  x, y, vx, vy = split_validation(*synthetic_set(), seed=0)  # 20% held out at the end
  assert len(vy) == 2
  np.testing.assert_array_equal(server.syn_y, np.concatenate([y, vy]))
  syn, _ = jax.jit(lambda p: train_steps(loss_fn, OPT, p, OPT.init(p), jnp.asarray(x),
                                         jnp.asarray(y), jax.random.fold_in(jax.random.key(0), 0),
                                         steps=20, batch_size=4))(params)
  l_agg, l_syn = (mean_loss(loss_fn, p, jnp.asarray(vx), jnp.asarray(vy)) for p in (params, syn))
  lam = float(lam_value("adaptive", 0, lam0=0.5, loss_agg=l_agg, loss_syn=l_syn))
  assert 0 < lam < 0.5
  np.testing.assert_allclose(float(server.lam), lam, rtol=1e-4)
  assert_trees_close(server.params, jax.tree.map(lambda a, b: (1 - lam) * a + lam * b,
                                                 params, syn), atol=1e-4)


def test_skew_factor_and_weights(problem):
  np.testing.assert_allclose(skew_factor(np.array([4.0, 4, 4, 4]), 0.5), 1.0, rtol=1e-6)
  np.testing.assert_allclose(skew_factor(np.array([0.0, 9, 0, 0]), 0.5), 0.5, rtol=1e-6)
  np.testing.assert_allclose(skew_factor(np.array([3.0, 0, 3, 0]), 0.5), 0.75, rtol=1e-6)
  np.testing.assert_allclose(skew_factor(jnp.array([3.0, 0, 3, 0]), 0.4), 0.8, rtol=1e-6)

  _, params, loss_fn, _ = problem
  alg = make_genfl(loss_fn, skew_weight=0.5, server_steps=0)
  server = alg.server_init(params)
  deltas = jax.tree.map(lambda p: jnp.stack([jnp.ones_like(p), 3 * jnp.ones_like(p)]), params)
  new = alg.server_update(server, (deltas, jnp.array([1.0, 0.5])), jnp.array([0.5, 0.5]))
  # w ~ (0.5 * 1, 0.5 * 0.5) -> (2/3, 1/3): mean delta 2/3 + 1 = 5/3.
  assert_trees_close(new.params, jax.tree.map(lambda p: p - 5.0 / 3.0, params))


def test_clients_upload_the_skew_of_what_they_trained_on(problem):
  train, params, loss_fn, _ = problem
  alg = make_genfl(loss_fn, skew_weight=0.6)
  server = alg.server_init(params)

  @jax.jit
  def factor_of(x, y, n, key):
    data = local.ClientData(x, y, n)
    carry = local.begin(alg.client_init, server, (), key)
    carry = local.run_steps(alg.client_step, SCHEDULE, server, carry, data, 0, 16,
                            loop="scan")
    (_, factor), _, _ = local.end(alg, SCHEDULE, server, (), carry, data)
    return factor

  for k, n in enumerate(train.count):
    factor = factor_of(train.x[k], train.y[k], jnp.int32(n), jax.random.key(k))
    expected = skew_factor(np.bincount(train.y[k, :n], minlength=3).astype(float), 0.6)
    np.testing.assert_allclose(float(factor), expected, rtol=1e-5)


def test_aigc_only_trains_on_synthetic_data_alone(problem):
  train, params, loss_fn, _ = problem
  x, y = synthetic_set()
  alg = aigc_only(loss_fn, OPT, synthetic_x=x, synthetic_y=y, server_steps=3, batch_size=5,
                  seed=2)
  got = run(alg, train, params, rounds=2)
  # Two rounds of 3 steps with one optimizer state, batch order keyed by the round; the
  # clients' uploads are ignored.
  steps = jax.jit(lambda p, s, r: train_steps(
      loss_fn, OPT, p, s, jnp.asarray(x), jnp.asarray(y),
      jax.random.fold_in(jax.random.key(2), r), steps=3, batch_size=5))
  p, s = params, OPT.init(params)
  for r in range(2):
    p, s = steps(p, s, r)
  assert_trees_close(got.params, p)
  with pytest.raises(ValueError, match="genfl.server_steps >= 1"):
    aigc_only(loss_fn, OPT, synthetic_x=x, synthetic_y=y, server_steps=0, batch_size=5)
