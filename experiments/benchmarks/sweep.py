"""Seeds side by side: R runs in one vmapped round (`StackedRuns`) against R `Simulation`s
one after another.

A sweep of R seeds of the same experiment can advance all its runs with ONE jitted round
`vmap`ped over a leading run axis (`fedjax_gen.engine.runs.StackedRuns`, what `fedjax-gen
sweep` does for runs that differ only in seed or float hyperparameters), or run them one
after another (R `Simulation.round` calls per round). This script times both, per model
(NIID-Bench's simple CNN and PFLlib's CNN4, 28x28x1 inputs, 10 classes) and per R:

* workload: FedAvg (`make_algorithm("fedavg", masked_cross_entropy(...), lr=0.01)`), every
  client of the round trains (`--clients` of `--clients`, 10 by default, as in NIID-Bench),
  each with `--examples` examples (320) and `--steps` local SGD steps (10) of batch
  `--batch` (32): the round benchmark's shapes (`fedjax_gen_bench/baselines.py`). The data
  is SYNTHETIC: uniform random images and labels, drawn per run from NumPy's generator
  seeded `[--seed, run]`; run i's model is initialised with `key(--seed + i)`. Its numbers
  say nothing about accuracy, only about speed and memory;
* plan and convolution: what a real run picks on this backend (`fedjax_gen.trainer.plan.
  choose`, as `fedjax-gen run` does). On CPU that is im2col convolutions in the fused round
  (one client per chunk) for simple_cnn, but the host loop with native convolutions for
  cnn4, which `StackedRuns` refuses (it is not one jitted round): there both forms run the
  fused plan instead (`plan.choose(..., steps_per_call=0)`, im2col on CPU), marked "forced"
  in the table. On accelerators: native convolutions, all clients in one vmapped chunk;
* timing: each (model, R) runs in its own process (its peak RSS is its own); both forms are
  built there, each runs one round that compiles (excluded; reported as compile s), then
  `--repeats` rounds each, INTERLEAVED (the order alternates every repetition), so slowly
  changing load on a shared machine falls on both alike; the median round is reported.
  The sequential form blocks on each run's round (as a run that logs its metrics does).
  Its R `Simulation`s share one compiled round (they have the same structure and pass their
  own data as arguments: the timed rounds are exactly R separate runs' rounds); separate
  processes would compile it R times, i.e. R x its compile s;
* client-updates/s = R x clients per round / round seconds (the sequential form's "round"
  is all R runs' rounds), and their ratio vmapped / sequential (above 1: stacking pays);
* memory: the compiled round's `memory_analysis()` (argument + output + temp bytes of
  `jax.jit(...).lower(...).compile()`; the vmapped round is `StackedRuns._round` lowered
  with the arguments `.round` passes; the sequential one is ONE run's round, of which R
  run one after another), and the worker's peak RSS (`VmHWM`, both forms and their data
  in the same process; on CPU the device memory is host memory and shows up there), with
  the device's `peak_bytes_in_use` where the backend reports it;
* check: both forms compute the same rounds from the same keys; the largest difference of
  the runs' training losses in the last timed round is recorded (float tolerance).

    python experiments/benchmarks/sweep.py                      # simple_cnn, cnn4; R 1 4 16
    python experiments/benchmarks/sweep.py --models cnn4 --runs 1 8 32 --repeats 5
    python experiments/benchmarks/sweep.py --smoke              # tiny: seconds, plumbing only
    python experiments/benchmarks/sweep.py --report-only

Writes `benchmarks/results/sweep_<backend>.json` and its `<!-- sweep:begin/end -->` section
of `BENCHMARKS.md` into `--out` (default `./fedjax-gen-out/sweep`, each path printed;
`--report-only` re-renders the results there, else the committed ones); `--update-reports`
writes the committed `experiments/benchmarks/results/` and `experiments/BENCHMARKS.md`
instead (refused with `--smoke`).
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
from fedjax_gen_bench.baselines import BATCH, CLASSES, EXAMPLES, LR, STEPS  # noqa: E402
from fedjax_gen_bench.round_bench import (device_info, rss_mb, save_json,  # noqa: E402
                                          script_worker, write_section)

SCRIPT = "sweep"
MODELS = ("simple_cnn", "cnn4")
SHAPE = (28, 28, 1)
RUNS = (1, 4, 16)
CLIENTS = 10
FORMS = ("vmapped", "sequential")
# --smoke: plumbing only (every path runs; the numbers mean nothing)
SMOKE = dict(runs=[1, 2], clients=2, steps=1, repeats=1, examples=32, batch=16)


# --- one (model, R), in a worker process ---------------------------------------------------
def memory(compiled) -> dict | None:
  """`memory_analysis()` of a compiled program: bytes by kind and `total` = argument +
  output + temp (None where the backend gives none)."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  out = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
         for k in ("argument", "output", "temp", "alias", "generated_code")}
  out["total"] = out["argument"] + out["output"] + out["temp"]
  return out


def measure(spec: dict) -> dict:
  """Both forms of one (model, R), timed interleaved (called in the worker)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from fedjax_gen import models
  from fedjax_gen.algorithms import make_algorithm
  from fedjax_gen.data import ClientArrays
  from fedjax_gen.engine import LocalSchedule, Simulation, masked_cross_entropy
  from fedjax_gen.engine.runs import StackedRuns
  from fedjax_gen.trainer import plan as plan_lib

  R, m, n = spec["runs"], spec["clients"], spec["examples"]
  build = lambda impl: models.get_model(spec["model"], num_classes=CLASSES, input_shape=SHAPE,
                                        conv_impl=impl)
  auto = plan_lib.choose(build, SHAPE, clients_per_round=m)
  choice = auto if auto.plan.fused else plan_lib.choose(build, SHAPE, clients_per_round=m,
                                                        steps_per_call=0)
  net = choice.model
  apply_fn = lambda p, x: net.apply({"params": p}, x)
  loss_fn = masked_cross_entropy(apply_fn)
  alg_fn = lambda hp=None: make_algorithm("fedavg", loss_fn, lr=(hp or {}).get("lr", LR),
                                          num_clients=m)
  alg = alg_fn()
  schedule = LocalSchedule(spec["batch"], 1, spec["steps"])
  seeds = [spec["seed"] + i for i in range(R)]
  sims, params = [], []
  for i, seed in enumerate(seeds):
    rng = np.random.default_rng([spec["seed"], i])
    train = ClientArrays(rng.random((m, n, *SHAPE), np.float32),
                         rng.integers(0, CLASSES, (m, n)).astype(np.int32),
                         np.full(m, n, np.int32))
    sims.append(Simulation(alg, train, schedule, clients_per_round=m, plan=choice.plan))
    params.append(models.init_params(net, SHAPE, jax.random.key(seed)))
  # The sequential runs share sim 0's compiled round (same structure, own data passed in).
  assert len({s.max_steps for s in sims}) == 1
  for s in sims[1:]:
    s._round_fused = sims[0]._round_fused
  keys = [jax.random.key(seed) for seed in seeds]
  out = {"plan": str(choice.plan), "conv_impl": choice.conv_impl,
         "auto_plan": str(auto.plan), "auto_conv_impl": auto.conv_impl,
         "forced": not auto.plan.fused, "params": models.count_params(params[0]),
         "rss_data_mb": rss_mb("VmRSS")}

  stacked = StackedRuns(sims, alg_fn, {})
  v_server, v_states = stacked.init([s.init(p) for s, p in zip(sims, params)])
  v_keys = jnp.stack(keys)
  seq = [list(s.init(p)) for s, p in zip(sims, params)]
  state = {"vmapped": (v_server, v_states), "loss": {}}

  def vmapped(r):
    server, states, metrics = stacked.round(*state["vmapped"], v_keys, r)
    jax.block_until_ready((server, states))
    state["vmapped"] = (server, states)
    state["loss"]["vmapped"] = np.asarray(metrics.train_loss)

  def sequential(r):
    losses = []
    for sim, st, key in zip(sims, seq, keys):
      server, states, metrics = sim.round(st[0], st[1], jax.random.fold_in(key, r))
      jax.block_until_ready((server, states))
      st[:] = [server, states]
      losses.append(float(metrics.train_loss))
    state["loss"]["sequential"] = np.asarray(losses)

  fns = {"vmapped": vmapped, "sequential": sequential}
  first, times = {}, {f: [] for f in FORMS}
  for name in FORMS:  # round 0 compiles
    t = time.perf_counter()
    fns[name](0)
    first[name] = time.perf_counter() - t
    out[f"rss_after_{name}_mb"] = rss_mb("VmRSS")
  for rep in range(spec["repeats"]):
    for name in (FORMS if rep % 2 == 0 else FORMS[::-1]):
      t = time.perf_counter()
      fns[name](rep + 1)
      times[name].append(time.perf_counter() - t)
  diff = float(np.max(np.abs(state["loss"]["vmapped"] - state["loss"]["sequential"])))

  r = np.int32(spec["repeats"] + 1)
  mem = {"vmapped": memory(stacked._round.lower(
      stacked.hparams, stacked.data, stacked.train_ids, *state["vmapped"], v_keys, r
  ).compile()), "sequential": memory(sims[0]._round_fused.lower(
      sims[0].data, sims[0]._train_ids, seq[0][0], seq[0][1], jax.random.fold_in(keys[0], r)
  ).compile())}
  stats = jax.devices()[0].memory_stats() or {}
  for name in FORMS:
    median = statistics.median(times[name])
    out[name] = {"round_s": median, "round_s_all": times[name], "first_round_s": first[name],
                 "compile_s": max(first[name] - median, 0.0),
                 "updates_s": R * m / median, "compiled_memory": mem[name]}
  out.update(ratio=out["vmapped"]["updates_s"] / out["sequential"]["updates_s"],
             loss_max_abs_diff=diff, peak_rss_mb=rss_mb(),
             device_peak_bytes=stats.get("peak_bytes_in_use"),
             final_loss=[float(x) for x in state["loss"]["vmapped"]])
  return out


# --- report ----------------------------------------------------------------------------------
def _mib(mem: dict | None) -> str:
  return "—" if not mem else f"{mem['total'] / 2**20:.1f}"


def format_record(r: dict) -> str:
  head = f"{r['model']:10s} R={r['runs']:3d}:"
  if r["status"] != "ok":
    return f"{head} {r['status']} ({r.get('reason', '')})"
  v, s = r["vmapped"], r["sequential"]
  return (f"{head} vmapped {v['updates_s']:8.1f} updates/s (round {v['round_s']:.3f} s, "
          f"{_mib(v['compiled_memory'])} MiB), sequential {s['updates_s']:8.1f} updates/s "
          f"(R rounds {s['round_s']:.3f} s, one run {_mib(s['compiled_memory'])} MiB), "
          f"ratio {r['ratio']:.2f}, peak RSS {r['peak_rss_mb']:.0f} MB, "
          f"loss diff {r['loss_max_abs_diff']:.1e}  [{r['conv_impl']}, {r['plan']}"
          f"{', forced' if r['forced'] else ''}]")


def _plan_cell(r: dict) -> str:
  plan = r["plan"].replace("ExecutionPlan(", "").rstrip(")")
  cell = f"{r['conv_impl']}, {plan}"
  return cell + (" (forced †)" if r["forced"] else "")


def table_lines(d: dict) -> list[str]:
  lines = ["| model | conv, plan | R | vmapped updates/s | sequential updates/s | vmapped / "
           "sequential | vmapped round s | sequential round s (R runs) | compiled MiB "
           "vmapped (R runs) | compiled MiB sequential (1 run) | peak RSS MB | compile s "
           "vmapped / sequential (per run) | max loss diff |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  skipped = []
  for r in d["records"]:
    if r["status"] != "ok":
      skipped.append(f"- {r['model']}, R={r['runs']}: {r['status']} ({r.get('reason', '')})")
      continue
    v, s = r["vmapped"], r["sequential"]
    lines.append(
        f"| {r['model']} | {_plan_cell(r)} | {r['runs']} | {v['updates_s']:.1f} | "
        f"{s['updates_s']:.1f} | {r['ratio']:.2f} | {v['round_s']:.3f} | {s['round_s']:.3f} | "
        f"{_mib(v['compiled_memory'])} | {_mib(s['compiled_memory'])} | "
        f"{r['peak_rss_mb']:.0f} | {v['compile_s']:.1f} / {s['compile_s']:.1f} | "
        f"{r['loss_max_abs_diff']:.1e} |")
  forced = sorted({(r["model"], r["auto_conv_impl"], r["auto_plan"]) for r in d["records"]
                   if r["status"] == "ok" and r["forced"]})
  for model, conv, plan in forced:
    lines += ["", f"† {model}: a run picks {conv} convolutions in the host loop here "
              f"({plan}), which `StackedRuns` refuses; both forms ran the fused plan "
              "(`plan.choose(..., steps_per_call=0)`) instead, so its ratio compares the "
              "two forms, not stacking against what `fedjax-gen run` does."]
  return lines + ([""] + ["Not measured:"] + skipped if skipped else [])


def findings(records: list) -> list[str]:
  """Sentences computed from the records: the ratio per R, where stacking pays, and how the
  vmapped round's compiled memory grows with R."""
  out = []
  for model in dict.fromkeys(r["model"] for r in records):
    ok = sorted((r for r in records if r["model"] == model and r["status"] == "ok"),
                key=lambda r: r["runs"])
    if not ok:
      continue
    ratios = ", ".join(f"{r['ratio']:.2f}x at R={r['runs']}" for r in ok)
    at = lambda keep: ", ".join(str(r["runs"]) for r in ok if keep(r["ratio"]))
    parts = [f"{what} at R={runs}" for what, runs in (
        ("stacking pays (over 10% faster)", at(lambda x: x > 1.1)),
        ("the forms are within 10%", at(lambda x: 0.9 <= x <= 1.1)),
        ("stacking is over 10% slower", at(lambda x: x < 0.9))) if runs]
    verdict = "; ".join(parts)
    line = f"- {model}: vmapped / sequential {ratios}: {verdict}."
    lo, hi = ok[0], ok[-1]
    vm = lambda r: (r["vmapped"]["compiled_memory"] or {}).get("total")
    if hi["runs"] > lo["runs"] and vm(lo) and vm(hi):
      line += (f" The vmapped round's compiled memory grows {vm(hi) / vm(lo):.1f}x from R="
               f"{lo['runs']} to R={hi['runs']} ({vm(lo) / 2**20:.1f} to "
               f"{vm(hi) / 2**20:.1f} MiB; R grew {hi['runs'] / lo['runs']:.0f}x), "
               f"peak RSS {lo['peak_rss_mb']:.0f} to {hi['peak_rss_mb']:.0f} MB.")
    seq_c = hi["sequential"]["compile_s"]
    line += (f" Compiling: the vmapped round once ({hi['vmapped']['compile_s']:.1f} s at "
             f"R={hi['runs']}) against {seq_c:.1f} s per run for runs in their own "
             f"processes ({hi['runs'] * seq_c:.1f} s for {hi['runs']}).")
    worst = max(r["loss_max_abs_diff"] for r in ok)
    line += f" Both forms' training losses agree to {worst:.1e}."
    out.append(line)
  return out


def report_section(d: dict) -> str:
  a, dev = d["args"], d["device"]
  lines = ["<!-- sweep:begin -->", "## Seeds side by side: one vmapped round against runs one "
           "after another", "",
           f"`experiments/benchmarks/sweep.py`: FedAvg, {a['clients']} of {a['clients']} "
           f"clients per round, each {a['examples']} SYNTHETIC examples (random 28x28x1 images "
           f"and labels, seeded per run) and {a['steps']} local SGD step(s) (lr {LR}) of batch "
           f"{a['batch']}; R runs of different seeds as `StackedRuns` (one jitted round "
           "vmapped over the runs) and as R `Simulation`s one after another, in one process "
           f"per row, timed interleaved: median of {a['repeats']} round(s) after one that "
           "compiles. Updates/s = R x clients / round s; compiled MiB = argument + output + "
           "temp bytes of the compiled round's `memory_analysis()`; peak RSS: the row's "
           "process, both forms together; compile s: first round minus a timed one (the "
           "sequential runs share one compiled round here; in their own processes each "
           "would compile it). Plan and convolution: `plan.choose`, as `fedjax-gen run` "
           f"picks them. Device: {dev['device_kind']} ({dev['backend']}), CPU "
           f"{dev['cpu_model'] or '?'}, {dev['cores_used']} of {dev['cpu_count']} cores; jax "
           f"{dev['versions']['jax']}.", ""]
  if a.get("smoke"):
    lines += ["**Smoke run (`--smoke`): tiny sizes, the numbers mean nothing.**", ""]
  lines += table_lines(d)
  if d.get("findings"):
    lines += ["", "Reading (computed from the rows above):", ""] + d["findings"]
  lines += ["", f"Command: `{d['command']}` ({d['started']} to "
            f"{d.get('finished', 'unfinished')}).", "",
            "Re-run: `python experiments/benchmarks/sweep.py --update-reports` (`--models`, "
            "`--runs`, `--repeats`, `--clients`; `--report-only` re-renders this from "
            "`experiments/benchmarks/results/sweep_<backend>.json`; without "
            "`--update-reports` it writes into `./fedjax-gen-out/sweep`).",
            "<!-- sweep:end -->"]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
  parser.add_argument("--runs", nargs="+", type=int, default=list(RUNS),
                      help="R: runs (seeds) side by side")
  parser.add_argument("--repeats", type=int, default=5, help="timed rounds per form (median)")
  parser.add_argument("--clients", type=int, default=CLIENTS,
                      help="clients in each run, all trained every round")
  parser.add_argument("--examples", type=int, default=EXAMPLES, help="examples per client")
  parser.add_argument("--steps", type=int, default=STEPS, help="local SGD steps per client")
  parser.add_argument("--batch", type=int, default=BATCH)
  parser.add_argument("--seed", type=int, default=0, help="run i's seed is seed + i")
  parser.add_argument("--timeout", type=float, default=1200,
                      help="seconds for one (model, R) worker before it is killed")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny: R 1 and 2, 2 clients, 1 local step, 1 repeat, 32 examples")
  parser.add_argument("--report-only", action="store_true")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  reports_lib.add_arguments(parser, SCRIPT)
  args = parser.parse_args(argv)
  if args.worker:
    print("RESULT " + json.dumps(measure(json.loads(args.worker))), flush=True)
    return 0
  if args.smoke:
    if args.update_reports:
      raise SystemExit("--smoke numbers mean nothing: they never update the committed reports.")
    for key, value in SMOKE.items():
      setattr(args, key, value)
  import jax
  reports = reports_lib.Reports.from_args(args, SCRIPT)
  rel = f"benchmarks/results/sweep_{jax.default_backend()}.json"
  path = reports.path(rel)
  if args.report_only:
    data = reports.previous_json(rel)
  else:
    data = {"device": device_info(), "args": vars(args), "records": [],
            "command": " ".join(["python", "experiments/benchmarks/sweep.py",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "started": datetime.datetime.now().isoformat(timespec="seconds")}
    for model in args.models:
      for runs in args.runs:
        spec = {"model": model, "runs": runs, "clients": args.clients,
                "examples": args.examples, "steps": args.steps, "batch": args.batch,
                "repeats": args.repeats, "seed": args.seed}
        rec = {"model": model, "runs": runs, **script_worker(__file__, spec, args.timeout)}
        print(format_record(rec), flush=True)
        data["records"].append(rec)
        save_json(path, data)
    data["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
  data["findings"] = findings(data["records"])
  save_json(path, data)
  reports.wrote(path)
  write_section(reports, SCRIPT, report_section(data))
  print("\n".join(data["findings"]))
  return 0 if all(r["status"] == "ok" for r in data["records"]) else 1


if __name__ == "__main__":
  sys.exit(main())
