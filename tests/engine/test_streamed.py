"""`StreamedSimulation`: a population in a host store gives `Simulation`'s numbers (the same
sampled clients, the same batches, client states kept across rounds on the host), moves
each round's data with one explicit transfer, and `data.layout` chooses between the two
in the trainer (same results; the cases that cannot run refused in one line)."""

import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from fedjax_gen import config as config_lib
from fedjax_gen import models
from fedjax_gen.algorithms import fedavg, scaffold
from fedjax_gen.data import PopulationStore, stack_clients
from fedjax_gen.engine import (ExecutionPlan, LocalSchedule, Simulation, StreamedSimulation,
                               masked_cross_entropy)
from fedjax_gen.engine.streamed import bucket
from fedjax_gen.trainer import layout as layout_lib
from fedjax_gen.trainer import options
from fedjax_gen.trainer.train import _setup, train_and_evaluate
from fedjax_gen.types import Adaptation
from tests.helpers import assert_trees_close

SIZES = (3, 17, 8, 1, 30, 12, 5, 9)  # unequal clients, the largest 10x the median


def mlp_problem(algorithm="fedavg"):
  rng = np.random.default_rng(0)
  x = rng.random((120, 6, 6, 1), np.float32)
  y = rng.integers(0, 4, 120).astype(np.int32)
  idx = [rng.choice(120, n) for n in SIZES]
  model = models.get_model("mlp", num_classes=4, input_shape=(6, 6, 1), hidden=(8,))
  apply_fn = lambda p, xb: model.apply({"params": p}, xb)
  params = models.init_params(model, (6, 6, 1), jax.random.key(0))
  loss_fn = masked_cross_entropy(apply_fn)
  alg = (fedavg(loss_fn, optax.sgd(0.1, momentum=0.9)) if algorithm == "fedavg" else
         scaffold(loss_fn, optax.sgd(0.1), lr=0.1, num_clients=len(SIZES)))
  return alg, stack_clients(x, y, idx), PopulationStore.from_indices(x, y, idx), params


def both(alg, train, store, schedule, plan, per_round=3, **kw):
  return (Simulation(alg, train, schedule, clients_per_round=per_round, plan=plan, **kw),
          StreamedSimulation(alg, store, schedule, clients_per_round=per_round, plan=plan,
                             **kw))


@pytest.mark.parametrize("plan", [ExecutionPlan(3, 0), ExecutionPlan(1, 0)],
                         ids=["vmap3", "chunk1"])
@pytest.mark.parametrize("schedule", [LocalSchedule(4, 2, 0), LocalSchedule(5, 1, 3)],
                         ids=["epochs", "steps"])
def test_fedavg_equals_simulation(plan, schedule):
  alg, train, store, params = mlp_problem()
  sim, streamed = both(alg, train, store, schedule, plan, train_ids=[0, 1, 2, 4, 5, 6, 7])
  assert streamed.max_steps == sim.max_steps and streamed.pad_to == train.x.shape[1]
  (sa, ca), (sb, cb) = sim.init(params), streamed.init(params)
  keys = [jax.random.key(r) for r in range(5)]
  for r in range(4):
    sa, ca, ma = sim.round(sa, ca, keys[r])
    # rounds 0-2 announce the next key (prefetched); round 3 loads its own
    sb, cb, mb = streamed.round(sb, cb, keys[r], next_key=keys[r + 1] if r < 2 else None)
    np.testing.assert_array_equal(np.asarray(ma.client_ids), np.asarray(mb.client_ids))
    np.testing.assert_allclose(float(ma.train_loss), float(mb.train_loss), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(ma.local_steps), np.asarray(mb.local_steps))
  assert_trees_close(sa.params, sb.params)
  assert streamed.data_stats["rounds"] == 4 and streamed.data_stats["prefetched"] == 2
  assert all(b == bucket(b) >= streamed.pad_to for b in streamed.data_stats["buckets"])


def test_a_key_announced_as_another_object_is_still_prefetched():
  alg, train, store, params = mlp_problem()
  _, streamed = both(alg, train, store, LocalSchedule(4, 1, 0), None)
  server, states = streamed.init(params)
  server, states, _ = streamed.round(server, states, jax.random.key(0),
                                     next_key=jax.random.key(1))
  server, states, _ = streamed.round(server, states, jax.random.key(1))  # same key, new object
  assert streamed.data_stats["prefetched"] == 1
  server, states, _ = streamed.round(server, states, jax.random.key(5),
                                     next_key=jax.random.key(6))
  streamed.round(server, states, jax.random.key(7))  # not the announced one: loads its own
  assert streamed.data_stats["prefetched"] == 1
  streamed.close()


def test_scaffold_control_variates_equal_simulations_after_three_rounds():
  alg, train, store, params = mlp_problem("scaffold")
  sim, streamed = both(alg, train, store, LocalSchedule(4, 1, 0), ExecutionPlan(3, 0))
  (sa, ca), (sb, cb) = sim.init(params), streamed.init(params)
  assert cb["rows"].shape[0] == 0 and (cb["slot"] == -1).all()  # no client's state yet
  keys = [jax.random.key(10 + r) for r in range(4)]
  history = []
  for r in range(3):
    sa, ca, _ = sim.round(sa, ca, keys[r])
    sb, cb, _ = streamed.round(sb, cb, keys[r], next_key=keys[r + 1])
    history.append((cb, jax.tree.map(np.copy, cb)))  # what a checkpoint would be saving
    assert cb["rows"].shape[0] <= 2 * 3 * (r + 1)  # rows only for clients that trained
  for returned, copied in history:  # never written after being returned
    assert all((a == b).all() for a, b in zip(jax.tree.leaves(returned),
                                               jax.tree.leaves(copied)))
  assert_trees_close(sa, sb)
  everyone = np.arange(len(SIZES))
  assert_trees_close(ca, streamed.states_of(cb, everyone))  # every c_i, trained or not
  assert any(np.abs(a).sum() > 0 for a in jax.tree.leaves(cb))
  finetune = fine_tuning(mlp_problem("fedavg")[0])
  ids = np.array([1, 4, 6, 7])  # two groups of clients_per_round=3 in the streamed adapt
  assert_trees_close(  # personalization / newcomers: the same adapted params
      sim.adapt(finetune, sa, ca, ids, jax.random.key(3), steps=2),
      streamed.adapt(finetune, sb, cb, ids, jax.random.key(3), steps=2))


def test_server_post_sees_and_updates_the_sampled_states():
  """pFedGPA's shape: a second jitted server computation over the sampled clients' states,
  timed apart (`last_timing`), its new states written back into the host population."""
  alg, train, store, params = mlp_problem("scaffold")
  post = lambda server, sampled: (server, jax.tree.map(lambda a: 0.5 * a + 1.0, sampled))
  alg = alg._replace(server_post=post)
  sim, streamed = both(alg, train, store, LocalSchedule(4, 1, 0), ExecutionPlan(3, 0),
                       time_split=True)
  (sa, ca), (sb, cb) = sim.init(params), streamed.init(params)
  for r in range(2):
    sa, ca, _ = sim.round(sa, ca, jax.random.key(r))
    sb, cb, _ = streamed.round(sb, cb, jax.random.key(r))
  assert_trees_close(ca, streamed.states_of(cb, np.arange(len(SIZES))))
  assert set(streamed.last_timing) == {"client_s", "server_s"}


def fine_tuning(fedavg_alg):
  """Local SGD from the global model (FedAvg's local steps), as an `Adaptation`."""
  return Adaptation(fedavg_alg.client_init, fedavg_alg.client_step,
                    lambda server, cs, carry: carry.params)


@pytest.mark.parametrize("algorithm", ["fedavg", "scaffold"])
def test_a_round_makes_exactly_one_explicit_transfer(algorithm, monkeypatch):
  """After a warm-up round, the round's data (and, for SCAFFOLD, the sampled clients'
  control variates) reach the device in one `jax.device_put`, on the prefetch thread or
  the caller's, and nothing moves implicitly."""
  alg, train, store, params = mlp_problem(algorithm)
  _, streamed = both(alg, train, store, LocalSchedule(4, 1, 0), ExecutionPlan(3, 0))
  server, states = streamed.init(params)
  keys = list(jax.random.split(jax.random.key(0), 4))  # made on the device, before the guard
  server, states, _ = streamed.round(server, states, keys[0])  # warm-up: compiles
  jax.block_until_ready(server)
  puts = []
  real_put = jax.device_put
  monkeypatch.setattr(jax, "device_put", lambda *a, **k: puts.append(1) or real_put(*a, **k))
  with jax.transfer_guard("disallow"):
    for r in (1, 2, 3):  # 1 loads its own data, 2 and 3 were announced (prefetched)
      server, states, metrics = streamed.round(server, states, keys[r],
                                               next_key=keys[r + 1] if r < 3 else None)
    jax.block_until_ready((server, metrics))
  streamed.close()  # the prefetch thread is done
  assert len(puts) == 3 and streamed.data_stats["prefetched"] == 2
  assert np.isfinite(float(metrics.train_loss))


def test_what_the_streamed_round_refuses():
  alg, train, store, params = mlp_problem()
  schedule = LocalSchedule(4, 1, 0)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("clients",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("clients"))
  for kw, expect in ((dict(sharding=sharding), "trains on one device"),
                     (dict(plan=ExecutionPlan(1, 5)), "runs the fused round only"),
                     (dict(clients_per_round=9), "clients_per_round=9 must be in [1, 8]"),
                     (dict(train_ids=[0, 8]), "train_ids must lie in [0, 8)")):
    with pytest.raises(ValueError) as e:
      StreamedSimulation(alg, store, schedule, **{"clients_per_round": 3, **kw})
    assert expect in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(ValueError, match="sweep.vmap=false"):
    StreamedSimulation(alg, store, schedule, clients_per_round=3).host_data()


# --- the trainer's choice: data.layout ------------------------------------------------------
SMALL = ["num_clients=8", "clients_per_round=4", "rounds=4", "progress=false", "alpha=1.0",
         "eval_every=2", "checkpoint_every=2", "local_epochs=1"]


def quickstart(*overrides):
  return config_lib.apply_overrides(config_lib.load_config("quickstart"),
                                    SMALL + list(overrides))


def same_run(a: dict, b: dict, a_dir, b_dir):
  for key in ("global_accuracy", "global_loss", "personalized_accuracy"):
    assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
  assert a["audit"]["membership"] == pytest.approx(b["audit"]["membership"], rel=1e-5)
  read = lambda d: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
  for x, y in zip(read(a_dir), read(b_dir), strict=True):
    assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)


def test_store_layout_run_equals_device_layout_run(tmp_path):
  store = train_and_evaluate(quickstart("data.layout=store"), str(tmp_path / "store"))
  device = train_and_evaluate(quickstart("data.layout=device"), str(tmp_path / "device"))
  same_run(store, device, tmp_path / "store", tmp_path / "device")


def test_scaffold_in_a_store_resumes_exactly_after_sigkill(tmp_path):
  """The control variates are NumPy in the checkpoint: a store run killed after its round-2
  checkpoint and run again ends as one uninterrupted run; resuming it under the other
  layout is one line."""
  args = [*SMALL, "algorithm=scaffold", "seed=1", "data.layout=store", "checkpoint_every=2",
          "rounds=6", "eval_every=2"]
  cmd = [sys.executable, "-m", "fedjax_gen", "run", "quickstart", *args,
         "--workdir", str(tmp_path / "killed")]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  saved = tmp_path / "killed" / "checkpoints" / "2"
  deadline = time.time() + 240
  while time.time() < deadline and not saved.exists() and proc.poll() is None:
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  with pytest.raises(ValueError, match="written with data.layout=store; this run has "
                                       "data.layout=device. Resume it with data.layout=store"):
    train_and_evaluate(quickstart(*[a.replace("=store", "=device") for a in args]),
                       str(tmp_path / "killed"))
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
  once = train_and_evaluate(quickstart(*args), str(tmp_path / "once"))
  same_run(resumed, once, tmp_path / "killed", tmp_path / "once")


def test_auto_keeps_the_device_below_a_quarter_of_its_memory(tmp_path, monkeypatch):
  config = quickstart()
  assert config.data.layout == "auto"
  assert isinstance(_setup(config, str(tmp_path)).sim, Simulation)
  monkeypatch.setattr(layout_lib, "device_capacity", lambda: (100_000, "test memory"))
  assert isinstance(_setup(config, str(tmp_path)).sim, StreamedSimulation)


def test_device_layout_too_large_for_the_device_says_so_before_training(tmp_path,
                                                                         monkeypatch):
  monkeypatch.setattr(layout_lib, "device_capacity", lambda: (100_000, "test memory"))
  with pytest.raises(ValueError) as e:
    train_and_evaluate(quickstart("data.layout=device"), str(tmp_path))
  msg = str(e.value)
  assert "\n" not in msg and "data.layout=device: the training population padded" in msg
  assert "bytes (8 clients x" in msg and "examples x 260 bytes) but the device has 100000 " \
      "bytes (test memory); use data.layout=store" in msg
  assert not (tmp_path / "config.json").exists() and not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("kwargs, overrides, expect", [
    (dict(num_devices=4), [], "trains on one device, not sharded over 4; set "
                              "run.num_devices=1"),
    (dict(generative=True), [], "generative algorithms append synthetic examples"),
    ({}, ["run.steps_per_call=10"], "runs the fused round only, not the host loop"),
])
def test_store_layout_refusals_are_one_line(kwargs, overrides, expect):
  sizes, shape = [5, 9], (8, 8, 1)  # 2 x 9 x 260 bytes padded
  room = 10_000 // kwargs.get("num_devices", 1)  # the padded population: over a quarter
  config = quickstart("data.layout=store", *overrides)
  with pytest.raises(ValueError) as e:
    layout_lib.choose(config, sizes, shape, capacity=(room, "test"), **kwargs)
  assert expect in str(e.value) and "\n" not in str(e.value)
  auto = quickstart("data.layout=auto", *overrides)
  assert layout_lib.choose(auto, sizes, shape, capacity=(room, "test"), **kwargs) == "device"
  assert layout_lib.choose(quickstart("data.layout=auto"), sizes, shape,
                           capacity=(10_000, "test")) == "store"
  with pytest.raises(ValueError) as e:  # auto, too big for the device, and no store either
    layout_lib.choose(auto, sizes, shape, capacity=(room // 10, "test"), **kwargs)
  assert "data.layout=store cannot run instead: " in str(e.value) and "\n" not in str(e.value)


def test_layout_values_are_checked():
  with pytest.raises(ValueError, match="Unknown data.layout 'disk'; valid: auto, device, "
                                       "store"):
    options.validate(quickstart("data.layout=disk"))
  ddpm = config_lib.apply_overrides(config_lib.load_config("ddpm_fmnist"),
                                    ["data.layout=store"])
  with pytest.raises(ValueError, match="data.layout=store trains classifiers"):
    options.validate(ddpm)


def test_store_equals_device_on_a_niid_bench_dirichlet_round(tmp_path):
  """NIID-Bench's Fashion-MNIST setup (10 clients, simple CNN), Dir(0.5), one round of five
  local steps: the store path's numbers are the padded layout's."""
  base = ["partition=dirichlet", "alpha=0.5", "rounds=1", "local_steps=5", "eval_every=1",
          "progress=false"]
  run = lambda layout: train_and_evaluate(config_lib.apply_overrides(
      config_lib.load_config("niid_fmnist"), base + [f"data.layout={layout}"]),
      str(tmp_path / layout))
  same_run(run("store"), run("device"), tmp_path / "store", tmp_path / "device")
