"""Which convolution and execution plan train a convnet fastest on this backend?

Times one FedAvg round (after compiling) of NIID-Bench-shaped work -- `--clients` clients
of unequal size (from `--examples`/8 up to `--examples` 28x28x1 examples, 32x32x3 for
ResNet-18, as label-skewed partitions give; one client: `--examples`), 1 local epoch of
batch 64 -- for each model, under every combination of
conv implementation (native XLA / im2col) and execution plan (fused: one jitted round,
scanned steps, all clients vmapped or one client per chunk; host: clients one at a time,
blocks of up to 10 unrolled steps), all in one process, and prints examples/s (examples processed
by local steps, padded ones included; the median of `--repeats` rounds, timed interleaved
across the combinations of a model). The engine's automatic choice (`auto_plan`,
`run.conv_impl="auto"`) is set from this.

    python experiments/benchmarks/conv_cpu.py --models simple_cnn cnn4
    # round_bench's workload: 10 clients x 10 local steps of batch 32
    python experiments/benchmarks/conv_cpu.py --models simple_cnn fedpac_cnn cnn4 \
        --clients 10 --examples 320 --batch 32 --local-steps 10 --repeats 3
    # ResNet-18: one client, 3 local steps of batch 32
    python experiments/benchmarks/conv_cpu.py --models resnet18 --clients 1 --examples 96 \
        --batch 32 --local-steps 3 --repeats 3 --plans fused1 host --skip xla/fused1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import jax
import numpy as np

# fedjax_gen_bench of this checkout, if not installed
sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from fedjax_gen import models  # noqa: E402
from fedjax_gen.algorithms import make_algorithm  # noqa: E402
from fedjax_gen.data import ClientArrays  # noqa: E402
from fedjax_gen.engine import (ExecutionPlan, LocalSchedule, Simulation,  # noqa: E402
                               masked_cross_entropy)
from fedjax_gen_bench.baselines import (default_conv_impl, input_shape,  # noqa: E402
                                        time_interleaved)


def build_round(model_name, conv_impl, plan, clients, examples, batch=64, local_steps=0):
  """`(round_fn, examples_per_round)`; the round is compiled (one round run) already."""
  rng = np.random.default_rng(0)
  shape = input_shape(model_name)  # 28x28x1; 32x32x3 for ResNet-18
  counts = np.linspace(examples // 8 if clients > 1 else examples, examples,
                       clients).astype(np.int32)
  train = ClientArrays(rng.random((clients, examples, *shape), np.float32),
                       rng.integers(0, 10, (clients, examples)).astype(np.int32), counts)
  model = models.get_model(model_name, num_classes=10, input_shape=shape, conv_impl=conv_impl)
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  params = models.init_params(model, shape, jax.random.key(0))
  alg = make_algorithm("fedavg", masked_cross_entropy(apply_fn), lr=0.01, momentum=0.9,
                       num_clients=clients)
  sim = Simulation(alg, train, LocalSchedule(batch, 1, local_steps), clients_per_round=clients,
                   plan=plan)
  state = list(sim.init(params))
  keys = iter(jax.random.split(jax.random.key(0), 10_000))

  def round_fn():
    state[:2] = sim.round(state[0], state[1], next(keys))[:2]
    jax.block_until_ready(state[0])
  round_fn()  # compile
  return round_fn, int(sim.schedule.num_steps(counts).sum()) * batch


def interleaved_throughput(rounds: dict, repeats: int) -> dict:
  """examples/s of each `(round_fn, examples)` of `rounds`, from the median of `repeats`
  rounds timed interleaved (`time_interleaved`)."""
  times = time_interleaved({k: fn for k, (fn, _) in rounds.items()}, repeats)
  return {k: rounds[k][1] / statistics.median(times[k]) for k in rounds}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", nargs="+", default=["simple_cnn", "cnn4"])
  parser.add_argument("--clients", type=int, default=4)
  parser.add_argument("--examples", type=int, default=1280)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--local-steps", type=int, default=0,
                      help="> 0: this many local steps per client instead of 1 epoch")
  parser.add_argument("--plans", nargs="+", default=["fused", "fused1", "host"],
                      choices=["fused", "fused1", "host"])
  parser.add_argument("--skip", nargs="*", default=[],
                      help="conv/plan combinations not to time, e.g. xla/fused1")
  args = parser.parse_args()
  plans = {"fused": ExecutionPlan(args.clients, 0), "fused1": ExecutionPlan(1, 0),
           "host": ExecutionPlan(1, 10)}
  plans = {k: plans[k] for k in args.plans}
  combos = [(conv, plan_name) for conv in ("xla", "im2col") for plan_name in plans
            if f"{conv}/{plan_name}" not in args.skip]
  print(f"backend={jax.default_backend()} devices={jax.devices()}")
  results = {}
  for name in args.models:
    rounds = {f"{name}/{conv}/{plan_name}": build_round(
                  name, conv, plans[plan_name], args.clients, args.examples, args.batch,
                  args.local_steps) for conv, plan_name in combos}
    for key, ex_s in interleaved_throughput(rounds, args.repeats).items():
      results[key] = ex_s
      _, conv, plan_name = key.split("/")
      print(f"{name:11s} conv={conv:7s} plan={plan_name:6s} {ex_s:9.0f} examples/s",
            flush=True)
    best = max((k for k in results if k.startswith(name)), key=results.get)
    auto = default_conv_impl(name)
    ratio = (f"im2col+fused1 / xla+host = "
             f"{results[f'{name}/im2col/fused1'] / results[f'{name}/xla/host']:.2f}x; "
             if {"im2col/fused1", "xla/host"} <= {f"{c}/{p}" for c, p in combos} else "")
    print(f"{name}: fastest {best}; {ratio}run.conv_impl='auto' picks {auto}")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
