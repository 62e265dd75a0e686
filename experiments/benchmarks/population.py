"""Populations of a million clients: `StreamedSimulation` over a host `PopulationStore`.

`scale.py` measures the on-device layout, whose memory is clients x the LARGEST client.
Here the population lives on the host, unpadded, and each round moves only its clients:
power-law populations of 10^3, 10^4, 10^5 and 10^6 clients (`data.power_law_population`:
Pareto sizes, median 20, largest 2,000, mean about 63; examples drawn with replacement from
a base of 60,000 random 28x28x1 images, seeded), 100 and 1,000 clients a round, the MLP and
the simple CNN (the convolution and the fused plan `fedjax-gen run` would pick with
`data.layout=store`), FedAvg with 10 local SGD steps of batch 32 (lr 0.01) per client, so
a round's compute does not depend on the population. Per configuration, each in its own
process:

* the round time (median of the rounds after the first, which compiles), the compilations
  (one per bucket of the round's flat data a run meets) and the rounds that met a new one;
* host RSS: after building the store, and the peak over the rounds (`VmHWM`);
* device memory of the compiled round (`memory_analysis()`: arguments + outputs +
  temporaries - aliased, at the last round's shapes), beside what the padded on-device
  layout would need for the same population (clients x largest client);
* the time a round waits for its data (gathered on a background thread while the previous
  round computes; the median over the timed rounds), and the host gather and transfer times.

    python experiments/benchmarks/population.py                  # all 16 configurations
    python experiments/benchmarks/population.py --configs 1000000x1000 --models mlp
    python experiments/benchmarks/population.py --smoke          # a tiny run, a minute
    python experiments/benchmarks/population.py --report-only

Writes `benchmarks/results/population_<backend>.json` and `.png` and its section of
`BENCHMARKS.md` into `--out` (default `./fedjax-gen-out/population`, each path printed;
`--report-only` re-renders the results there, else the committed ones); `--update-reports`
writes the checkout's `experiments/benchmarks/results/` and `experiments/BENCHMARKS.md`.
"""

from __future__ import annotations

import argparse
import datetime
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

STEPS, BATCH, LR, BASE, SHAPE = 10, 32, 0.01, 60_000, (28, 28, 1)
MEDIAN, MAX_SIZE = 20, 2000
POPULATIONS = (1_000, 10_000, 100_000, 1_000_000)
PER_ROUND = (100, 1000)
MODELS = ("mlp", "simple_cnn")
SCAFFOLD = ((100_000, 100),)  # control variates kept only for the clients that trained
SMOKE = {"configs": ["300x10", "3000x10"], "models": ["mlp"], "rounds": 4, "base": 2000}


def measure(spec: dict) -> dict:
  """Builds the population and the simulation, runs the rounds (in a worker process)."""
  import jax
  import numpy as np
  import optax
  from fedjax_gen import models
  from fedjax_gen.algorithms import fedavg, scaffold
  from fedjax_gen.data import padded_bytes, power_law_population
  from fedjax_gen.engine import LocalSchedule, StreamedSimulation, masked_cross_entropy
  from fedjax_gen.trainer import plan as plan_lib
  out = {"rss_start_mb": rss_mb("VmRSS")}
  t = time.perf_counter()
  rng = np.random.default_rng(0)
  x_base = rng.random((spec["base"], *SHAPE), np.float32)
  y_base = rng.integers(0, 10, spec["base"]).astype(np.int32)
  store = power_law_population(x_base, y_base, spec["population"], median=MEDIAN,
                               max_size=MAX_SIZE, seed=spec.get("seed", 0))
  sizes = store.sizes
  out.update(build_s=time.perf_counter() - t, rss_store_mb=rss_mb("VmRSS"),
             examples=store.num_examples, max_n=store.max_size, median_n=float(np.median(sizes)),
             mean_n=float(sizes.mean()), store_bytes=store.nbytes(),
             padded_bytes=padded_bytes(store.num_clients, store.max_size, SHAPE))
  m = spec["per_round"]
  build = lambda impl: models.get_model(spec["model"], num_classes=10, input_shape=SHAPE,
                                        conv_impl=impl)
  choice = plan_lib.choose(build, SHAPE, clients_per_round=m, steps_per_call=0)
  net = choice.model
  apply_fn = lambda p, xb: net.apply({"params": p}, xb)
  params = models.init_params(net, SHAPE, jax.random.key(0))
  loss = masked_cross_entropy(apply_fn)
  alg = (scaffold(loss, optax.sgd(LR), lr=LR, num_clients=spec["population"])
         if spec.get("algorithm") == "scaffold" else fedavg(loss, optax.sgd(LR)))
  sim = StreamedSimulation(alg, store, LocalSchedule(BATCH, 1, STEPS), clients_per_round=m,
                           plan=choice.plan)
  out.update(plan=str(sim.plan), conv_impl=choice.conv_impl,
             model_params=models.count_params(params))
  server, states = sim.init(params)
  keys = [jax.random.fold_in(jax.random.key(1), r) for r in range(spec["rounds"] + 1)]
  times, waits, new_bucket = [], [], []
  for r in range(spec["rounds"]):
    seen, before = len(sim.data_stats["buckets"]), sim.data_stats["wait_s"]
    t = time.perf_counter()
    server, states, metrics = sim.round(
        server, states, keys[r], next_key=keys[r + 1] if r + 1 < spec["rounds"] else None)
    jax.block_until_ready(server)
    times.append(time.perf_counter() - t)
    waits.append(sim.data_stats["wait_s"] - before)
    new_bucket.append(len(sim.data_stats["buckets"]) > seen)
  timed = [t for t, new in zip(times[1:], new_bucket[1:]) if not new] or times[1:] or times
  by_bucket = {str(b): m["argument"] + m["output"] + m["temp"] - m["alias"]
               for b, m in sim.round_memory().items()}
  device = max(by_bucket.values()) if by_bucket else None
  if states:  # SCAFFOLD's control variates: rows only for the clients that trained
    out.update(state_rows=int(states["rows"].shape[0]),
               state_mb=states["rows"].nbytes / 2**20,
               trained_clients=int((states["slot"] >= 0).sum()))
  s = sim.data_stats
  sim.close()
  out.update(first_round_s=times[0], round_s=statistics.median(timed),
             round_times=times, compiled_rounds=[i for i, n in enumerate(new_bucket) if n],
             buckets=s["buckets"], data_wait_s=statistics.median(waits[1:] or waits),
             data_waits=waits, gather_s=s["gather_s"] / s["rounds"],
             put_s=s["put_s"] / s["rounds"], prefetched=s["prefetched"],
             rss_peak_mb=rss_mb(), rss_end_mb=rss_mb("VmRSS"),
             device_by_bucket=by_bucket, device_bytes=device,
             train_loss=float(metrics.train_loss))
  return out


def _mib(n) -> str:
  return "n/a" if n is None else f"{n / 2**20:.0f}"


def _padded(n: int) -> str:
  return f"{n / 2**40:.1f} TiB" if n >= 2**40 else f"{n / 2**30:.1f} GiB"


def format_record(r: dict) -> str:
  head = (f"{r.get('algorithm', 'fedavg'):8s} {r['model']:10s} population "
          f"{r['population']:8d}, {r['per_round']:5d} per round:")
  if r["status"] != "ok":
    return f"{head} {r['status']} ({r.get('reason')})"
  return (f"{head} round {r['round_s']:.3f} s (first {r['first_round_s']:.1f} s, "
          f"{len(r['buckets'])} compile(s)), waits {r['data_wait_s'] * 1e3:.1f} ms for data, "
          f"RSS store {r['rss_store_mb']:.0f} MB peak {r['rss_peak_mb']:.0f} MB, device "
          f"{_buckets(r)} MiB (padded layout: {_padded(r['padded_bytes'])})"
          + (f", control variates of {r['trained_clients']} clients: {r['state_mb']:.0f} MB"
             if "state_rows" in r else ""))


def _buckets(r: dict) -> str:
  """Device MiB of the compiled round for each bucket of flat rows met, e.g. `372 (65536)`."""
  return " / ".join(f"{_mib(v)} ({int(b):,})" for b, v in
                    sorted(r.get("device_by_bucket", {}).items(), key=lambda kv: int(kv[0])))


def report_section(d: dict) -> str:
  a = d["args"]
  lines = ["<!-- population:begin -->", "## Populations of a million clients (host store)", "",
           "`experiments/benchmarks/population.py`: `StreamedSimulation` over a power-law "
           f"`PopulationStore` (median {MEDIAN}, largest {MAX_SIZE} examples of 28x28x1, "
           f"drawn from {a['base']} base images), FedAvg, {STEPS} local SGD steps of batch "
           f"{BATCH} per client, {a['rounds']} rounds (the first compiles). Device: "
           f"{d['device']['device_kind']} ({d['device']['backend']}), CPU "
           f"{d['device']['cpu_model']}, {d['device']['cores_used']} of "
           f"{d['device']['cpu_count']} cores used." + (" **Smoke run.**" if a.get("smoke")
                                                       else ""), "",
           "| algorithm | model | population | per round | examples | round s | compiles | "
           "waits for data ms | gather ms | RSS store MB | peak RSS MB | device MiB of the "
           "round (its flat rows) | padded layout would need |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in d["records"]:
    if r["status"] != "ok":
      lines.append(f"| {r.get('algorithm', 'fedavg')} | {r['model']} | {r['population']} | "
                   f"{r['per_round']} | {r['status']}: {r.get('reason', '')} |||||||||")
      continue
    lines.append(
        f"| {r.get('algorithm', 'fedavg')} | {r['model']} | {r['population']} | "
        f"{r['per_round']} | {r['examples']} | "
        f"{r['round_s']:.3f} | {len(r['buckets'])} | {r['data_wait_s'] * 1e3:.1f} | "
        f"{r['gather_s'] * 1e3:.1f} | {r['rss_store_mb']:.0f} | {r['rss_peak_mb']:.0f} | "
        f"{_buckets(r)} | {_padded(r['padded_bytes'])} |")
  scaffold_rows = [r for r in d["records"] if r["status"] == "ok" and "state_rows" in r]
  for r in scaffold_rows:
    lines += ["", f"SCAFFOLD, {r['population']:,} clients, {r['per_round']} a round, "
              f"{a['rounds']} rounds: the control variates of the {r['trained_clients']:,} "
              f"clients that trained take {r['state_mb']:.0f} MB on the host ({r['state_rows']:,} "
              f"rows); stacked for the whole population they would take "
              f"{r['state_mb'] / max(r['state_rows'], 1) * r['population'] / 1024:.0f} GB."]
  if d.get("findings"):
    lines += ["", "Reading: a round's device memory depends only on the bucket of flat rows its "
              "sampled clients fill (the same MiB at every population for the same bucket); "
              "which buckets a run meets depends on the sizes it samples, not on the "
              "population. Round times move with the sampled sizes from round to round "
              f"(medians of {a['rounds'] - 1} rounds or fewer); they show no trend with the "
              "population. Host memory grows with the store's index (4 bytes an example)."]
    lines += [""] + d["findings"]
  lines += ["", "![population](benchmarks/results/"
            f"population_{d['device']['backend']}.png)", "",
            "Re-run: `python experiments/benchmarks/population.py --update-reports` "
            "(`--report-only` re-renders from "
            "`experiments/benchmarks/results/population_<backend>.json`).",
            "<!-- population:end -->"]
  return "\n".join(lines)


def findings(records: list) -> list[str]:
  """Sentences comparing the smallest and the largest population of each (model, m)."""
  ok = [r for r in records if r["status"] == "ok" and r.get("algorithm", "fedavg") == "fedavg"]
  out = []
  for model, m in dict.fromkeys((r["model"], r["per_round"]) for r in ok):
    rs = sorted((r for r in ok if r["model"] == model and r["per_round"] == m),
                key=lambda r: r["population"])
    if len(rs) < 2:
      continue
    a, b = rs[0], rs[-1]
    spread = lambda v: (max(v) / min(v) - 1) * 100
    rounds = [r["round_s"] for r in rs]
    shared = sorted(set.intersection(*(set(r["device_by_bucket"]) for r in rs)), key=int)
    device = "; ".join(f"{int(k):,} rows: {_mib(min(r['device_by_bucket'][k] for r in rs))}"
                       f"-{_mib(max(r['device_by_bucket'][k] for r in rs))} MiB"
                       for k in shared) or "no bucket met by every population"
    out.append(
        f"- {model}, {m} per round, population {a['population']:,} -> {b['population']:,}: "
        f"round {a['round_s']:.3f} -> {b['round_s']:.3f} s "
        f"({(b['round_s'] / a['round_s'] - 1) * 100:+.0f}%), {min(rounds):.3f}-"
        f"{max(rounds):.3f} s over every population (largest / smallest - 1: "
        f"{spread(rounds):.0f}%); device memory by bucket of flat rows, over every "
        f"population: {device}; peak RSS {a['rss_peak_mb']:.0f} -> {b['rss_peak_mb']:.0f} MB "
        f"(the store's index grows with the population); the padded layout would need "
        f"{_padded(a['padded_bytes'])} -> {_padded(b['padded_bytes'])}; waiting for data "
        f"{max(r['data_wait_s'] for r in rs) * 1e3:.1f} ms a round at most.")
  return out


def plot(d: dict):
  """Round time, peak RSS and device memory against the population."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure
  from matplotlib.ticker import NullFormatter
  ok = [r for r in d["records"]
        if r["status"] == "ok" and r.get("algorithm", "fedavg") == "fedavg"]
  fig = Figure(figsize=(13, 3.6))
  panels = (("round s", lambda r: r["round_s"]),
            ("peak host RSS MB", lambda r: r["rss_peak_mb"]),
            ("device MiB (compiled round)", lambda r: (r["device_bytes"] or 0) / 2**20))
  series = list(dict.fromkeys((r["model"], r["per_round"]) for r in ok))
  for i, (label, value) in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), i + 1)
    for j, (model, m) in enumerate(series):
      pts = sorted((r["population"], value(r)) for r in ok
                   if r["model"] == model and r["per_round"] == m)
      ax.plot(*zip(*pts), marker="o", markersize=4, color=f"C{j}",
              linestyle="-" if model == "mlp" else "--", label=f"{model}, {m}/round")
    if i == 2:
      pad = sorted({(r["population"], r["padded_bytes"] / 2**20) for r in ok})
      if pad:
        ax.plot(*zip(*pad), color="0.5", linestyle=":", label="padded layout (whole pop.)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("clients in the population")
    ax.set_title(label, fontsize=10)
    ax.grid(alpha=0.3, which="both")
  fig.axes[-1].legend(fontsize=7)
  fig.tight_layout()
  return fig


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rounds", type=int, default=5, help="rounds per configuration")
  parser.add_argument("--configs", nargs="+",
                      default=[f"{p}x{m}" for p in POPULATIONS for m in PER_ROUND],
                      help="POPULATIONxPER_ROUND, e.g. 1000000x1000")
  parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
  parser.add_argument("--base", type=int, default=BASE, help="base images")
  parser.add_argument("--timeout", type=float, default=1800)
  parser.add_argument("--smoke", action="store_true",
                      help=f"a tiny run: {' '.join(SMOKE['configs'])}, mlp, "
                           f"{SMOKE['rounds']} rounds")
  parser.add_argument("--report-only", action="store_true")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  reports_lib.add_arguments(parser, "population")
  args = parser.parse_args(argv)
  if args.worker:
    print("RESULT " + json.dumps(measure(json.loads(args.worker))), flush=True)
    return 0
  if args.smoke:
    if args.update_reports:
      raise SystemExit("--smoke writes into --out only, not the committed reports.")
    args.configs, args.models = SMOKE["configs"], SMOKE["models"]
    args.rounds, args.base = SMOKE["rounds"], SMOKE["base"]
  import jax
  reports = reports_lib.Reports.from_args(args, "population")
  rel = f"benchmarks/results/population_{jax.default_backend()}"
  path = reports.path(rel + ".json")
  if args.report_only:
    data = reports.previous_json(rel + ".json")
  else:
    data = {"device": device_info(), "args": vars(args), "records": [],
            "command": " ".join(["python"] + sys.argv),
            "started": datetime.datetime.now().isoformat(timespec="seconds")}
    for model in args.models:
      for config in args.configs:
        pop, per_round = (int(v) for v in config.split("x"))
        spec = {"model": model, "population": pop, "per_round": per_round,
                "rounds": args.rounds, "base": args.base}
        rec = {**spec, **script_worker(__file__, spec, args.timeout)}
        print(format_record(rec), flush=True)
        data["records"].append(rec)
        save_json(path, data)
    for pop, per_round in ([] if args.smoke else SCAFFOLD):
      spec = {"model": "mlp", "population": pop, "per_round": per_round,
              "rounds": args.rounds, "base": args.base, "algorithm": "scaffold"}
      rec = {**spec, **script_worker(__file__, spec, args.timeout)}
      print(format_record(rec), flush=True)
      data["records"].append(rec)
      save_json(path, data)
  data["findings"] = findings(data["records"])
  save_json(path, data)
  reports.wrote(path)
  if any(r["status"] == "ok" for r in data["records"]):
    reports.save_figure(rel + ".png", plot(data), dpi=110)
  write_section(reports, "population", report_section(data))
  print("\n".join(data["findings"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
