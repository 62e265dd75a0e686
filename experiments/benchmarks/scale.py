"""Memory at scale: a population of 10,000 Fashion-MNIST clients, 10-1000 trained per round.

Builds the population from the real Fashion-MNIST train split (60,000 images), runs a
few FedAvg rounds of the MLP (10 local SGD steps of batch 32 per client, lr 0.01, the
automatic plan) and reports, per configuration (each in its own process):

* the population's padded arrays that `Simulation` puts on the device once
  (`[clients, max_n, 28, 28, 1]` float32: their size is clients x the LARGEST client, not
  the 60,000 examples) and the time that `device_put` took;
* peak RSS (host) after building the data, after the `Simulation`, and after the rounds;
  device memory where the backend reports it (`memory_stats()`; XLA:CPU does not, its
  device memory is host memory and shows up in RSS); bytes of live JAX arrays;
* the median round time.

Comparisons: population 1,000 vs 10,000 at 100 clients per round, and 10 / 100 / 1000
clients per round at population 10,000: what a round adds grows with clients per round
(the stacked uploads `[m, params]`), not with the population.

Population 10,000: `make_federated_data(num_clients=10000, partition="dirichlet",
alpha=0.5)` cannot be built: with 6 images per client on average, no Dir(0.5) draw in
1,000 attempts gives every client an example (min_size=1 and 2 both fail, after 160-280 s;
measured). So the 10,000 clients here are the Dir(0.5) label-skewed partition into 1,000
clients (min_size 10), each split iid into 10 clients (`--split`), which keeps the label
skew and gives 1-17 images per client; population 1,000 is `make_federated_data`'s
Dir(0.5) partition itself.

    python experiments/benchmarks/scale.py              # all configurations, report
    python experiments/benchmarks/scale.py --report-only

Writes `benchmarks/results/scale_<backend>.json` and its section of `BENCHMARKS.md` into
`--out` (default `./fedjax-gen-out/scale`, each path printed; `--report-only` re-renders
the results there, else the committed ones); `--update-reports` writes the committed
`experiments/benchmarks/results/` and `experiments/BENCHMARKS.md` instead.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:  # fedjax_gen and fedjax_gen_bench of this checkout
  sys.path.insert(0, ROOT)

from fedjax_gen_bench import reports as reports_lib  # noqa: E402
from fedjax_gen_bench.round_bench import (device_info, rss_mb, save_json,  # noqa: E402
                                          script_worker, write_section)

STEPS, BATCH, LR, GROUPS_MIN_SIZE = 10, 32, 0.01, 10
# (population, clients per round)
CONFIGS = ((1000, 100), (10000, 100), (10000, 10), (10000, 1000))


def population(num_clients: int, split: int, seed: int = 0):
  """The padded `ClientArrays` of `num_clients` Dir(0.5) clients (see module docstring)."""
  import numpy as np
  from fedjax_gen.data import load_dataset, make_federated_data, stack_clients
  from fedjax_gen.data.partition import dirichlet
  ds = load_dataset("fashion_mnist")
  if num_clients <= 1000:
    return make_federated_data(ds, num_clients=num_clients, partition="dirichlet", alpha=0.5,
                               seed=seed, min_client_size=GROUPS_MIN_SIZE, test_fraction=0.0).train
  groups = dirichlet(ds.y_train, num_clients // split, alpha=0.5, seed=seed,
                     min_client_size=max(GROUPS_MIN_SIZE, split))
  rng = np.random.default_rng(seed)
  parts = [p for g in groups for p in np.array_split(rng.permutation(g), split)]
  return stack_clients(ds.x_train, ds.y_train, parts)


def reset_peak_rss() -> bool:
  """Resets this process's VmHWM to its current RSS (Linux `clear_refs` 5), so the peak
  read after the rounds is the rounds' own."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def live_bytes() -> int:
  import jax
  return int(sum(a.nbytes for a in jax.live_arrays()))


def device_peak() -> int | None:
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def measure(spec: dict) -> dict:
  """Builds the population and the simulation, runs the rounds (in a worker process)."""
  import jax
  import optax
  from fedjax_gen import models
  from fedjax_gen.algorithms import fedavg
  from fedjax_gen.engine import LocalSchedule, Simulation, masked_cross_entropy
  from fedjax_gen.trainer.plan import auto_plan
  out = {"rss_start_mb": rss_mb()}
  t = time.perf_counter()
  train = population(spec["population"], spec["split"])
  out.update(build_s=time.perf_counter() - t, rss_data_mb=rss_mb(),
             max_n=int(train.x.shape[1]), min_n=int(train.count.min()),
             mean_n=float(train.count.mean()), examples=int(train.count.sum()),
             population_bytes=int(train.x.nbytes + train.y.nbytes + train.count.nbytes))
  model = models.get_model("mlp", num_classes=10, input_shape=(28, 28, 1))
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  params = models.init_params(model, (28, 28, 1), jax.random.key(0))
  alg = fedavg(masked_cross_entropy(apply_fn), optax.sgd(LR))
  t = time.perf_counter()
  sim = Simulation(alg, train, LocalSchedule(BATCH, 1, STEPS),
                   clients_per_round=spec["per_round"],
                   plan=auto_plan(spec["per_round"], native_conv=False))
  jax.block_until_ready(sim.data)
  out.update(device_put_s=time.perf_counter() - t, rss_sim_mb=rss_mb(),
             device_data_bytes=int(sum(a.nbytes for a in sim.data)), plan=str(sim.plan),
             model_params=models.count_params(params))
  del train  # the host copy: only the device's is used from here
  gc.collect()
  server, states = sim.init(params)
  out["rss_before_rounds_mb"] = rss_mb("VmRSS")
  out["peak_reset"] = reset_peak_rss()
  keys = list(jax.random.split(jax.random.key(1), spec["rounds"]))
  times = []
  for key in keys:
    t = time.perf_counter()
    server, states, metrics = sim.round(server, states, key)
    jax.block_until_ready(server)
    times.append(time.perf_counter() - t)
  out.update(first_round_s=times[0], round_s=statistics.median(times[1:] or times),
             rss_peak_mb=rss_mb(), rounds_add_mb=rss_mb() - out["rss_before_rounds_mb"],
             live_bytes_after=live_bytes(),
             device_peak_bytes=device_peak(), train_loss=float(metrics.train_loss),
             live_data_share=float(out["device_data_bytes"] / max(live_bytes(), 1)))
  return out


def format_record(r: dict) -> str:
  head = f"population {r['population']:6d}, {r['per_round']:5d} per round:"
  if r["status"] != "ok":
    return f"{head} {r['status']} ({r.get('reason')})"
  dev = r["device_peak_bytes"]
  return (f"{head} data on device {r['device_data_bytes'] / 2**20:7.1f} MiB (max_n "
          f"{r['max_n']}, {r['examples']} examples), RSS data {r['rss_data_mb']:6.0f} MB, "
          f"+sim {r['rss_sim_mb']:6.0f} MB, before rounds {r['rss_before_rounds_mb']:6.0f} MB, "
          f"peak in rounds {r['rss_peak_mb']:6.0f} MB (+{r['rounds_add_mb']:.0f}), "
          f"device peak {'n/a' if dev is None else f'{dev / 2**20:.0f} MiB'}, "
          f"round {r['round_s']:.3f} s")


def report_section(d: dict) -> str:
  lines = ["<!-- scale:begin -->", "## Memory at scale: 10,000 Fashion-MNIST clients", "",
           f"`experiments/benchmarks/scale.py`: MLP, {STEPS} local SGD steps of batch {BATCH} "
           "per client, automatic plan, rounds "
           f"{d['args']['rounds']} (first one compiles). Device: {d['device']['device_kind']} "
           f"({d['device']['backend']}), CPU {d['device']['cpu_model']}, "
           f"{d['device']['cores_used']} of {d['device']['cpu_count']} cores used. "
           "Population 10,000 = the Dir(0.5) partition into 1,000 clients, each split iid "
           "into 10 (`make_federated_data` cannot build Dir(0.5) over 10,000 clients of 6 "
           "images: no draw gives every client an example); population 1,000 = "
           "`make_federated_data(partition=\"dirichlet\", alpha=0.5, min_size=10)`.", "",
           "| population | per round | max_n | data on device MiB | device_put s | RSS after "
           "data MB | RSS after Simulation MB | peak RSS in rounds MB | rounds add MB | "
           "device peak MiB | round s |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in d["records"]:
    if r["status"] != "ok":
      lines.append(f"| {r['population']} | {r['per_round']} | {r['status']}: "
                   f"{r.get('reason', '')} |||||||||")
      continue
    dev = r["device_peak_bytes"]
    lines.append(
        f"| {r['population']} | {r['per_round']} | {r['max_n']} | "
        f"{r['device_data_bytes'] / 2**20:.0f} | {r['device_put_s']:.2f} | "
        f"{r['rss_data_mb']:.0f} | {r['rss_sim_mb']:.0f} | {r['rss_peak_mb']:.0f} | "
        f"{r['rounds_add_mb']:.0f} | "
        f"{'n/a' if dev is None else f'{dev / 2**20:.0f}'} | {r['round_s']:.3f} |")
  if d.get("findings"):
    lines += [""] + d["findings"]
  lines += ["", "Re-run: `python experiments/benchmarks/scale.py --update-reports` "
            "(`--report-only` re-renders from "
            "`experiments/benchmarks/results/scale_<backend>.json`).",
            "<!-- scale:end -->"]
  return "\n".join(lines)


def findings(records: list) -> list[str]:
  """Sentences comparing the configurations that ran."""
  ok = {(r["population"], r["per_round"]): r for r in records if r["status"] == "ok"}
  out = []
  add = lambda r: r["rounds_add_mb"]
  if (1000, 100) in ok and (10000, 100) in ok:
    a, b = ok[(1000, 100)], ok[(10000, 100)]
    out.append(f"- Population 1,000 vs 10,000 at 100 per round: the rounds add {add(a):.0f} "
               f"vs {add(b):.0f} MB of RSS; the population's padded data is "
               f"{a['device_data_bytes'] / 2**20:.0f} vs {b['device_data_bytes'] / 2**20:.0f} "
               f"MiB (largest client {a['max_n']} vs {b['max_n']} images), round "
               f"{a['round_s']:.3f} vs {b['round_s']:.3f} s.")
  per = sorted((k[1], v) for k, v in ok.items() if k[0] == 10000)
  if len(per) > 1:
    out.append("- Population 10,000, clients per round " + ", ".join(
        f"{m}: rounds add {add(r):.0f} MB, round {r['round_s']:.3f} s" for m, r in per) + ".")
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--split", type=int, default=10,
                      help="clients made from each Dir(0.5) client for population 10,000")
  parser.add_argument("--configs", nargs="+", default=[f"{p}x{m}" for p, m in CONFIGS],
                      help="POPULATIONxPER_ROUND, e.g. 10000x100")
  parser.add_argument("--timeout", type=float, default=900)
  parser.add_argument("--report-only", action="store_true")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  reports_lib.add_arguments(parser, "scale")
  args = parser.parse_args(argv)
  if args.worker:
    print("RESULT " + json.dumps(measure(json.loads(args.worker))), flush=True)
    return 0
  import jax
  reports = reports_lib.Reports.from_args(args, "scale")
  rel = f"benchmarks/results/scale_{jax.default_backend()}.json"
  path = reports.path(rel)
  if args.report_only:
    data = reports.previous_json(rel)
  else:
    data = {"device": device_info(), "args": vars(args), "records": [],
            "command": " ".join(["python"] + sys.argv),
            "started": datetime.datetime.now().isoformat(timespec="seconds")}
    for config in args.configs:
      pop, per_round = (int(v) for v in config.split("x"))
      spec = {"population": pop, "per_round": per_round, "split": args.split,
              "rounds": args.rounds}
      rec = {**spec, **script_worker(__file__, spec, args.timeout)}
      print(format_record(rec), flush=True)
      data["records"].append(rec)
      save_json(path, data)
  data["findings"] = findings(data["records"])
  save_json(path, data)
  reports.wrote(path)
  write_section(reports, "scale", report_section(data))
  print("\n".join(data["findings"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
