"""Client-level DP: exactness without noise, the noise's std, clipping, the accountant's
epsilon recomputed from what a run records, calibration, and bad values refused."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dp_accounting import NeighboringRelation, dp_event
from dp_accounting.rdp import RdpAccountant

from fedjax_gen import config as config_lib
from fedjax_gen.algorithms import fedavg, make_algorithm
from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation
from fedjax_gen.privacy import accounting
from fedjax_gen.privacy.dp import clip, dp_aggregate
from fedjax_gen.trainer.train import train_and_evaluate
from tests.helpers import linear_problem, normnet_problem

KEY = jax.random.key(7)


def rounds_of(alg, rounds=2, counts=(6, 6, 6, 6), cohort=4):
  train, _, params, loss_fn = linear_problem(counts=counts, max_n=max(counts))
  sim = Simulation(alg(loss_fn), train, LocalSchedule(3, 1, 0), clients_per_round=cohort,
                   plan=ExecutionPlan(cohort, 0))
  server, states = sim.init(params)
  for r in range(rounds):
    server, states, _ = sim.round(server, states, jax.random.key(r))
  return params, server


def test_without_noise_and_with_a_loose_clip_it_is_fedavg_exactly():
  """Equal client sizes (so FedAvg's weights are the equal weights DP uses), a cohort of 4
  (1/4 is exact), noise 0, a clip norm no update reaches: the same bits as FedAvg."""
  opt = optax.sgd(0.1)
  _, plain = rounds_of(lambda loss: fedavg(loss, opt, optax.sgd(1.0)))
  _, private = rounds_of(lambda loss: dp_aggregate(fedavg(loss, opt, optax.sgd(1.0)),
                                                   clip_norm=1e6, noise_multiplier=0.0,
                                                   key=KEY))
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(private.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(private.rounds) == 2


def test_the_noise_on_the_mean_has_the_stated_std():
  """Zero uploads from m clients: what the server applies is the noise alone, N(0, (z C /
  m)^2) per coordinate, fresh each round."""
  z, c, m = 1.5, 0.8, 5
  params = {"w": jnp.zeros((200, 100))}
  alg = dp_aggregate(fedavg(lambda p, b: 0.0, optax.sgd(1.0), optax.sgd(1.0)), clip_norm=c,
                     noise_multiplier=z, key=KEY)
  server = alg.server_init(params)
  zeros = {"w": jnp.zeros((m, 200, 100))}
  first = alg.server_update(server, zeros, jnp.full((m,), 1 / m))
  second = alg.server_update(first, zeros, jnp.full((m,), 1 / m))
  step1 = -np.asarray(first.params["w"])  # server SGD(1): params -= mean update
  step2 = -np.asarray(second.params["w"]) - step1
  expected = z * c / m
  for noise in (step1, step2):
    assert abs(noise.std() / expected - 1) < 0.02 and abs(noise.mean()) < 0.01 * expected
  assert np.corrcoef(step1.ravel(), step2.ravel())[0, 1] < 0.05  # a new draw each round


def test_clipping_bounds_every_clients_contribution():
  big = {"a": jnp.full((3,), 10.0), "b": jnp.full((2, 2), -10.0)}
  clipped, norm = clip(big, 2.0)
  np.testing.assert_allclose(float(norm), 10.0 * np.sqrt(7), rtol=1e-6)
  total = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(clipped)))
  np.testing.assert_allclose(total, 2.0, rtol=1e-6)
  small = {"a": jnp.full((3,), 0.1)}
  chex.assert_trees_all_close(clip(small, 2.0)[0], small)  # within the bound: unchanged
  # A client's whole round moves the model by at most clip_norm (one client, no noise).
  params, server = rounds_of(lambda loss: dp_aggregate(
      fedavg(loss, optax.sgd(50.0), optax.sgd(1.0)), clip_norm=0.01, noise_multiplier=0.0,
      key=KEY), rounds=1, counts=(6,), cohort=1)
  moved = np.sqrt(sum(np.sum(np.square(np.asarray(a) - np.asarray(b))) for a, b in zip(
      jax.tree.leaves(params), jax.tree.leaves(server.params))))
  assert 0.0099 < moved <= 0.01 + 1e-7


def recomputed_epsilon(p: dict) -> float:
  """Epsilon from a run's `privacy` record, straight from dp-accounting."""
  assert (p["sampling"], p["neighbouring"], p["accountant"]) == ("fixed_size", "replace_one",
                                                                 "rdp")
  event = dp_event.SelfComposedDpEvent(dp_event.SampledWithoutReplacementDpEvent(
      p["population"], p["cohort"], dp_event.GaussianDpEvent(p["noise_multiplier"] / 2)),
      p["rounds"])
  accountant = RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
  return accountant.compose(event).get_epsilon(p["delta"])


TINY = ["num_clients=16", "clients_per_round=4", "rounds=4", "eval_every=2",
        "checkpoint_every=2", "progress=false", "alpha=1.0", "dp.enabled=true",
        "dp.clip_norm=0.5", "dp.delta=1e-3"]


def cfg(*overrides):
  return config_lib.apply_overrides(config_lib.load_config("quickstart"),
                                    TINY + list(overrides))


def test_a_dp_run_records_an_epsilon_dp_accounting_reproduces(tmp_path):
  summary = train_and_evaluate(cfg("dp.noise_multiplier=1.2"), str(tmp_path))
  p = summary["privacy"]
  assert (p["noise_multiplier"], p["clip_norm"], p["population"], p["cohort"], p["rounds"]) == (
      1.2, 0.5, 16, 4, 4)
  assert p["epsilon"] == pytest.approx(recomputed_epsilon(p), rel=1e-9)
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  spent = [r["epsilon"] for r in rows]
  assert spent == sorted(spent) and spent[-1] == pytest.approx(p["epsilon"], rel=1e-9)
  assert spent[0] == pytest.approx(recomputed_epsilon({**p, "rounds": 1}), rel=1e-9)


def test_a_dp_run_resumes_to_the_same_numbers(tmp_path):
  whole = train_and_evaluate(cfg("dp.noise_multiplier=0.8"), str(tmp_path / "whole"))
  train_and_evaluate(cfg("dp.noise_multiplier=0.8", "rounds=2"), str(tmp_path / "split"))
  resumed = train_and_evaluate(cfg("dp.noise_multiplier=0.8"), str(tmp_path / "split"))
  assert resumed["global_accuracy"] == whole["global_accuracy"]
  plain = train_and_evaluate(cfg("dp.enabled=false"), str(tmp_path / "plain"))
  assert plain["global_accuracy"] != whole["global_accuracy"]  # the noise is there


@pytest.mark.parametrize("target", [1.0, 4.0, 8.0])
def test_calibration_hits_the_target_epsilon(target):
  z = accounting.calibrate(target, 1000, 100, 100, 1e-5)
  assert accounting.epsilon(z, 1000, 100, 100, 1e-5) == pytest.approx(target, rel=0.01)
  assert accounting.epsilon(z * 0.98, 1000, 100, 100, 1e-5) > target  # the least noise


def test_a_target_epsilon_run_cannot_change_its_rounds(tmp_path):
  summary = train_and_evaluate(cfg("dp.target_epsilon=20", "rounds=2"), str(tmp_path))
  assert summary["privacy"]["epsilon"] == pytest.approx(20, rel=0.01)
  with pytest.raises(ValueError, match="calibrated to dp.target_epsilon over its rounds=2"):
    train_and_evaluate(cfg("dp.target_epsilon=20", "rounds=3"), str(tmp_path))


@pytest.mark.parametrize("overrides, message", [
    (["dp.clip_norm=0"], "dp.clip_norm must be > 0"),
    (["dp.noise_multiplier=-1"], "dp.noise_multiplier must be >= 0"),
    (["dp.delta=1.5"], r"dp.delta must be in \(0, 1\)"),
    (["dp.delta=0.2"], r"above 1/num_clients = 0.0625"),
    (["algorithm=scaffold"], "cannot cover algorithm=scaffold: its uploads carry control"),
    (["algorithm=pfedgpa"], "cannot cover algorithm=pfedgpa"),
])
def test_bad_dp_values_are_refused_before_any_data_is_read(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    config_lib.validate(cfg(*overrides))


def test_an_unreachable_target_epsilon_names_the_noise_it_would_need(tmp_path):
  with pytest.raises(ValueError, match=r"dp.target_epsilon=0.001 is out of reach .* even "
                                       r"noise_multiplier=1000"):
    train_and_evaluate(cfg("dp.target_epsilon=0.001", "rounds=200", "clients_per_round=16",
                           "num_clients=16", "dp.delta=1e-2"), str(tmp_path))
  assert not tmp_path.joinpath("config.json").exists()


def test_every_covered_algorithm_runs_under_dp():
  from fedjax_gen.privacy.dp import COVERED
  train, _, params, loss_fn = normnet_problem(counts=(4, 4, 4), max_n=4)  # body, norm, head
  for name in COVERED:
    alg = make_algorithm(name, loss_fn, lr=0.1, momentum=0.0, num_clients=3, params=params)
    private = dp_aggregate(alg, clip_norm=1.0, noise_multiplier=0.5, key=KEY)
    sim = Simulation(private, train, LocalSchedule(2, 1, 0), clients_per_round=2,
                     plan=ExecutionPlan(2, 0))
    server, states = sim.init(params)
    server, states, m = sim.round(server, states, jax.random.key(0))
    assert np.isfinite(float(m.train_loss)), name
