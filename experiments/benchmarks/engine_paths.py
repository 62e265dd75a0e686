"""Could one engine path replace two? One FedAvg round per model under each execution form,
timed interleaved in one process:

* `host`: today's host loop (jitted blocks of k unrolled steps, looped on the host;
  `ExecutionPlan(1, k)`),
* `fused`: today's fused round (one jitted round, steps in a `fori_loop` bounded by each
  client's own count; `ExecutionPlan(1, 0)`),
* `scan_unroll`: a single-path candidate: the fused round with the steps in a `lax.scan`
  over blocks of k unrolled steps (what `lax.scan(..., unroll=k)` compiles to; every client
  runs the round's largest step count, masked),

each with XLA's native convolution (`xla`) and, for the convnets, im2col; `auto` marks what
`fedjax-gen run` chooses today. Models: the MLP, NIID-Bench's simple CNN, PFLlib's CNN4,
ResNet-18 and the DDPM's UNet. Prints a Markdown table and writes
`benchmarks/results/engine_paths_<backend>.json` into `--out` (default
`./fedjax-gen-out/engine_paths`; the models measured before, there or in the committed
JSON, are kept); `--update-reports` writes the committed
`experiments/benchmarks/results/` instead.

    python experiments/benchmarks/engine_paths.py [--models mlp simple_cnn ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.append(ROOT)  # fedjax_gen_bench of this checkout, if not installed

from fedjax_gen_bench import reports as reports_lib  # noqa: E402
from fedjax_gen_bench.baselines import auto_choice, input_shape, time_interleaved  # noqa: E402

from fedjax_gen import models  # noqa: E402
from fedjax_gen.algorithms import fedavg  # noqa: E402
from fedjax_gen.data import ClientArrays  # noqa: E402
from fedjax_gen.diffusion.ddpm import DDPMSpec, training_loss  # noqa: E402
from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation  # noqa: E402
from fedjax_gen.engine import local, masked_cross_entropy  # noqa: E402
from fedjax_gen.engine.simulation import _take  # noqa: E402

# model -> (clients, examples per client, batch, local steps, host-loop block k); clients of
# equal size, as in round_bench.py (unequal ones cost the host loop its masked block tails)
WORKLOADS = {
    "mlp": (10, 320, 32, 10, 10),
    "simple_cnn": (4, 320, 32, 10, 10),
    "cnn4": (4, 320, 32, 10, 10),
    "resnet18": (1, 96, 32, 3, 3),
    "unet": (2, 160, 16, 10, 10),
}
UNET = DDPMSpec((28, 28, 1), 10, channels=(16, 32, 32))


class ScanUnrollSimulation(Simulation):
  """The fused round with local steps in a `lax.scan` over blocks of `unroll` unrolled
  steps (a static trip count: the round's largest client decides it)."""

  def __init__(self, *args, unroll: int, **kwargs):
    self.unroll = unroll
    super().__init__(*args, **kwargs)

  def _fused_round(self, population, server, client_states, key):
    ids, keys = self._sample_ids(key)
    k, blocks = self.unroll, -(-self.max_steps // self.unroll)

    def one_client(args):
      cid, cstate, ckey = args
      data = self._client_data(population, cid)
      carry = local.begin(self.alg.client_init, server, cstate, ckey)

      def block(c, b):
        return local.run_steps(self.alg.client_step, self.schedule, server, c, data, b * k, k,
                               loop="unroll"), None
      carry, _ = jax.lax.scan(block, carry, jnp.arange(blocks))
      return local.end(self.alg, self.schedule, server, cstate, carry, data)

    uploads, new_states, metrics = jax.lax.map(
        one_client, (ids, _take(client_states, ids), keys), batch_size=self.plan.chunk_size)
    return self._aggregate(population, server, client_states, ids, uploads, new_states,
                           metrics)


def _loss_and_params(model_name, conv_impl):
  if model_name == "unet":
    return training_loss(UNET, cond_drop_prob=0.1, conv_impl=conv_impl), \
        UNET.init_params(jax.random.key(0))
  shape = input_shape(model_name)
  model = models.get_model(model_name, num_classes=10, input_shape=shape, conv_impl=conv_impl)
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  return masked_cross_entropy(apply_fn), models.init_params(model, shape, jax.random.key(0))


def build(model_name, conv_impl, form):
  """`(round_fn, examples per round)`, compiled (one round run)."""
  clients, examples, batch, steps, k = WORKLOADS[model_name]
  shape = UNET.image_shape if model_name == "unet" else input_shape(model_name)
  rng = np.random.default_rng(0)
  counts = np.full(clients, examples, np.int32)
  train = ClientArrays(rng.random((clients, examples, *shape), np.float32),
                       rng.integers(0, 10, (clients, examples)).astype(np.int32), counts)
  loss_fn, params = _loss_and_params(model_name, conv_impl)
  opt = optax.adam(1e-3) if model_name == "unet" else optax.sgd(0.01, momentum=0.9)
  alg = fedavg(loss_fn, opt)
  schedule = LocalSchedule(batch, 1, steps)
  common = dict(clients_per_round=clients)
  if form == "scan_unroll":
    sim = ScanUnrollSimulation(alg, train, schedule, plan=ExecutionPlan(1, 0), unroll=k,
                               **common)
  else:
    sim = Simulation(alg, train, schedule, plan=ExecutionPlan(1, k if form == "host" else 0),
                     **common)
  state = list(sim.init(params))
  keys = iter(jax.random.split(jax.random.key(1), 10_000))

  def round_fn():
    state[:2] = sim.round(state[0], state[1], next(keys))[:2]
    jax.block_until_ready(state[0])
  round_fn()
  return round_fn, int(schedule.num_steps(counts).sum()) * batch


def today(model_name) -> str:
  """`conv/form` that `fedjax-gen run` picks on this backend."""
  if model_name == "unet":
    return "xla/host" if jax.default_backend() == "cpu" else "xla/fused"
  choice = auto_choice(model_name, WORKLOADS[model_name][0])
  conv = "xla" if choice.conv_impl == "none" else choice.conv_impl
  return f"{conv}/{'fused' if choice.plan.fused else 'host'}"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--models", nargs="+", default=list(WORKLOADS))
  ap.add_argument("--repeats", type=int, default=3)
  reports_lib.add_arguments(ap, "engine_paths")
  args = ap.parse_args(argv)
  reports = reports_lib.Reports.from_args(args, "engine_paths")
  rel = f"benchmarks/results/engine_paths_{jax.default_backend()}.json"
  results = {}
  previous = reports.existing(rel)  # the output folder's, else the committed results
  if previous:
    with open(previous) as f:
      results = json.load(f)
  for name in args.models:
    convs = ["xla"] if name == "mlp" else ["xla", "im2col"]
    combos = [(c, f) for c in convs for f in ("host", "fused", "scan_unroll")]
    rounds = {f"{c}/{f}": build(name, c, f) for c, f in combos}
    print(f"{name}: compiled {len(rounds)} forms", flush=True)
    times = time_interleaved({k: fn for k, (fn, _) in rounds.items()}, args.repeats)
    results[name] = {"today": today(name), "workload": WORKLOADS[name],
                     "examples_per_s": {k: rounds[k][1] / statistics.median(times[k])
                                        for k in rounds},
                     "round_s_all": times}
    reports.write_text(rel, json.dumps(results, indent=1))
  print(table(results))
  return 0


def table(results) -> str:
  lines = ["| model | today | best single form | " + " | ".join(
      f"{c}/{f}" for c in ("xla", "im2col") for f in ("host", "fused", "scan_unroll")) + " |",
      "|---|---|---|" + "---|" * 6]
  for name, r in results.items():
    eps, base = r["examples_per_s"], r["examples_per_s"][r["today"]]
    cells = [f"{eps[k] / base:.2f}" if k in eps else "—"
             for k in (f"{c}/{f}" for c in ("xla", "im2col")
                       for f in ("host", "fused", "scan_unroll"))]
    singles = {k: v for k, v in eps.items() if not k.endswith("/host")}
    best = max(singles, key=singles.get)
    lines.append(f"| {name} | {r['today']} ({base:.0f} ex/s) | {best} "
                 f"{singles[best] / base:.2f}x | " + " | ".join(cells) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
