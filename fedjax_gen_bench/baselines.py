"""One FedAvg round timed in this process: fedjax_gen against a JAX client loop, PyTorch and
FedJAX, on the same architectures and the same workload (the runners behind
`fedjax_gen_bench.round_bench`, `fedjax-gen bench`, which measures each in its own
subprocess and writes the report).

Workload: random Fashion-MNIST-shaped clients (28x28x1, 10 classes; 32x32x3 for ResNet-18),
every client 320 examples and exactly 10 local SGD steps (lr 0.01) of batch 32, all clients
of the round train, example-weighted mean (FedAvg, server SGD(1)).

    from fedjax_gen_bench import baselines
    records = baselines.compare("mlp", clients=10, runners=("fedjax_gen_auto", "jax_loop",
                                                              "torch_loop"))
    # [{"runner": ..., "status": "ok", "round_s": ..., "compile_s": ..., ...}, ...]

Runners (`RUNNERS`, or `fedjax_gen_chunk<k>`): `fedjax_gen_auto` (`Simulation` with its
automatic plan, as `fedjax-gen run` builds it), `fedjax_gen_chunk<k>` (the fused round, k
clients per vmapped chunk, `chunkall`: all), `jax_loop` (a jitted SGD step, Python loops
over steps and clients), `jax_loop_client` (one jitted function per client; it and the
forced chunks scan their steps, so they take `scanned_conv_impl`), `torch_loop`
(PFLlib-style PyTorch; needs `torch`) and `fedjax` (FedJAX 0.0.17; needs `fedjax`): both
come with `pip install "fedjax-gen[bench]"` and are skipped where missing.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time

STEPS, BATCH, EXAMPLES, LR, CLASSES = 10, 32, 320, 0.01, 10
MODELS = ("mlp", "simple_cnn", "cnn4", "resnet18")
RUNNERS = ("fedjax_gen_auto", "fedjax_gen_chunk1", "fedjax_gen_chunk10", "fedjax_gen_chunkall",
           "jax_loop", "jax_loop_client", "torch_loop", "fedjax")
# The package a runner needs beyond fedjax_gen's own dependencies (the `bench` extra).
EXTRA_PACKAGE = {"torch_loop": "torch", "fedjax": "fedjax"}
INSTALL_BENCH = ('pip install "fedjax-gen[bench]" (in a source checkout: '
                 'pip install -e ".[bench]")')


def input_shape(model_name: str) -> tuple[int, int, int]:
  return (32, 32, 3) if model_name == "resnet18" else (28, 28, 1)


def auto_choice(model_name: str, clients: int, conv_impl: str = "auto"):
  """What `fedjax-gen run` chooses for the model (`run.conv_impl=conv_impl`, automatic
  plan): `fedjax_gen.trainer.plan.choose`."""
  from fedjax_gen import models
  from fedjax_gen.trainer import plan
  shape = input_shape(model_name)
  return plan.choose(lambda impl: models.get_model(model_name, num_classes=CLASSES,
                                                   input_shape=shape, conv_impl=impl),
                     shape, clients_per_round=clients, conv_impl=conv_impl)


def default_conv_impl(model_name: str) -> str:
  """The model's default convolution: im2col on CPU for narrow convolutions, else native;
  "none" for the MLP."""
  return auto_choice(model_name, 1).conv_impl


def scanned_conv_impl(model_name: str) -> str:
  """The convolution for runners whose local steps run in a loop (`scan`/`fori_loop`):
  im2col on CPU, where the native one is several times slower there."""
  from fedjax_gen.trainer.plan import resolve_conv_impl
  return "none" if model_name == "mlp" else resolve_conv_impl("auto", scanned=True)


def make_data(model_name: str, clients: int, seed: int = 0):
  """Random Fashion-MNIST-shaped clients: x [C, 320, H, W, C] f32, y [C, 320] int32."""
  import numpy as np
  rng = np.random.default_rng(seed)
  x = rng.random((clients, EXAMPLES, *input_shape(model_name)), np.float32)
  y = rng.integers(0, CLASSES, (clients, EXAMPLES)).astype(np.int32)
  return x, y


# --- flax models -------------------------------------------------------------------------
def flax_model(model_name: str, conv_impl: str):
  """`(apply_fn, params)` of fedjax_gen's model `model_name`."""
  import jax
  from fedjax_gen import models
  shape = input_shape(model_name)
  model = models.get_model(model_name, num_classes=CLASSES, input_shape=shape,
                           conv_impl=conv_impl)
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  return apply_fn, models.init_params(model, shape, jax.random.key(0))


def sgd_step_fn(apply_fn):
  """`step(params, opt_state, x, y) -> (params, opt_state)`: one plain SGD step."""
  import jax
  import optax
  opt = optax.sgd(LR)

  def step(params, opt_state, x, y):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x), y).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
  return opt, step


# --- runners: each returns (round_fn, info); round_fn runs one round and blocks ----------
def fedjax_gen_runner(model_name, x, y, chunk, conv_impl="auto"):
  """`chunk`: None for `auto_plan`, an int, or "all"; `conv_impl`: "auto" (the runner's own
  choice) or "xla" | "im2col" (forced; the MLP has no convolution)."""
  import jax
  import numpy as np
  import optax
  from fedjax_gen.algorithms import fedavg
  from fedjax_gen.data import ClientArrays
  from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation, masked_cross_entropy
  clients = len(x)
  if chunk is None:
    auto = auto_choice(model_name, clients, conv_impl)
    conv_impl, plan = auto.conv_impl, auto.plan
  else:
    if conv_impl == "auto" or model_name == "mlp":
      conv_impl = scanned_conv_impl(model_name)
    plan = ExecutionPlan(clients if chunk == "all" else int(chunk), 0)
  apply_fn, params = flax_model(model_name, "xla" if conv_impl == "none" else conv_impl)
  alg = fedavg(masked_cross_entropy(apply_fn), optax.sgd(LR))
  sim = Simulation(alg, ClientArrays(x, y, np.full(clients, EXAMPLES, np.int32)),
                   LocalSchedule(BATCH, 1, STEPS), clients_per_round=clients, plan=plan)
  state = list(sim.init(params))
  keys = iter(jax.random.split(jax.random.key(1), 10_000))

  def round_fn():
    server, states, _ = sim.round(state[0], state[1], next(keys))
    jax.block_until_ready(server)
    state[:] = [server, states]
  return round_fn, {"plan": str(sim.plan), "conv_impl": conv_impl}


def jax_loop_runner(model_name, x, y, per_client: bool):
  """One client at a time: a jitted step (or a jitted client), weighted sum on device."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  conv_impl = scanned_conv_impl(model_name) if per_client else default_conv_impl(model_name)
  apply_fn, server = flax_model(model_name, conv_impl)
  opt, step = sgd_step_fn(apply_fn)
  x_dev, y_dev = jax.device_put(x), jax.device_put(y)
  weight = 1.0 / len(x)  # equal client sizes

  @jax.jit
  def batch_step(params, opt_state, xc, yc, idx):
    return step(params, opt_state, xc[idx], yc[idx])

  @jax.jit
  def client_update(params, xc, yc, key):
    def body(t, carry):
      idx = jax.random.permutation(jax.random.fold_in(key, t), EXAMPLES)[:BATCH]
      return step(*carry, xc[idx], yc[idx])
    return jax.lax.fori_loop(0, STEPS, body, (params, opt.init(params)))[0]

  add = jax.jit(lambda acc, p: jax.tree.map(lambda a, b: a + weight * b, acc, p))
  host_rng = np.random.default_rng(0)
  state = {"server": server, "round": 0}

  def round_fn():
    acc = jax.tree.map(jnp.zeros_like, state["server"])
    key = jax.random.key(state["round"])
    for c in range(len(x)):
      xc, yc = x_dev[c], y_dev[c]
      if per_client:
        params = client_update(state["server"], xc, yc, jax.random.fold_in(key, c))
      else:
        params, opt_state = state["server"], opt.init(state["server"])
        for _ in range(STEPS):
          idx = host_rng.permutation(EXAMPLES)[:BATCH].astype(np.int32)
          params, opt_state = batch_step(params, opt_state, xc, yc, idx)
      acc = add(acc, params)
    jax.block_until_ready(acc)
    state.update(server=acc, round=state["round"] + 1)
  return round_fn, {"conv_impl": conv_impl,
                    "style": "jitted client (fori_loop)" if per_client else "jitted step"}


def torch_model(model_name: str):
  """The torch twin of fedjax_gen's model (same layers and parameter count)."""
  from torch import nn
  if model_name == "mlp":
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200),
                         nn.ReLU(), nn.Linear(200, CLASSES))
  if model_name == "simple_cnn":  # NIID-Bench SimpleCNNMNIST
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 120),
                         nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, CLASSES))
  if model_name == "cnn4":  # PFLlib FedAvgCNN
    return nn.Sequential(nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1024, 512),
                         nn.ReLU(), nn.Linear(512, CLASSES))
  if model_name == "resnet18":
    return _torch_resnet18()
  raise ValueError(model_name)


def _torch_resnet18():
  """CIFAR ResNet-18 with GroupNorm(2) and bias-free convolutions, as models/resnet.py."""
  import torch
  from torch import nn

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.norm1 = nn.GroupNorm(2, cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.norm2 = nn.GroupNorm(2, cout)
      self.shortcut = nn.Identity()
      if stride != 1 or cin != cout:
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.GroupNorm(2, cout))

    def forward(self, x):
      y = torch.relu(self.norm1(self.conv1(x)))
      return torch.relu(self.shortcut(x) + self.norm2(self.conv2(y)))

  layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.GroupNorm(2, 64), nn.ReLU()]
  cin = 64
  for i, w in enumerate((64, 128, 256, 512)):
    layers += [Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)]
    cin = w
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, CLASSES))


def torch_runner(model_name, x, y, threads: int | None = None):
  """`threads`: torch's intra-op threads (default: the cores JAX may use). Where other work
  shares those cores, its OpenMP threads wait on each other: rounds of the mlp measured
  160x slower with 2 threads than with 1 on a 2-core machine under such load."""
  import numpy as np
  import torch
  threads = threads or len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  xs = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3))).to(device)
  ys = torch.from_numpy(y.astype(np.int64)).to(device)
  torch.manual_seed(0)
  global_model, local = torch_model(model_name).to(device), torch_model(model_name).to(device)
  weight = 1.0 / len(x)
  loss_fn = torch.nn.CrossEntropyLoss()

  def round_fn():
    global_state = global_model.state_dict()
    acc = {k: torch.zeros_like(v) for k, v in global_state.items()}
    for c in range(len(xs)):
      local.load_state_dict(global_state)
      opt = torch.optim.SGD(local.parameters(), lr=LR)
      for _ in range(STEPS):
        idx = torch.randperm(EXAMPLES, device=device)[:BATCH]
        opt.zero_grad(set_to_none=True)
        loss_fn(local(xs[c, idx]), ys[c, idx]).backward()
        opt.step()
      with torch.no_grad():
        for k, v in local.state_dict().items():
          acc[k].add_(v, alpha=weight)
    global_model.load_state_dict(acc)
    if device.type == "cuda":
      torch.cuda.synchronize()
  params = sum(p.numel() for p in global_model.parameters())
  return round_fn, {"torch_device": str(device), "torch_threads": threads,
                    "torch_params": params, "torch": torch.__version__}


def install_jax_aliases():
  """FedJAX 0.0.17 calls `jax.tree_map` & co., removed in jax 0.6: alias them to jax.tree."""
  import jax
  for old, new in (("tree_map", "map"), ("tree_leaves", "leaves"), ("tree_flatten", "flatten"),
                   ("tree_unflatten", "unflatten"), ("tree_structure", "structure")):
    if not hasattr(jax, old):
      setattr(jax, old, getattr(jax.tree, new))


def fedjax_runner(model_name, x, y):
  install_jax_aliases()
  import fedjax  # after the aliases
  import jax
  import optax
  from fedjax.algorithms import fed_avg
  conv_impl = default_conv_impl(model_name)
  apply_fn, params = flax_model(model_name, conv_impl)
  model = fedjax.Model(
      init=lambda rng: params,
      apply_for_train=lambda p, batch, rng=None: apply_fn(p, batch["x"]),
      apply_for_eval=lambda p, batch: apply_fn(p, batch["x"]),
      train_loss=lambda batch, logits: optax.softmax_cross_entropy_with_integer_labels(
          logits, batch["y"]),
      eval_metrics={})
  alg = fed_avg.federated_averaging(
      fedjax.model_grad(model), fedjax.optimizers.sgd(LR), fedjax.optimizers.sgd(1.0),
      fedjax.ShuffleRepeatBatchHParams(batch_size=BATCH, num_steps=STEPS))
  clients = [(b"%d" % c, fedjax.ClientDataset({"x": x[c], "y": y[c]}), jax.random.PRNGKey(c))
             for c in range(len(x))]
  state = [alg.init(params)]

  def round_fn():
    state[0], _ = alg.apply(state[0], clients)
    jax.block_until_ready(state[0].params)
  return round_fn, {"conv_impl": conv_impl, "model_wrapper": "fedjax.Model(flax)"}


def make_runner(runner: str, model_name: str, x, y, *, torch_threads: int | None = None,
                conv_impl: str = "auto"):
  """`conv_impl`: the fedjax_gen runners' convolution ("auto": their own choice)."""
  if runner == "fedjax_gen_auto":
    return fedjax_gen_runner(model_name, x, y, None, conv_impl)
  if runner.startswith("fedjax_gen_chunk"):
    return fedjax_gen_runner(model_name, x, y, runner[len("fedjax_gen_chunk"):], conv_impl)
  if runner in ("jax_loop", "jax_loop_client"):
    return jax_loop_runner(model_name, x, y, per_client=runner == "jax_loop_client")
  if runner == "torch_loop":
    return torch_runner(model_name, x, y, torch_threads)
  if runner == "fedjax":
    return fedjax_runner(model_name, x, y)
  raise ValueError(f"unknown runner {runner!r}; valid: {RUNNERS}")


def missing_package(runner: str) -> str | None:
  """The package `runner` needs that is not installed (None: it can run)."""
  package = EXTRA_PACKAGE.get(runner)
  return package if package and importlib.util.find_spec(package) is None else None


def skip_reason(package: str) -> str:
  """Why a runner is skipped: its package is missing, and how to install it."""
  return f"{package} is not installed: {INSTALL_BENCH}"


def time_round(round_fn) -> tuple[float, float]:
  """Wall and process-CPU seconds of one `round_fn()`."""
  t, c = time.perf_counter(), time.process_time()
  round_fn()
  return time.perf_counter() - t, time.process_time() - c


def time_interleaved(round_fns: dict, repeats: int) -> dict:
  """Wall seconds of `repeats` calls of each `round_fns[name]()`, interleaved: round r of
  every one, in an order rotated each time, before round r+1 of any, so load that changes
  slowly -- other jobs on a shared machine -- falls on all alike. {name: [seconds, ...]}"""
  order, times = list(round_fns), {name: [] for name in round_fns}
  for r in range(repeats if order else 0):
    for name in order[r % len(order):] + order[:r % len(order)]:
      times[name].append(time_round(round_fns[name])[0])
  return times


def _summary(first: float, times: list[float]) -> dict:
  median = statistics.median(times)
  return {"round_s": median, "round_s_all": times, "first_round_s": first,
          "compile_s": max(first - median, 0.0)}


def _check(model_name: str, clients: int, repeats: int) -> None:
  if model_name not in MODELS:
    raise ValueError(f"Unknown model {model_name!r}; valid: {', '.join(MODELS)}.")
  if clients < 1 or repeats < 1:
    raise ValueError(f"clients and repeats must be >= 1, got {clients} and {repeats}.")


def time_rounds(runner: str, model_name: str = "mlp", clients: int = 10, repeats: int = 3,
                seed: int = 0, torch_threads: int | None = None) -> dict:
  """Builds `runner` on `clients` random clients, runs one warm-up round (compilation), then
  `repeats` timed rounds. `torch_threads`: see `torch_runner`.

  Returns:
    `round_s` (median wall seconds of the timed rounds), `round_s_all`, `first_round_s`,
    `compile_s` (first round minus the median), `clients_per_s` and the runner's `info`.
  """
  _check(model_name, clients, repeats)
  x, y = make_data(model_name, clients, seed)
  round_fn, info = make_runner(runner, model_name, x, y, torch_threads=torch_threads)
  first = time_round(round_fn)[0]
  rec = _summary(first, [time_round(round_fn)[0] for _ in range(repeats)])
  return {**rec, "clients_per_s": clients / rec["round_s"], "info": info}


def compare(model_name: str = "mlp", clients: int = 10,
            runners=("fedjax_gen_auto", "jax_loop", "torch_loop"), repeats: int = 3,
            seed: int = 0, torch_threads: int | None = None) -> list[dict]:
  """Times each runner on the same workload, one record per runner with `runner`, `model`,
  `clients` and `status`: "ok" (with `time_rounds`'s timings and `speedup`, the slowest
  runner's round time over this one's), or "skipped" with the `reason` (a runner whose
  package is not installed).

  Every runner is built and warmed up first; then the timed rounds are interleaved
  (`time_interleaved`).
  """
  _check(model_name, clients, repeats)
  records, built = [], {}
  x, y = make_data(model_name, clients, seed)
  for runner in runners:
    rec = {"runner": runner, "model": model_name, "clients": clients}
    package = missing_package(runner)
    if package:
      records.append({**rec, "status": "skipped", "reason": skip_reason(package)})
      continue
    round_fn, info = make_runner(runner, model_name, x, y, torch_threads=torch_threads)
    built[runner] = (round_fn, time_round(round_fn)[0])
    records.append({**rec, "status": "ok", "info": info})
  times = time_interleaved({runner: fn for runner, (fn, _) in built.items()}, repeats)
  for rec in records:
    if rec["status"] == "ok":
      rec.update(_summary(built[rec["runner"]][1], times[rec["runner"]]))
      rec["clients_per_s"] = clients / rec["round_s"]
  slowest = max((r["round_s"] for r in records if r["status"] == "ok"), default=None)
  for r in records:
    if r["status"] == "ok":
      r["speedup"] = slowest / r["round_s"]
  return records
