"""Client data goes to the device once, when the `Simulation` is built, never per round.

After a warm-up round (compilation, first-use constants), a round of either plan -- fused
(the default for models without wide native convolutions) or host loop -- runs under
`jax.transfer_guard("disallow")`: any implicit host->device copy (client data, sampled
ids, the NumPy id table, a Python scalar) would raise.
"""

import jax
import numpy as np
import optax
import pytest

from fedjax_gen import models
from fedjax_gen.algorithms import fedavg
from fedjax_gen.data import ClientArrays
from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation, masked_cross_entropy
from fedjax_gen.trainer.plan import auto_plan


def mlp_simulation(plan, clients=6, per_round=3, examples=40):
  """A small MLP problem on 28x28x1 inputs, built as `fedjax-gen run` builds it."""
  rng = np.random.default_rng(0)
  train = ClientArrays(rng.random((clients, examples, 28, 28, 1), np.float32),
                       rng.integers(0, 10, (clients, examples)).astype(np.int32),
                       rng.integers(examples // 2, examples + 1, clients).astype(np.int32))
  model = models.get_model("mlp", num_classes=10, input_shape=(28, 28, 1), hidden=(16,))
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  params = models.init_params(model, (28, 28, 1), jax.random.key(0))
  alg = fedavg(masked_cross_entropy(apply_fn), optax.sgd(0.01))
  sim = Simulation(alg, train, LocalSchedule(8, 1, 0), clients_per_round=per_round,
                   plan=plan or auto_plan(per_round, native_conv=False))
  return sim, sim.init(params)


@pytest.mark.parametrize("plan", [None, ExecutionPlan(3, 0)], ids=["auto", "fused_vmap3"])
def test_fused_round_makes_no_host_to_device_transfer(plan):
  sim, (server, states) = mlp_simulation(plan)
  assert sim.plan.fused
  keys = list(jax.random.split(jax.random.key(0), 3))  # made on the device, before the guard
  server, states, _ = sim.round(server, states, keys[0])  # warm-up: compiles
  jax.block_until_ready(server)
  with jax.transfer_guard("disallow"):
    for key in keys[1:]:
      server, states, metrics = sim.round(server, states, key)
    jax.block_until_ready((server, states, metrics))
  assert np.isfinite(float(metrics.train_loss))


@pytest.mark.parametrize("plan", [ExecutionPlan(1, 5), ExecutionPlan(2, 3)],
                         ids=["host1x5", "host2x3"])
def test_host_loop_round_makes_no_host_to_device_transfer(plan):
  """The CPU default for wide native convolutions (PFLlib's CNN4): block offsets and chunk
  slices of the sampled ids and keys are made on the device, the data never moves."""
  sim, (server, states) = mlp_simulation(plan)
  keys = list(jax.random.split(jax.random.key(0), 2))
  server, states, _ = sim.round(server, states, keys[0])
  jax.block_until_ready(server)
  with jax.transfer_guard("disallow"):
    server, states, metrics = sim.round(server, states, keys[1])
    jax.block_until_ready((server, states, metrics))
  assert np.isfinite(float(metrics.train_loss))


def test_population_data_is_an_argument_not_a_compiled_constant():
  """Closed over, the population would be copied into each compiled program as a constant
  (compile time and memory growing with the population); it is passed as an argument."""
  sim, (server, states) = mlp_simulation(None, clients=64, examples=40)
  text = sim._round_fused.lower(sim.data, sim._train_ids, server, states,
                                 jax.random.key(0)).as_text()
  assert len(text) < sim.data.x.nbytes / 4  # embedded, its hex alone would be 2x nbytes
