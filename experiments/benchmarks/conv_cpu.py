"""Which convolution and execution plan train a convnet fastest on this backend?

Times one FedAvg round (after compiling) of NIID-Bench-shaped work -- `--clients` clients
of unequal size (from `--examples`/8 up to `--examples` 28x28x1 examples, as label-skewed
partitions give), 1 local epoch of batch 64 -- for each model, under every combination of
conv implementation (native XLA / im2col) and execution plan (fused: one jitted round,
scanned steps, all clients vmapped or one client per chunk; host: clients one at a time,
blocks of 10 unrolled steps), all in one process, and prints examples/s. The engine's
automatic choice (`auto_plan`, `conv_impl="auto"`) is set from this.

    python experiments/benchmarks/conv_cpu.py --models simple_cnn cnn4
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from fedjax_gen import models
from fedjax_gen.algorithms import make_algorithm
from fedjax_gen.data import ClientArrays
from fedjax_gen.engine import (ExecutionPlan, LocalSchedule, Simulation, masked_cross_entropy)


def round_throughput(model_name, conv_impl, plan, clients, examples, repeats):
  rng = np.random.default_rng(0)
  counts = np.linspace(examples // 8, examples, clients).astype(np.int32)
  train = ClientArrays(rng.random((clients, examples, 28, 28, 1), np.float32),
                       rng.integers(0, 10, (clients, examples)).astype(np.int32), counts)
  model = models.get_model(model_name, num_classes=10, input_shape=(28, 28, 1),
                           conv_impl=conv_impl)
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  params = models.init_params(model, (28, 28, 1), jax.random.key(0))
  alg = make_algorithm("fedavg", masked_cross_entropy(apply_fn), lr=0.01, momentum=0.9,
                       num_clients=clients)
  sim = Simulation(alg, train, LocalSchedule(64, 1, 0), clients_per_round=clients, plan=plan)
  server, states = sim.init(params)
  server, states, m = sim.round(server, states, jax.random.key(0))  # compile
  jax.block_until_ready(server)
  t = time.perf_counter()
  for r in range(repeats):
    server, states, m = sim.round(server, states, jax.random.key(r + 1))
  jax.block_until_ready(server)
  return repeats * int(counts.sum()) / (time.perf_counter() - t)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", nargs="+", default=["simple_cnn", "cnn4"])
  parser.add_argument("--clients", type=int, default=4)
  parser.add_argument("--examples", type=int, default=1280)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  plans = {"fused": ExecutionPlan(args.clients, 0), "fused1": ExecutionPlan(1, 0),
           "host": ExecutionPlan(1, 10)}
  print(f"backend={jax.default_backend()} devices={jax.devices()}")
  results = {}
  for name in args.models:
    for conv in ("xla", "im2col"):
      for plan_name, plan in plans.items():
        ex_s = round_throughput(name, conv, plan, args.clients, args.examples, args.repeats)
        results[f"{name}/{conv}/{plan_name}"] = ex_s
        print(f"{name:11s} conv={conv:7s} plan={plan_name:6s} {ex_s:9.0f} examples/s",
              flush=True)
    best = max((k for k in results if k.startswith(name)), key=results.get)
    print(f"{name}: fastest {best}; im2col+fused1 / xla+host = "
          f"{results[f'{name}/im2col/fused1'] / results[f'{name}/xla/host']:.2f}x")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
