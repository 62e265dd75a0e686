"""The round: vmapped == one client at a time; padding is a no-op; FedAvg(1 client,
1 step) == one SGD step; every execution plan agrees."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_gen.algorithms import Batch, fedavg
from fedjax_gen.data import ClientArrays
from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation
from fedjax_gen.engine import local
from tests.helpers import assert_trees_close, linear_problem

PLANS = [ExecutionPlan(3, 0), ExecutionPlan(1, 0), ExecutionPlan(1, 2), ExecutionPlan(2, 3),
         ExecutionPlan(3, 1)]


def run_rounds(alg, train, schedule, plan, params, rounds=2, per_round=3):
  sim = Simulation(alg, train, schedule, clients_per_round=per_round, plan=plan)
  server, states = sim.init(params)
  for r in range(rounds):
    server, states, metrics = sim.round(server, states, jax.random.key(r))
  return server, metrics


@pytest.mark.parametrize("schedule", [LocalSchedule(2, 2, 0), LocalSchedule(3, 1, 4)])
def test_all_plans_agree(schedule):
  train, _, params, loss_fn = linear_problem()
  alg = fedavg(loss_fn, optax.sgd(0.1, momentum=0.9))
  ref, ref_metrics = run_rounds(alg, train, schedule, PLANS[0], params)
  for plan in PLANS[1:]:
    server, metrics = run_rounds(alg, train, schedule, plan, params)
    assert_trees_close(server.params, ref.params)
    np.testing.assert_allclose(metrics.train_loss, ref_metrics.train_loss, rtol=1e-5)


def test_vmapped_equals_hand_written_client_loop():
  """The engine's local training equals a plain per-client optax loop over the same batches."""
  train, _, params, loss_fn = linear_problem()
  opt = optax.sgd(0.1, momentum=0.9)
  schedule = LocalSchedule(batch_size=2, local_epochs=2, local_steps=0)
  alg = fedavg(loss_fn, opt)
  server, _ = run_rounds(alg, train, schedule, ExecutionPlan(3, 0), params, rounds=1)

  sim = Simulation(alg, train, schedule, clients_per_round=3, plan=ExecutionPlan(3, 0))
  ids, keys = sim._sample_ids(jax.random.key(0))
  locals_, counts = [], []
  for cid, key in zip(np.asarray(ids), keys):
    n = int(train.count[cid])
    data = local.ClientData(jnp.asarray(train.x[cid]), jnp.asarray(train.y[cid]), jnp.int32(n))
    data_key = jax.random.split(key)[1]
    p, s = params, opt.init(params)
    for t in range(int(schedule.num_steps(n))):  # only the client's real steps
      batch = local.select_batch(data, data_key, jnp.int32(t), schedule)
      assert bool(batch.mask[0])
      g = jax.grad(loss_fn)(p, batch)
      u, s = opt.update(g, s, p)
      p = optax.apply_updates(p, u)
    locals_.append(p)
    counts.append(n)
  w = np.asarray(counts, np.float32) / sum(counts)
  expected = jax.tree.map(lambda *ps: sum(wi * pi for wi, pi in zip(w, ps)), *locals_)
  assert_trees_close(server.params, expected)


def test_padding_is_a_no_op():
  """A client padded to more examples (more masked steps) trains exactly as unpadded."""
  train, _, params, loss_fn = linear_problem(counts=(5,), max_n=5)
  padded = ClientArrays(np.pad(train.x, ((0, 0), (0, 11), (0, 0))),
                        np.pad(train.y, ((0, 0), (0, 11))), train.count)
  alg = fedavg(loss_fn, optax.sgd(0.1, momentum=0.9))
  schedule = LocalSchedule(2, 3, 0)
  a, _ = run_rounds(alg, train, schedule, ExecutionPlan(1, 0), params, per_round=1)
  b, _ = run_rounds(alg, padded, schedule, ExecutionPlan(1, 0), params, per_round=1)
  assert_trees_close(a.params, b.params)


def test_fedavg_one_client_one_step_is_sgd():
  train, _, params, loss_fn = linear_problem(counts=(6,), max_n=6)
  alg = fedavg(loss_fn, optax.sgd(0.3))
  server, _ = run_rounds(alg, train, LocalSchedule(6, 1, 1), ExecutionPlan(1, 0), params,
                         rounds=1, per_round=1)
  batch = Batch(jnp.asarray(train.x[0]), jnp.asarray(train.y[0]), jnp.ones(6, bool))
  grads = jax.grad(loss_fn)(params, batch)
  expected = jax.tree.map(lambda p, g: p - 0.3 * g, params, grads)
  assert_trees_close(server.params, expected)


def test_epoch_schedule_visits_every_example_once_per_epoch():
  train, *_ = linear_problem(counts=(5,), max_n=8)
  schedule = LocalSchedule(2, 2, 0)
  data = local.ClientData(jnp.asarray(train.x[0]), jnp.asarray(train.y[0]), jnp.int32(5))
  assert int(schedule.num_steps(5)) == 6
  for epoch in range(2):
    seen = []
    for t in range(3 * epoch, 3 * epoch + 3):
      b = local.select_batch(data, jax.random.key(1), jnp.int32(t), schedule)
      seen += [tuple(np.asarray(x)) for x, m in zip(b.x, b.mask) if m]
    assert sorted(seen) == sorted(tuple(r) for r in np.asarray(train.x[0, :5]))


def test_round_is_deterministic():
  train, _, params, loss_fn = linear_problem()
  alg = fedavg(loss_fn, optax.sgd(0.1))
  a, _ = run_rounds(alg, train, LocalSchedule(2, 1, 0), ExecutionPlan(2, 0), params, per_round=2)
  b, _ = run_rounds(alg, train, LocalSchedule(2, 1, 0), ExecutionPlan(2, 0), params, per_round=2)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)
