"""One FedAvg round: fedjax_gen against a JAX client loop, PyTorch and FedJAX.

Workload (issue 8): Fashion-MNIST-shaped random data (28x28x1, 10 classes; ResNet-18 on
32x32x3); every client holds 320 examples and runs exactly 10 local SGD steps (lr 0.01)
of batch 32; all clients of the round take part; the server takes the example-weighted
mean (FedAvg, server SGD(1)). Runners, all on the same architectures:

* `fedjax_gen_auto`: `Simulation` with `auto_plan` and the model's default convolution
  (`run.conv_impl="auto"`: on CPU im2col for narrow convolutions, native for wide ones, see
  `fedjax_gen/models/conv.py`; native elsewhere), as `fedjax-gen run` builds it;
* `fedjax_gen_chunk<k>`: the fused one-jit round with k clients per vmapped chunk
  (`chunkall`: every client of the round in one vmap); skipped where it is auto's plan;
  im2col convolutions on CPU (in a scanned loop the native one is ~10x slower there);
* `jax_loop`: FedJAX-style: one jitted SGD step (the batch gathered on the device from the
  client's device-resident data, indices drawn on the host), Python loops over steps and
  clients, the weighted sum accumulated by a jitted add;
* `jax_loop_client`: one jitted function per client (its 10 steps in a `fori_loop`, so
  im2col convolutions on CPU), a Python loop over clients;
* `torch_loop`: PFLlib style in PyTorch: one client at a time, `load_state_dict` of the
  global model, `torch.optim.SGD`, batches indexed from tensors (no DataLoader, which is
  slower), weighted sum of the clients' state dicts; threads = the cores JAX may use;
* `fedjax`: FedJAX 0.0.17 `algorithms.fed_avg.federated_averaging` (its jit backend, host
  batches from `ClientDataset.shuffle_repeat_batch`) with the same flax model wrapped as a
  `fedjax.Model`.

`torch_loop` and `fedjax` need `pip install "fedjax-gen[bench]"` (in a source checkout
`pip install -e ".[bench]"`); without them they are skipped, each with one line.

Each measurement (model, clients per round, runner) runs in its own subprocess, so peak
RSS is its own and a hard timeout can stop it: one warm-up round, whose wall time minus
the median round is reported as compile time, then the median of `--repeats` rounds. The
runners of one (model, clients) are timed interleaved: all warm up (one after another) and
stay alive, then round r of every runner, in an order rotated each time, runs before round
r+1 of any, so slowly changing load on a shared CPU falls on every runner alike and the
ratios between them hold even where the absolute times do not.
Configurations projected to take more than `--max-seconds` (warm-up included) are
skipped and listed. FLOPs: XLA's `cost_analysis()` of one jitted SGD step (batch 32) of
the flax model, times steps and clients (the same count for every runner); the device
peak is the best of a few large f32 matmuls timed in the same run.

    fedjax-gen bench                                # measure, plot, report
    fedjax-gen bench --models mlp --clients 10 --repeats 2
    fedjax-gen bench --models cnn4 --update         # one model again, keeping the others
    fedjax-gen bench --report-only                  # re-render from the JSON
    fedjax-gen bench --update-reports ...           # the committed report (source checkout)

Writes `benchmarks/results/round_bench_<backend>.json` and `.png` and its section of
`BENCHMARKS.md` into `--out` (default `./fedjax-gen-out/round_bench`) and prints each path;
`--update-reports` writes them into the checkout's `experiments/` instead
(`fedjax_gen_bench/reports.py`). `python -m fedjax_gen_bench.round_bench` is the same.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

# The workload and the runners live in baselines.py, which times them in-process; this
# module runs each in its own subprocess and writes the report.
from fedjax_gen_bench import reports as reports_lib
from fedjax_gen_bench.baselines import (BATCH, CLASSES, EXAMPLES, INSTALL_BENCH, LR, MODELS,
                                        RUNNERS, STEPS, auto_choice, default_conv_impl, flax_model,
                                        input_shape, make_data, make_runner, missing_package,
                                        sgd_step_fn, skip_reason, time_round)

SCRIPT = "round_bench"  # the output folder's name, ./fedjax-gen-out/round_bench
PROG = "fedjax-gen bench"
RESULTS = "benchmarks/results"  # the JSON and plots, relative to the reports' folder
BENCHMARKS_MD = "BENCHMARKS.md"
# The folder holding fedjax_gen_bench, for workers where the package is not installed.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSUMED_EFFICIENCY = 0.25  # share of peak assumed to project a runner never measured
MIN_CPU_SHARE = 0.85  # below: the measurement waited for other work on its cores; retry


def rss_mb(field: str = "VmHWM") -> float:
  """This process's peak (`VmHWM`) or current (`VmRSS`) resident set size, MB.

  From /proc/self/status: `getrusage(RUSAGE_SELF).ru_maxrss` (the fallback) carries the
  parent's high-water mark across fork+exec on Linux, so a worker would inherit the
  driver's peak.
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_flops(model_name: str, conv_impl: str) -> float:
  """FLOPs of one SGD step on a batch of 32, from XLA's cost analysis."""
  import jax
  import jax.numpy as jnp
  apply_fn, params = flax_model(model_name, conv_impl)
  opt, step = sgd_step_fn(apply_fn)
  x = jnp.zeros((BATCH, *input_shape(model_name)), jnp.float32)
  y = jnp.zeros((BATCH,), jnp.int32)
  cost = jax.jit(step).lower(params, opt.init(params), x, y).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def peak_flops(repeats: int = 5) -> dict:
  """Best f32 matmul rate on the default device (n=2048 on CPU, 8192 elsewhere).

  On CPU each matmul is timed by the process's CPU time (over the cores it may use), so
  other work sharing those cores does not lower the estimate; elsewhere by wall time.
  """
  import jax
  import jax.numpy as jnp
  cpu = jax.default_backend() == "cpu"
  n = 2048 if cpu else 8192
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()
  clock = time.process_time if cpu else time.perf_counter
  cores = len(os.sched_getaffinity(0)) if cpu else 1
  best = float("inf")
  for _ in range(repeats):
    t = clock()
    dot(a, a).block_until_ready()
    best = min(best, (clock() - t) / cores)
  return {"flop_s": 2 * n ** 3 / best, "method": f"best of {repeats} jitted {n}x{n} f32 "
          f"matmuls (jnp.dot), this run, timed by {'CPU time per core' if cpu else 'wall time'}"}


# --- one measurement, in a worker process ------------------------------------------------
def device_memory() -> dict:
  """Peak device memory of JAX (and torch on CUDA) where the backend reports it."""
  out = {}
  if "jax" in sys.modules:
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      out["jax_peak_bytes"] = int(stats["peak_bytes_in_use"])
  if "torch" in sys.modules:
    import torch
    if torch.cuda.is_available():
      out["torch_peak_bytes"] = int(torch.cuda.max_memory_allocated())
  return out


def _record(first, times, cpu, base_rss, info) -> dict:
  median = statistics.median(times)
  return {"round_s": median, "round_s_all": times, "first_round_s": first,
          "round_cpu_s": statistics.median(cpu), "cpu_share": sum(cpu) / sum(times),
          "compile_s": max(first - median, 0.0), "base_rss_mb": base_rss,
          "cores": len(os.sched_getaffinity(0)),
          "peak_rss_mb": rss_mb(), "device_memory": device_memory(), "info": info}


def measure(spec: dict, serve: bool = False) -> dict:
  """Warm-up round, then `repeats` timed rounds of one runner (called in the worker).

  `serve`: print READY after the warm-up, then time one round per "round" line read from
  stdin (answering TIME <s>) until another line comes: the driver interleaves the runners.
  """
  x, y = make_data(spec["model"], spec["clients"])
  base_rss = rss_mb("VmRSS")
  round_fn, info = make_runner(spec["runner"], spec["model"], x, y,
                               conv_impl=spec.get("conv_impl", "auto"))
  first = time_round(round_fn)[0]
  times, cpu = [], []
  if serve:
    print("READY", flush=True)
    for line in sys.stdin:
      if line.strip() != "round":
        break
      wall, cpu_s = time_round(round_fn)
      times.append(wall)
      cpu.append(cpu_s)
      print(f"TIME {wall}", flush=True)
  else:
    for _ in range(spec["repeats"]):
      wall, cpu_s = time_round(round_fn)
      times.append(wall)
      cpu.append(cpu_s)
  return _record(first, times, cpu, base_rss, info)


def worker_main(spec_json: str) -> int:
  spec = json.loads(spec_json)
  if spec["runner"] != "torch_loop":
    import jax  # noqa: F401  (platform selection before any work)
  print("RESULT " + json.dumps(measure(spec, serve=spec.get("serve", False))), flush=True)
  return 0


def _worker_cmd(spec: dict):
  """The worker's command line and environment: this module, importable from a source
  checkout without an install (its folder on PYTHONPATH unless it is a site folder)."""
  import site
  cmd = [sys.executable, "-m", "fedjax_gen_bench.round_bench", "--worker", json.dumps(spec)]
  installed = PACKAGE_PARENT in site.getsitepackages() + [site.getusersitepackages()]
  return cmd, _env_with_path(None if installed else PACKAGE_PARENT)


def _env_with_path(*folders: str | None) -> dict:
  """This environment with `folders` (None skipped) ahead of its PYTHONPATH."""
  return dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (*folders, os.environ.get("PYTHONPATH")) if p))


class Worker:
  """One runner in its own process, serving timed rounds on request (`measure(serve=True)`)."""

  def __init__(self, spec: dict):
    cmd, env = _worker_cmd({**spec, "serve": True})
    self.stderr = tempfile.TemporaryFile()
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self.stderr, env=env, bufsize=0)
    self.buf = b""

  def ask(self, command: str | None, prefix: str, timeout: float) -> str:
    """Sends `command` (if any), returns the rest of the first line starting with `prefix`."""
    if command:
      self.proc.stdin.write(command.encode() + b"\n")
    deadline = time.monotonic() + timeout
    while True:
      while b"\n" in self.buf:
        line, self.buf = self.buf.split(b"\n", 1)
        if line.startswith(prefix.encode()):
          return line[len(prefix):].decode().strip()
      left = deadline - time.monotonic()
      if left <= 0:
        raise TimeoutError(f"no {prefix} within {timeout:.0f} s")
      if select.select([self.proc.stdout], [], [], left)[0]:
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not chunk:
          raise RuntimeError("worker exited")
        self.buf += chunk

  def failure(self, exc: Exception) -> dict:
    self.proc.kill()
    self.proc.wait()
    if isinstance(exc, TimeoutError):
      return {"status": "timeout", "reason": str(exc)}
    self.stderr.seek(0)
    tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-3:]
    return {"status": "failed", "reason": " | ".join(tail or [str(exc)])[-600:]}


def measure_group(specs: list[dict], timeout: float) -> list[dict]:
  """Times the runners of `specs` (one model and clients per round) interleaved: each warms
  up in its own process, one after another, then round r of every runner (in an order
  rotated each time) runs before round r+1 of any, so load that changes slowly -- other
  work on a shared CPU -- falls on all runners alike. Returns a record per spec."""
  workers, out = {}, [None] * len(specs)
  for i, spec in enumerate(specs):
    w = Worker(spec)
    try:
      w.ask(None, "READY", timeout)
      workers[i] = w
    except (OSError, RuntimeError) as e:  # OSError: a timeout or a broken pipe
      out[i] = w.failure(e)
  for r in range(max((s["repeats"] for s in specs), default=0)):
    order = [i for i in workers if r < specs[i]["repeats"]]
    for i in order[r % max(len(order), 1):] + order[:r % max(len(order), 1)]:
      try:
        workers[i].ask("round", "TIME", timeout)
      except (OSError, RuntimeError) as e:  # OSError: a timeout or a broken pipe
        out[i] = workers.pop(i).failure(e)
  for i, w in workers.items():
    try:
      out[i] = {"status": "ok", **json.loads(w.ask("end", "RESULT", timeout))}
      w.proc.wait()
    except (OSError, RuntimeError, ValueError) as e:  # OSError: a timeout or a broken pipe
      out[i] = w.failure(e)
  return out


def run_worker(spec: dict, timeout: float) -> dict:
  """Runs `measure(spec)` in a subprocess; returns its record or the failure."""
  cmd, env = _worker_cmd(spec)
  return worker_result(cmd, timeout, env)


def script_worker(script: str, spec: dict, timeout: float) -> dict:
  """`worker_result` of `python SCRIPT --worker SPEC_JSON` (a benchmark script's own
  worker), with this checkout and the script's folder on the path."""
  script = os.path.abspath(script)
  return worker_result([sys.executable, script, "--worker", json.dumps(spec)], timeout,
                       _env_with_path(PACKAGE_PARENT, os.path.dirname(script)))


def worker_result(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
  """Runs a worker command that prints `RESULT <json>`: `{"status": "ok",
  "worker_wall_s": ..., **record}`, or the timeout or failure (its last lines)."""
  t = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
  except subprocess.TimeoutExpired:
    return {"status": "timeout", "reason": f"killed after {timeout:.0f} s"}
  wall = time.perf_counter() - t
  lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
  if proc.returncode or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"status": "failed", "reason": " | ".join(tail)[-600:]}
  return {"status": "ok", "worker_wall_s": wall, **json.loads(lines[-1][len("RESULT "):])}


def run_uncontended(spec: dict, timeout: float, retries: int) -> dict:
  """`run_worker`, measured again (up to `retries` times) while the process got less than
  `MIN_CPU_SHARE` of its cores during the timed rounds (other work on the same cores, CPU
  only); keeps the attempt with the highest share."""
  import jax
  best = None
  for attempt in range(1 + retries):
    rec = run_worker(spec, timeout)
    if rec["status"] != "ok":
      return rec
    rec["attempt"] = attempt + 1
    if best is None or rec["cpu_share"] > best["cpu_share"]:
      best = rec
    if jax.default_backend() != "cpu" or rec["cpu_share"] >= MIN_CPU_SHARE * rec["cores"]:
      break
    print(f"  (CPU share {rec['cpu_share']:.2f}: other work on these cores; measuring again)",
          flush=True)
    time.sleep(30)  # contention comes in bursts
  return best


# --- planning: what to measure, what to skip ----------------------------------------------
def auto_plan_of(model_name: str, clients: int, conv_impl: str = "auto") -> str:
  return str(auto_choice(model_name, clients, conv_impl).plan)


def chunk_plan(runner: str, clients: int) -> str | None:
  from fedjax_gen.engine import ExecutionPlan
  if not runner.startswith("fedjax_gen_chunk"):
    return None
  k = runner[len("fedjax_gen_chunk"):]
  return str(ExecutionPlan(clients if k == "all" else int(k), 0))


def duplicate_reason(runner: str, clients: int, auto: str, runners) -> str | None:
  """Why a forced-chunk runner would repeat another measurement (None: it would not)."""
  plan = chunk_plan(runner, clients)
  if plan is None:
    return None
  if plan == auto:
    return f"same plan as fedjax_gen_auto ({plan})"
  if runner != "fedjax_gen_chunkall" and "fedjax_gen_chunkall" in runners and \
      plan == chunk_plan("fedjax_gen_chunkall", clients):
    return "same plan as fedjax_gen_chunkall"
  return None


def project_seconds(records, model, runner, clients, repeats, round_flops, peak) -> float:
  """Projected wall time (warm-up + repeats) from this runner's smaller measurements,
  else from the other runners', else from the FLOPs at `ASSUMED_EFFICIENCY` of peak."""
  def rate(rs):  # seconds per client update, and compile seconds
    r = max(rs, key=lambda r: r["clients"])
    return r["round_s"] / r["clients"], r["compile_s"]
  ok = [r for r in records if r["model"] == model and r["status"] == "ok"]
  own = [r for r in ok if r["runner"] == runner]
  if own:
    per_client, compile_s = rate(own)
  elif ok:
    per_client, compile_s = rate([r for r in ok if r["runner"] == "fedjax_gen_auto"] or ok)
  else:
    per_client, compile_s = round_flops / clients / (peak * ASSUMED_EFFICIENCY), 0.0
  return compile_s + (1 + repeats) * per_client * clients


# --- the driver ----------------------------------------------------------------------------
def device_info() -> dict:
  import importlib.metadata as md
  import jax
  dev = jax.devices()[0]
  cpu = ""
  if os.path.exists("/proc/cpuinfo"):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "")
  versions = {}
  for pkg in ("jax", "jaxlib", "flax", "optax", "torch", "fedjax", "dm-haiku"):
    try:
      versions[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      versions[pkg] = None
  return {"backend": jax.default_backend(), "device_kind": dev.device_kind,
          "num_devices": jax.device_count(), "cpu_model": cpu, "cpu_count": os.cpu_count(),
          "cores_used": len(os.sched_getaffinity(0)), "affinity": sorted(os.sched_getaffinity(0)),
          "platform": platform.platform(), "python": platform.python_version(),
          "versions": versions}


def load_results(path: str) -> dict:
  return json.load(open(path)) if os.path.exists(path) else {}


def save_json(path: str, data: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=1)
  os.replace(tmp, path)


def add_derived(rec: dict, flops: dict, peak: float) -> None:
  """Throughputs and achieved FLOP/s of an "ok" record, in place; its share of the peak
  measured in the run that measured it (`peak_flop_s`, else `peak`)."""
  per_round = rec["clients"] * STEPS * flops[rec["model"]]
  rec["client_updates_s"] = rec["clients"] / rec["round_s"]
  cpu_s = rec.get("round_cpu_s")
  rec["client_updates_cpu_s"] = rec["clients"] / cpu_s if cpu_s else None  # per CPU-second
  rec["examples_s"] = rec["clients"] * STEPS * BATCH / rec["round_s"]
  rec["flop_s"] = per_round / rec["round_s"]
  rec["peak_share"] = rec["flop_s"] / rec.get("peak_flop_s", peak)


def add_ratios(records: list) -> None:
  """`vs_auto`: a runner's throughput over fedjax_gen_auto's at the same model/clients."""
  auto = {(r["model"], r["clients"]): r["client_updates_s"] for r in records
          if r["runner"] == "fedjax_gen_auto" and r["status"] == "ok"}
  auto_cpu = {(r["model"], r["clients"]): r["client_updates_cpu_s"] for r in records
              if r["runner"] == "fedjax_gen_auto" and r["status"] == "ok"
              and r["client_updates_cpu_s"]}
  for r in records:
    key = (r["model"], r["clients"])
    ok = r["status"] == "ok" and key in auto
    r["vs_auto"] = r["client_updates_s"] / auto[key] if ok else None
    r["vs_auto_cpu"] = (r["client_updates_cpu_s"] / auto_cpu[key]
                        if ok and key in auto_cpu and r["client_updates_cpu_s"] else None)


def param_count(model_name: str) -> int:
  from fedjax_gen import models
  return models.count_params(flax_model(model_name, default_conv_impl(model_name))[1])


def check_params(rec: dict, flax_params: int) -> None:
  """The torch twin must have fedjax_gen's parameter count (recorded and printed)."""
  torch_params = rec["info"].get("torch_params")
  if torch_params is not None:
    rec["params_match"] = torch_params == flax_params
    print(f"{rec['model']}: torch params {torch_params:,}, fedjax_gen params "
          f"{flax_params:,}: {'match' if rec['params_match'] else 'MISMATCH'}", flush=True)


def measure_all(args, path: str, old_path: str | None = None) -> dict:
  """Measures `args.models` x `args.clients` x `args.runners`, saving to `path` after each
  group; with `--update`, the other groups of the results in `old_path` are kept."""
  info = device_info()
  print(f"device: {info['device_kind']} ({info['backend']}), CPU {info['cpu_model']}, "
        f"{info['cores_used']} of {info['cpu_count']} cores in this process's affinity "
        f"{info['affinity']}", flush=True)
  peak = peak_flops()
  print(f"peak: {peak['flop_s'] / 1e9:.1f} GFLOP/s ({peak['method']})", flush=True)
  conv = {m: default_conv_impl(m) for m in args.models}
  flops = {m: step_flops(m, conv[m]) for m in args.models}
  params = {m: param_count(m) for m in args.models}
  print("fedjax_gen params: " + ", ".join(f"{m} {n:,}" for m, n in params.items()), flush=True)
  data = {"device": info, "peak": peak, "step_flops": flops, "params": params,
          "flops_method": f"XLA cost_analysis() of one jitted SGD step, batch {BATCH}, "
                          f"conv_impl {conv}; x {STEPS} steps x clients per round",
          "workload": {"steps": STEPS, "batch": BATCH, "examples_per_client": EXAMPLES,
                       "lr": LR, "classes": CLASSES,
                       "input_shapes": {m: input_shape(m) for m in args.models}},
          "run_peak": peak, "args": vars(args), "command": args.command,
          "started": datetime.datetime.now().isoformat(timespec="seconds"), "records": []}
  old = load_results(old_path) if args.update and old_path else {}
  if old:  # keep the other (model, clients) groups of the saved run, measure these anew
    redo = {(m, c) for m in args.models for c in args.clients}
    data["records"] = [r for r in old["records"] if (r["model"], r["clients"]) not in redo]
    for key in ("step_flops", "params"):
      data[key] = {**old[key], **data[key]}
    data["command"] = (f"{old['command']}, then (groups {sorted(redo)} measured again) "
                       f"{data['command']}")
    data["started"], data["peak"] = old["started"], old["peak"]  # the first run's peak
  for model in args.models:
    for clients in sorted(args.clients):
      auto = auto_plan_of(model, clients, args.conv_impl)
      planned = [plan_one(args, data, model, clients, runner, auto, flops, peak["flop_s"])
                 for runner in args.runners]
      specs = [spec for _, spec in planned if spec]
      measured = iter(measure_group(specs, 2 * args.max_seconds + 120))
      for rec, spec in planned:
        data["records"].append(finish({**rec, **next(measured)} if spec else rec, data))
      add_ratios(data["records"])
      save_json(path, data)
  data["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
  save_json(path, data)
  return data


def remeasure_contended(args, path: str, old_path: str | None) -> dict:
  """Measures again the records of `old_path` whose CPU share was below `--remeasure-below`
  per core (other work on the cores), keeping whichever attempt got the higher share;
  saves to `path`."""
  if not old_path:
    raise SystemExit(f"--remeasure-below: no results to measure again in {path}")
  data = load_results(old_path)
  for i, rec in enumerate(data["records"]):
    if rec["status"] != "ok" or rec["cpu_share"] >= args.remeasure_below * rec["cores"]:
      continue
    spec = {**{k: rec[k] for k in ("model", "clients", "runner", "repeats")},
            "conv_impl": args.conv_impl}
    new = run_uncontended(spec, 2 * args.max_seconds + 120, args.retries)
    if new["status"] == "ok" and new["cpu_share"] > rec["cpu_share"]:
      new.update(spec, projected_s=rec.get("projected_s"), remeasured=datetime.datetime.now()
                 .isoformat(timespec="seconds"), first_share=rec["cpu_share"])
      add_derived(new, data["step_flops"], data["peak"]["flop_s"])
      data["records"][i] = rec = new
    print(format_record(rec), flush=True)
    add_ratios(data["records"])
    save_json(path, data)
  return data


def plan_one(args, data, model, clients, runner, auto, flops, peak) -> tuple[dict, dict | None]:
  """The record of one (model, clients, runner) and the worker spec that measures it, or
  None where it is skipped: a duplicate plan, FedJAX on a model it failed on, or projected
  over `--max-seconds`."""
  rec = {"model": model, "clients": clients, "runner": runner}
  dup = duplicate_reason(runner, clients, auto, args.runners)
  failed = [r for r in data["records"] if r["model"] == model and r["runner"] == runner
            and r["status"] in ("failed", "unsupported")]
  if dup:
    return {**rec, "status": "duplicate", "reason": dup}, None
  if failed and runner == "fedjax":
    return {**rec, "status": "unsupported", "reason": failed[0]["reason"]}, None
  round_flops = clients * STEPS * flops[model]
  repeats = args.repeats
  while repeats > 1 and project_seconds(data["records"], model, runner, clients, repeats,
                                        round_flops, peak) > args.max_seconds:
    repeats -= 1
  projected = project_seconds(data["records"], model, runner, clients, repeats,
                              round_flops, peak)
  if projected > args.max_seconds:
    return {**rec, "status": "skipped", "reason": f"projected {projected:.0f} s > "
            f"--max-seconds {args.max_seconds:.0f}"}, None
  return ({**rec, "repeats": repeats, "projected_s": projected},
          {**rec, "repeats": repeats, "conv_impl": args.conv_impl})


def finish(rec: dict, data: dict) -> dict:
  if rec["status"] == "ok":
    rec["peak_flop_s"] = data["run_peak"]["flop_s"]
    add_derived(rec, data["step_flops"], data["peak"]["flop_s"])
    check_params(rec, data["params"][rec["model"]])
  print(format_record(rec), flush=True)
  return rec


def format_record(r: dict) -> str:
  head = f"{r['model']:10s} {r['clients']:5d} {r['runner']:20s}"
  if r["status"] != "ok":
    return f"{head} {r['status']}: {r.get('reason', '')}"
  return (f"{head} round {r['round_s']:8.3f} s  compile {r['compile_s']:6.1f} s  "
          f"{r['client_updates_s']:8.2f} clients/s  {r['examples_s']:9.0f} ex/s  "
          f"{r['flop_s'] / 1e9:7.2f} GFLOP/s ({100 * r['peak_share']:4.1f}% peak)  "
          f"RSS {r['peak_rss_mb']:6.0f} MB  cpu share {r['cpu_share']:.2f}  {r['info']}")


# --- report ----------------------------------------------------------------------------------
def _fmt(x, spec, none="—"):
  return none if x is None else format(x, spec)


def device_line(d: dict) -> str:
  dev = d["device"]
  return (f"{dev['device_kind']} ({dev['backend']}); CPU {dev['cpu_model'] or '?'}, "
          f"{dev['cores_used']} of {dev['cpu_count']} cores used (affinity {dev['affinity']}); "
          f"jax {dev['versions']['jax']}, torch {dev['versions']['torch']}, "
          f"fedjax {dev['versions']['fedjax']}; peak {d['peak']['flop_s'] / 1e9:.1f} GFLOP/s "
          f"({d['peak']['method']}){later_peaks(d)}.")


def later_peaks(d: dict) -> str:
  """The peaks of `--update` runs, where their groups' % peak is taken against them."""
  later = {}
  for r in d["records"]:
    if r.get("peak_flop_s") and abs(r["peak_flop_s"] - d["peak"]["flop_s"]) > 1:
      later.setdefault(r["peak_flop_s"], set()).add(f"{r['model']} x {r['clients']}")
  return "".join(f"; {', '.join(sorted(g))}: {p / 1e9:.1f} GFLOP/s, measured with them"
                 for p, g in later.items())


def table_lines(d: dict) -> list[str]:
  lines = ["| model | clients | runner | round s | compile s | client-updates/s | examples/s "
           "| GFLOP/s | % peak | peak RSS MB | device MB | CPU share | × auto | × auto (CPU s) |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  skipped = []
  for r in d["records"]:
    if r["status"] != "ok":
      skipped.append(f"- {r['model']}, {r['clients']} clients, {r['runner']}: {r['status']} "
                     f"({r.get('reason', '')})")
      continue
    mem = r["device_memory"]
    dev_mb = max(mem.values()) / 2 ** 20 if mem else None
    mark = " †" if r.get("remeasured") else ""
    lines.append(
        f"| {r['model']} | {r['clients']} | {r['runner']}{mark} | {r['round_s']:.3f} | "
        f"{r['compile_s']:.1f} | {r['client_updates_s']:.2f} | {r['examples_s']:.0f} | "
        f"{r['flop_s'] / 1e9:.2f} | {100 * r['peak_share']:.1f} | {r['peak_rss_mb']:.0f} | "
        f"{_fmt(dev_mb, '.0f')} | {_fmt(r.get('cpu_share'), '.2f')} | "
        f"{_fmt(r['vs_auto'], '.2f')} | "
        f"{_fmt(r['vs_auto_cpu'], '.2f')} |")
  redone = [r for r in d["records"] if r.get("remeasured")]
  if redone:
    lines += ["", "† measured again later in the same session (`--remeasure-below`), the "
              "first attempt having had CPU share "
              + ", ".join(f"{r['first_share']:.2f}" for r in redone) + "."]
  return lines + ([""] + ["Not measured:"] + skipped if skipped else [])


def report_section(datasets: dict) -> str:
  lines = ["<!-- round_bench:begin -->", "## One FedAvg round: fedjax_gen vs a JAX loop, "
           "PyTorch and FedJAX", "",
           f"Workload: Fashion-MNIST-shaped random data (28x28x1, 10 classes; ResNet-18 on "
           f"32x32x3), every client {EXAMPLES} examples and exactly {STEPS} local SGD steps "
           f"(lr {LR}) of batch {BATCH}, all clients of the round train, FedAvg aggregation. "
           "Runners are described in `fedjax_gen_bench/round_bench.py`. Round s: median "
           "of the timed rounds after one warm-up round; compile s: warm-up minus median; "
           "client-updates/s = clients / round s; GFLOP/s from XLA's cost analysis of one SGD "
           "step (same count for every runner); % peak against a large matmul timed in the "
           "same run; peak RSS: the measuring process's high-water mark (`VmHWM`; each "
           "measurement runs in its own process, its data included; the runners of one model and "
           "clients per round are timed interleaved, round by round); CPU share: the "
           "process's CPU time over wall time in the timed rounds (below the cores used: it "
           "waited, e.g. for other work on its cores); × auto: "
           "throughput over fedjax_gen_auto's (above 1: faster than fedjax_gen_auto); "
           "× auto (CPU s): the same with CPU time for wall time, "
           "which discounts waiting for other work on the same cores.", ""]
  for backend in sorted(datasets):
    d = datasets[backend]
    lines += [f"### {backend.upper()}: {d['device']['device_kind']}", "",
              "Device: " + device_line(d), "",
              f"Command: `{d['command']}` ({d['started']} to {d.get('finished', 'unfinished')}).",
              ""]
    if d.get("note"):
      lines += [d["note"], ""]
    lines += table_lines(d) + ["", f"![throughput](benchmarks/results/round_bench_{backend}.png)",
                               ""]
  if not any(b in datasets for b in ("gpu", "cuda", "rocm", "tpu")):
    lines += ["### GPU", "", "Pending: no GPU was available for these measurements. The same "
              "command runs unchanged on one (clients 10, 100 and 1000 by default there).", ""]
  lines += ["Re-run: `fedjax-gen bench --update-reports` (`--models`, `--clients`, "
            "`--runners`, `--repeats`, `--max-seconds`; `--report-only` re-renders this from "
            "`experiments/benchmarks/results/round_bench_<backend>.json`; without "
            "`--update-reports` it writes into `./fedjax-gen-out/round_bench`).",
            "<!-- round_bench:end -->"]
  return "\n".join(lines)


def write_section(reports: reports_lib.Reports, name: str, block: str) -> None:
  """Replaces `<!-- name:begin -->` .. `<!-- name:end -->` in BENCHMARKS.md (or appends)."""
  reports.write_section(BENCHMARKS_MD, name, block, heading="# Benchmarks")


def plot(d: dict):
  """Client-updates/s vs clients per round, one panel per model, one line per runner."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure
  models = list(dict.fromkeys(r["model"] for r in d["records"]))
  runners = list(dict.fromkeys(r["runner"] for r in d["records"]))
  colors = {r: f"C{i}" for i, r in enumerate(runners)}
  fig = Figure(figsize=(3.2 * len(models) + 1.6, 3.4))
  for i, model in enumerate(models):
    ax = fig.add_subplot(1, len(models), i + 1)
    for runner in runners:
      pts = sorted((r["clients"], r["client_updates_s"]) for r in d["records"]
                   if r["model"] == model and r["runner"] == runner and r["status"] == "ok")
      if pts:
        ax.plot(*zip(*pts), marker="o", markersize=4, label=runner, color=colors[runner])
    if not ax.lines:
      ax.text(0.5, 0.5, "not measured\n(projected over --max-seconds)", ha="center",
              va="center", transform=ax.transAxes, fontsize=8)
      ax.set_xticks([])
      ax.set_yticks([])
    else:
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_xlabel("clients per round")
      ax.grid(alpha=0.3, which="both")
    ax.set_title(model)
    if i == 0:
      ax.set_ylabel("client updates / s")
  handles = {l.get_label(): l for ax in fig.axes for l in ax.lines}
  fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=7)
  dev = d["device"]
  fig.suptitle(f"One FedAvg round: {dev['device_kind']} ({dev['backend']}), "
               f"{dev['cpu_model']}, {dev['cores_used']} core(s)", fontsize=9)
  fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))
  return fig


def report(reports: reports_lib.Reports) -> None:
  """Plots and the BENCHMARKS.md section of every backend's results: the output folder's,
  or the committed ones where it has none."""
  datasets = {}
  for name in reports.names(RESULTS):
    if name.startswith("round_bench_") and name.endswith(".json"):
      backend = name[len("round_bench_"):-len(".json")]
      datasets[backend] = d = load_results(reports.existing(f"{RESULTS}/{name}"))
      for r in d["records"]:  # derived numbers from the raw ones (older files included)
        if r["status"] == "ok":
          add_derived(r, d["step_flops"], d["peak"]["flop_s"])
      add_ratios(d["records"])
      reports.save_figure(f"{RESULTS}/round_bench_{backend}.png", plot(d), dpi=110)
  write_section(reports, "round_bench", report_section(datasets))


def available_runners(runners: list[str]) -> list[str]:
  """`runners` less those whose package (torch, fedjax) is missing, each skipped with one
  line that says how to install it."""
  kept = []
  for runner in runners:
    package = missing_package(runner)
    if package:
      print(f"{runner} skipped: {skip_reason(package)}", flush=True)
    else:
      kept.append(runner)
  return kept


def _missing_note() -> str:
  missing = [f"{package} ({runner})" for runner in RUNNERS
             for package in [missing_package(runner)] if package]
  if not missing:
    return "torch and fedjax are installed: every runner can run."
  return textwrap.fill(f"Not installed here: {', '.join(missing)}; those runners are "
                       f"skipped. Install them with {INSTALL_BENCH}.", 88)


def parse_args(argv, prog: str = PROG):
  parser = argparse.ArgumentParser(prog=prog, description=__doc__, epilog=_missing_note(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
  parser.add_argument("--clients", nargs="+", type=int, default=None,
                      help="clients per round (default 10 100 on CPU, 10 100 1000 elsewhere)")
  parser.add_argument("--runners", nargs="+", default=list(RUNNERS),
                      help="default: all (torch_loop and fedjax skipped where torch or "
                           "fedjax is missing)")
  parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
  parser.add_argument("--max-seconds", type=float, default=120.0,
                      help="skip a measurement projected to take longer (warm-up included)")
  parser.add_argument("--retries", type=int, default=1,
                      help="with --remeasure-below: attempts per record while other work "
                           "shared the cores")
  parser.add_argument("--remeasure-below", type=float, default=None, metavar="SHARE",
                      help="only measure again the saved records whose CPU share per core "
                           "was below SHARE (e.g. 0.85), keeping the better attempt")
  parser.add_argument("--update", action="store_true",
                      help="measure only --models x --clients again, keeping the saved "
                           "records of the other groups (ratios compare runners of a group)")
  parser.add_argument("--conv-impl", default="auto", choices=("auto", "xla", "im2col"),
                      help="the fedjax_gen runners' convolution: auto (each runner's own "
                           "choice) or forced, e.g. to compare xla and im2col on a GPU "
                           "(each into its own --out)")
  parser.add_argument("--report-only", action="store_true")
  parser.add_argument("--note", default="", help="a line shown with this run's table")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  reports_lib.add_arguments(parser, SCRIPT)
  return parser.parse_args(argv)


def main(argv=None, prog: str = PROG) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv, prog)
  if args.worker:
    return worker_main(args.worker)
  reports = reports_lib.Reports.from_args(args, SCRIPT)
  if not args.report_only:
    import jax
    bad = [r for r in args.runners if r not in RUNNERS and not r.startswith("fedjax_gen_chunk")]
    if bad:
      raise SystemExit(f"unknown runners {bad}; valid: {RUNNERS} or fedjax_gen_chunk<k>")
    args.runners = available_runners(args.runners)
    if args.clients is None:
      args.clients = [10, 100] if jax.default_backend() == "cpu" else [10, 100, 1000]
    args.command = " ".join([prog, *argv])
    rel = f"{RESULTS}/round_bench_{jax.default_backend()}.json"
    path, old_path = reports.path(rel), reports.existing(rel)
    try:
      if args.remeasure_below is not None:
        data = remeasure_contended(args, path, old_path)
      else:
        data = measure_all(args, path, old_path)
      if args.note:
        data["note"] = args.note
        save_json(path, data)
    finally:  # saved after every group: an interrupted run's results are there too
      if os.path.exists(path):
        reports.wrote(path)
  report(reports)
  return 0


if __name__ == "__main__":
  sys.exit(main())
