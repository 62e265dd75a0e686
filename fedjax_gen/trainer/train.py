"""`train_and_evaluate(config, workdir)`: the trainer, read top to bottom.

Sections: checks -> data -> model and algorithm -> resume -> round loop -> summary.
Bring your own model, dataset or algorithm by passing them (`model=`, `dataset=`,
`algorithm=`): they replace what the config names, and the run records it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from fedjax_gen import data as data_lib
from fedjax_gen import models, privacy
from fedjax_gen.algorithms import make_algorithm, pfedgpa
from fedjax_gen.engine import runs as runs_lib
from fedjax_gen.engine import (Evaluator, LocalSchedule, Simulation, StreamedSimulation,
                               masked_cross_entropy, personalized_summary)
from fedjax_gen.outputs import MetricsLog, plot_accuracy, write_json
from fedjax_gen.privacy import accounting, dp
from fedjax_gen.trainer import generation, options
from fedjax_gen.trainer import layout as layout_lib
from fedjax_gen.trainer import plan as plan_lib
from fedjax_gen.trainer.checkpoint import Checkpointer, saved_rounds
from fedjax_gen.trainer.workdir import Interrupted, Run, loss_not_finite, open_run, training
from fedjax_gen.types import FederatedAlgorithm

Dataset = tuple  # (x_train, y_train, x_test, y_test) NumPy arrays, integer labels


def load_federated_data(config: ml_collections.ConfigDict,
                        dataset: data_lib.Dataset | None = None, *,
                        choose_layout: Callable[..., str] | None = None
                        ) -> data_lib.FederatedData:
  """The config's dataset (or `dataset`), partitioned by the config's partitioner. The
  training part is padded `ClientArrays`, or a `PopulationStore` where
  `choose_layout(sizes, example_shape)` (from the partition, before anything is padded)
  says "store"."""
  d = config.data
  if dataset is None:
    dataset = data_lib.load_dataset(config.dataset, data_dir=d.dir or None, source=d.source)
  train, test = data_lib.client_indices(
      dataset, num_clients=config.num_clients, partition=config.partition, seed=config.seed,
      alpha=config.alpha, classes_per_client=config.classes_per_client,
      shards_per_client=d.shards_per_client, min_client_size=d.min_client_size,
      test_fraction=d.test_fraction)
  layout = "device" if choose_layout is None else choose_layout(
      [len(i) for i in train], tuple(dataset.x_train.shape[1:]))
  return data_lib.federated_data(dataset, train, test, store=layout == "store")


def _client_sharding(num_devices: int, num_clients: int):
  """The client axis over `num_devices` devices (0: all); a run over several processes
  shards it over every process's devices."""
  devices = jax.devices() if jax.process_count() > 1 else jax.devices()[: num_devices or None]
  if len(devices) <= 1:
    return None
  if num_clients % len(devices):
    raise ValueError(f"num_clients={num_clients} is not divisible by the {len(devices)} "
                     "devices the client axis is sharded over; change num_clients or "
                     "num_devices.")
  mesh = jax.sharding.Mesh(np.array(devices), ("clients",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("clients"))


def num_holdout(num_clients: int, fraction: float) -> int:
  return int(round(num_clients * fraction))


def split_holdout(config) -> tuple[np.ndarray, np.ndarray]:
  """(training clients, held-out newcomers): a seeded choice of `holdout_clients`."""
  perm = np.random.default_rng([config.seed, 2]).permutation(config.num_clients)
  held = np.sort(perm[: num_holdout(config.num_clients, config.personalized.holdout_clients)])
  return np.setdiff1d(np.arange(config.num_clients), held), held


def evaluate(config, sim: Simulation, evaluator: Evaluator, server, client_states,
             train_ids, new_ids, key) -> dict:
  """Global accuracy; each training client's personalized accuracy (after the algorithm's
  `personalize` steps, with its `eval_params`, or with the global model); newcomers'
  accuracy after their `newcomer` recipe."""
  alg = sim.alg
  metrics = evaluator.global_metrics(server.params)
  if config.data.test_fraction == 0:
    return metrics

  def accuracies(ids, adaptation, steps, client_states):
    if adaptation is not None and steps > 0:
      params = sim.adapt(adaptation, server, client_states, ids, key, steps)
    elif alg.eval_params is not None:
      states = sim.states_of(client_states, ids)
      params = jax.vmap(alg.eval_params, in_axes=(None, 0))(server, states)
    else:
      return evaluator.client_accuracies(ids, params=server.params)
    return evaluator.client_accuracies(ids, client_params=params)

  metrics.update(personalized_summary(
      accuracies(train_ids, alg.personalize, config.personalized.finetune_steps,
                 client_states)))
  if len(new_ids):
    fresh = sim.fresh_states(server.params)
    metrics.update(personalized_summary(
        accuracies(new_ids, alg.newcomer, config.personalized.newcomer_steps, fresh),
        prefix="new_client"))
  return metrics


def _time_split(rows) -> dict:
  """Mean seconds per round of the clients' part and the server's second computation
  (algorithms with a `server_post`, e.g. pFedGPA's diffusion), rounds after the first
  (which compiles) when there are any."""
  timed = [r for r in rows if "server_s" in r]
  if not timed:
    return {}
  timed = timed[1:] if len(timed) > 1 and timed[0]["round"] == 1 else timed
  client = sum(r["client_s"] for r in timed) / len(timed)
  server = sum(r["server_s"] for r in timed) / len(timed)
  return {"client_s_per_round": client, "server_s_per_round": server,
          "server_to_client_time": server / client if client > 0 else None,
          "timed_rounds": [r["round"] for r in timed]}


class _Setup(NamedTuple):
  """What a run and a re-evaluation share: simulation, evaluator, initial params."""
  sim: Simulation | StreamedSimulation
  evaluator: Evaluator
  params: Any
  train_ids: np.ndarray
  new_ids: np.ndarray
  conv_impl: str
  aug_summary: dict | None
  noise_multiplier: float | None  # client-level DP's (None: no DP)
  members: tuple[np.ndarray, np.ndarray]     # a sample of the training clients' examples
  nonmembers: tuple[np.ndarray, np.ndarray]  # as many of the global test set
  label_counts: np.ndarray
  class_names: Sequence[str]
  alg_fn: Callable[..., FederatedAlgorithm]  # the algorithm again, with traced hparams


AlgorithmArg = FederatedAlgorithm | Callable[..., FederatedAlgorithm] | None


def _dataset(dataset: Dataset | None) -> data_lib.Dataset | None:
  if dataset is None or isinstance(dataset, data_lib.Dataset):
    return dataset
  if not isinstance(dataset, (tuple, list)) or len(dataset) != 4:
    raise ValueError("dataset= takes a (x_train, y_train, x_test, y_test) tuple of NumPy "
                     f"arrays, got {type(dataset).__name__}.")
  return data_lib.from_arrays(*dataset)


def describe_custom(model: nn.Module | None, dataset: data_lib.Dataset | None,
                    algorithm: AlgorithmArg) -> dict:
  """What a run records of the objects passed in place of the config's names: the model's
  class and fields, the dataset's shapes and a digest of its arrays, the algorithm's
  functions. Part of the run's identity: a resume must pass the same."""
  out = {}
  if model is not None:
    out["model"] = repr(model)
  if dataset is not None:
    digest = hashlib.sha256()
    for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
      digest.update(np.ascontiguousarray(a).tobytes())
    out["dataset"] = {"train": list(dataset.x_train.shape), "test": list(dataset.x_test.shape),
                      "num_classes": dataset.num_classes, "sha256": digest.hexdigest()[:16]}
  if algorithm is not None:
    fn = algorithm.client_step if isinstance(algorithm, FederatedAlgorithm) else algorithm
    out["algorithm"] = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"
  return out


def _setup(config: ml_collections.ConfigDict, workdir: str, *,
           model: nn.Module | None = None, dataset: data_lib.Dataset | None = None,
           algorithm: AlgorithmArg = None) -> _Setup:
  """Data (with a generative algorithm's synthetic part, cached in `workdir`), model,
  algorithm, simulation and evaluator of `config`; no training. `model`, `dataset`,
  `algorithm` replace what the config names."""
  r = config.run
  sharding = _client_sharding(r.num_devices, config.num_clients)
  generative = config.algorithm in generation.GENERATIVE and algorithm is None
  fed = load_federated_data(config, dataset, choose_layout=functools.partial(
      layout_lib.choose, config, generative=generative,
      num_devices=1 if sharding is None else sharding.mesh.size))
  streamed = isinstance(fed.train, data_lib.PopulationStore)
  if config.data.show_label_counts:  # stderr: stdout carries only the summary
    print(data_lib.format_label_counts(fed.label_counts, fed.class_names), file=sys.stderr)
  aug = aug_summary = None
  if generative:
    aug, aug_summary = generation.prepare(config, fed, workdir)  # generator checked first
    fed = aug.fed

  example_shape = tuple(fed.train.example_shape if streamed else fed.train.x.shape[2:])
  build = model if model is not None else (
      lambda impl: models.get_model(config.model, num_classes=fed.num_classes,
                                    input_shape=example_shape, conv_impl=impl))
  choice = plan_lib.choose(build, example_shape, clients_per_round=config.clients_per_round,
                           conv_impl=r.conv_impl, chunk_size=r.chunk_size,
                           steps_per_call=0 if streamed else r.steps_per_call)
  net = choice.model
  apply_fn = lambda params, x: net.apply({"params": params}, x)
  params = models.init_params(net, example_shape, jax.random.key(config.seed))
  loss_fn = masked_cross_entropy(apply_fn)
  def alg_fn(hparams=None):  # `hparams`: traced values of float keys (engine.runs)
    return build_algorithm(config, loss_fn, params, algorithm, aug, fed.num_classes,
                           hparams or {})

  alg = alg_fn()
  schedule = LocalSchedule(config.batch_size, config.local_epochs, config.local_steps)
  train_ids, new_ids = split_holdout(config)
  alg, noise = make_private(config, alg, population=len(train_ids))
  sim = (StreamedSimulation if streamed else Simulation)(
      alg, fed.train, schedule, clients_per_round=config.clients_per_round, plan=choice.plan,
      sharding=sharding, train_ids=train_ids, time_split=alg.server_post is not None)
  evaluator = Evaluator(apply_fn, fed.global_test_x, fed.global_test_y, fed.test.x,
                        fed.test.y, fed.test.count, batch_size=r.eval_batch_size)
  members = sample_members(fed.train, train_ids, AUDIT_EXAMPLES, config.seed)
  nonmembers = (fed.global_test_x[:AUDIT_EXAMPLES], fed.global_test_y[:AUDIT_EXAMPLES])
  return _Setup(sim, evaluator, params, train_ids, new_ids, choice.conv_impl, aug_summary,
                noise, members, nonmembers, fed.label_counts, fed.class_names, alg_fn)


def build_algorithm(config: ml_collections.ConfigDict, loss_fn, params,
                    algorithm: AlgorithmArg, aug, num_classes: int,
                    hparams: dict) -> FederatedAlgorithm:
  """The run's algorithm: `algorithm` when passed, else the config's. `hparams` replaces
  float keys (`lr`, `momentum`, `fl.*`, `personalized.*`) by traced values, so runs that
  differ only in them share one jitted round (`engine.runs`)."""
  if isinstance(algorithm, FederatedAlgorithm):
    return algorithm
  if algorithm is not None:  # a factory: (loss_fn, params) -> FederatedAlgorithm
    return algorithm(loss_fn, params)
  if config.algorithm in ("genfl", "aigc_only"):
    return generation.make_generative_algorithm(config, loss_fn, aug, num_classes)
  family = lambda name: {**config[name].to_dict(),
                         **{k.partition(".")[2]: v for k, v in hparams.items()
                            if k.startswith(name + ".")}}
  return make_algorithm(
      generation.fl_algorithm_name(config), loss_fn, lr=hparams.get("lr", config.lr),
      momentum=hparams.get("momentum", config.momentum), num_clients=config.num_clients,
      params=params, fl=family("fl"), personalized=family("personalized"),
      pfedgpa_options=(pfedgpa.options_from_config(config)
                       if config.algorithm == "pfedgpa" else None),
      clients_per_round=config.clients_per_round)


AUDIT_EXAMPLES = 2000  # members and non-members each, in a run's membership audit


def sample_members(train: data_lib.ClientArrays | data_lib.PopulationStore, ids: np.ndarray,
                   n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Up to `n` of the clients `ids`' training examples, drawn without replacement (seeded):
  the members of a membership-inference audit, gathered without copying the population
  (the same examples from padded arrays and from a store)."""
  store = isinstance(train, data_lib.PopulationStore)
  counts = (train.sizes if store else np.asarray(train.count))[ids]
  offsets = np.concatenate([[0], np.cumsum(counts)])
  pick = np.sort(np.random.default_rng([seed, 4]).choice(
      offsets[-1], min(n, int(offsets[-1])), replace=False))
  client = np.searchsorted(offsets, pick, side="right") - 1
  rows, cols = ids[client], pick - offsets[client]
  if store:
    return train.examples(rows, cols)
  return np.asarray(train.x[rows, cols]), np.asarray(train.y[rows, cols])


def make_private(config: ml_collections.ConfigDict, alg: FederatedAlgorithm, *,
                 population: int) -> tuple[FederatedAlgorithm, float | None]:
  """`alg` with client-level DP when `config.dp.enabled` (its noise multiplier calibrated to
  `dp.target_epsilon` over `rounds` rounds of `clients_per_round` out of `population`, when
  given), and the noise multiplier; else `(alg, None)`."""
  d = config.dp
  if not d.enabled:
    return alg, None
  noise = (accounting.calibrate(d.target_epsilon, population, config.clients_per_round,
                                config.rounds, d.delta)
           if d.target_epsilon > 0 else d.noise_multiplier)
  key = jax.random.fold_in(jax.random.key(config.seed), 2**31 - 2)  # apart from rounds'
  return dp.dp_aggregate(alg, clip_norm=d.clip_norm, noise_multiplier=noise, key=key), noise


def privacy_summary(config: ml_collections.ConfigDict, noise: float | None,
                    population: int) -> dict:
  """The summary's `privacy` entry (empty without DP)."""
  if noise is None:
    return {}
  return {"privacy": accounting.summary(noise, config.dp.clip_norm, population,
                                        config.clients_per_round, config.rounds,
                                        config.dp.delta)}


def _eval_key(config, round_: int) -> jax.Array:
  """The key of the evaluation after round `round_` (its newcomers' and fine-tunes' batches)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1), round_)


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a `fedjax-gen run` saved in `workdir`, over this version's defaults."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir!r} holds no run (no config.json); pass the --workdir "
                            "of a `fedjax-gen run`.")
  with open(path) as f:
    saved = json.load(f)
  if "custom" in saved:
    raise ValueError(f"{workdir!r} holds a run of a model, dataset or algorithm passed to "
                     f"train_and_evaluate ({', '.join(saved['custom'])}); re-evaluate it "
                     "from Python with the same objects.")
  return options.from_saved(saved)


def restore_run(config: ml_collections.ConfigDict, workdir: str):
  """`(setup, server, client_states, round)`: the run in `workdir` built under `config`
  and restored from its newest readable checkpoint (a ValueError if it has none yet).
  Writes nothing."""
  if not saved_rounds(workdir):
    raise ValueError(f"{workdir!r} has no checkpoint yet; let the run save one first.")
  s = _setup(config, workdir)
  ckpt = Checkpointer(workdir)
  try:
    server, client_states = s.sim.init(s.params)
    server, client_states, _, last = ckpt.restore(
        server, client_states, set_aside=False,
        saved_shapes=isinstance(s.sim, StreamedSimulation))
  finally:
    ckpt.close()
  return s, server, client_states, last


def evaluate_checkpoint(workdir: str, overrides: Sequence[str] = ()) -> dict:
  """Evaluates the last checkpoint of the run in `workdir` again, under its own config with
  `overrides` of evaluation-only keys (role "eval" or "free": how many fine-tune and
  newcomer steps, pFedGPA's newcomer guidance). Unchanged, it reproduces the run's
  evaluation of that round exactly (the final round is always both saved and evaluated).
  Writes nothing."""
  run_config = read_run_config(workdir)
  if run_config.task != "classify":
    raise ValueError(f"`eval` re-evaluates classifier runs; {workdir!r} holds a "
                     f"{run_config.task!r} run.")
  config = options.apply_overrides(run_config, list(overrides))
  known = options.all_options()
  for item in overrides:
    key = options.RENAMED.get(item.split("=", 1)[0].strip(), item.split("=", 1)[0].strip())
    if key in known and not options.applies(known[key], config.algorithm):
      print(f"fedjax-gen: warning: {key} does not apply to this run's algorithm "
            f"({config.algorithm}); it changes nothing.", file=sys.stderr)
  not_eval = options.changed(json.loads(run_config.to_json()), json.loads(config.to_json()),
                             allowed=("eval", "free"))
  if not_eval:
    evals = [k for k, o in options.all_options().items() if o.role == "eval"]
    raise ValueError(f"{', '.join(not_eval)} change(s) training, not only evaluation; "
                     f"`eval` takes {', '.join(evals)} (and run.*). Start a new run for the "
                     "others.")
  options.validate(config)
  s, server, client_states, last = restore_run(config, workdir)
  metrics = evaluate(config, s.sim, s.evaluator, server, client_states, s.train_ids,
                     s.new_ids, _eval_key(config, last))
  return {"round": last, "overrides": list(overrides),
          **{k: float(v) for k, v in metrics.items()}}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       model: nn.Module | None = None, dataset: Dataset | None = None,
                       algorithm: AlgorithmArg = None) -> dict:
  """Runs (or resumes) the federated experiment `config` in `workdir`; returns the summary.

  Bring your own:
    model: a `flax.linen.Module` mapping `[B, *example_shape]` to `[B, num_classes]` logits
      (used as it is: no convolution choice is made for it).
    dataset: `(x_train, y_train, x_test, y_test)` NumPy arrays, integer labels; the
      config's partitioner splits the training part across clients.
    algorithm: a `FederatedAlgorithm`, or a function `(loss_fn, params) ->
      FederatedAlgorithm` that builds one for this model.
  They replace what the config names; `config.json` and the summary record them.
  """
  # --- checks, data, model and algorithm: everything that can fail does so before training
  options.validate(config, custom_model=model is not None,
                   custom_dataset=dataset is not None, custom_algorithm=algorithm is not None)
  dataset = _dataset(dataset)
  custom = describe_custom(model, dataset, algorithm)
  with open_run(config, workdir, custom=custom) as run:
    s = _setup(config, workdir, model=model, dataset=dataset, algorithm=algorithm)
    run.commit()  # the folder now belongs to this config
    data_lib.save_label_heatmap(s.label_counts, os.path.join(workdir, "label_counts.png"),
                                class_names=s.class_names,
                                title=f"{config.dataset} {config.partition}")
    return _train(config, run, s, custom)


class Member(NamedTuple):
  """One run of a round loop: its config, held folder, setup and custom objects."""
  config: ml_collections.ConfigDict
  run: Run
  setup: _Setup
  custom: dict


def _train(config: ml_collections.ConfigDict, run: Run, s: _Setup, custom: dict) -> dict:
  return train_members([Member(config, run, s, custom)])[0]


def _restore(members: Sequence[Member], ckpts: Sequence[Checkpointer]):
  """Every run's `(server, client_states)`, elapsed seconds and the round they all resume
  from: the oldest newest checkpoint among them (runs saved together; a kill between their
  saves leaves one a save ahead, and it recomputes that stretch, identically)."""
  states = [m.setup.sim.init(m.setup.params) for m in members]
  elapsed = [0.0] * len(members)
  start = min(c.latest_round() for c in ckpts)
  while True:
    rounds = []
    for i, (m, c) in enumerate(zip(members, ckpts)):
      if not start:
        rounds.append(0)
        continue
      server, clients, elapsed[i], got = c.restore(  # states[i]: the structure to read
          *states[i], at_most=start,
          saved_shapes=isinstance(m.setup.sim, StreamedSimulation))
      states[i] = (server, clients)
      rounds.append(got)
    if min(rounds) == start:
      for c in ckpts:
        c.discard_after(start)
      return states, elapsed, start
    start = min(rounds)  # one fell back past an unreadable checkpoint: all go back with it


def train_members(members: Sequence[Member], stacked=None) -> list[dict]:
  """The round loop of `train_and_evaluate` for one run, or for several advanced together
  by one `engine.runs.StackedRuns` round (`stacked`; their configs differ only in what it
  traces): resumed from their checkpoints, each run logged, evaluated, checkpointed and
  summarized in its own folder exactly as if alone. Returns the summaries."""
  head = members[0].config
  ckpts = [Checkpointer(m.run.workdir) for m in members]
  states, elapsed, start = _restore(members, ckpts)
  logs = [MetricsLog(os.path.join(m.run.workdir, "metrics.jsonl"), keep_through_round=start)
          for m in members]
  ledgers = [None if m.setup.noise_multiplier is None else accounting.Ledger(
      m.setup.noise_multiplier, len(m.setup.train_ids), m.config.clients_per_round,
      m.config.dp.delta) for m in members]
  keys = [jax.random.key(m.config.seed) for m in members]  # round r: fold_in(key, r)
  if stacked is None:
    (server, client_states), = states
    sim = members[0].setup.sim
    key_at = functools.lru_cache(maxsize=2)(lambda r: jax.random.fold_in(keys[0], r))
    step = lambda server, cs, r: sim.round(  # the next key: a store prefetches its clients
        server, cs, key_at(r), next_key=key_at(r + 1) if r < head.rounds else None)
    view = lambda tree, i: tree
  else:
    server, client_states = stacked.init(states)
    keys_stacked = jnp.stack(keys)
    step = lambda server, cs, r: stacked.round(server, cs, keys_stacked, r)
    view = runs_lib.take
  del states

  pending, t_last = [], time.perf_counter()
  name = head.experiment if "experiment" in head else "run"
  bar = tqdm(range(start + 1, head.rounds + 1), initial=start, total=head.rounds,
             desc=name if len(members) == 1 else f"{name} x{len(members)}",
             disable=not head.progress, unit="round")
  with contextlib.ExitStack() as guards:
    for m in members[1:]:  # one Ctrl-C stops them all (open_run's handler is the last's)
      m.run.signals = members[0].run.signals
    stops = [guards.enter_context(training(m.run, c)) for m, c in zip(members, ckpts)]
    guards.enter_context(bar)
    for log in logs:
      guards.enter_context(contextlib.closing(log))
    for r in bar:
      server, client_states, round_metrics = step(server, client_states, r)
      extra = dict(members[0].setup.sim.last_timing or {})  # pFedGPA: server vs clients seconds, DDPM loss
      if hasattr(server, "diffusion_loss"):
        extra["diffusion_loss"] = server.diffusion_loss
      pending.append((r, round_metrics.train_loss, extra))
      stop = stops[0]()
      is_eval = r % head.eval_every == 0 or r == head.rounds
      is_ckpt = (r == head.rounds or stop
                 or (head.checkpoint_every and r % head.checkpoint_every == 0))
      if not (is_eval or is_ckpt):
        continue
      losses, extras = jax.device_get(([loss for _, loss, _ in pending],  # syncs: rounds done
                                       [e for _, _, e in pending]))
      now = time.perf_counter()
      clients_per_s = len(pending) * head.clients_per_round / (now - t_last)
      for i, (m, log, ckpt, ledger) in enumerate(zip(members, logs, ckpts, ledgers)):
        elapsed[i] += now - t_last
        shown = _log_rows(m, log, ckpt, ledger, pending, [view(x, i) for x in losses],
                          [{k: view(v, i) for k, v in e.items()} for e in extras], r,
                          is_eval, clients_per_s, elapsed[i],
                          lambda: (view(server, i), view(client_states, i)))
        if shown and i == 0:
          bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items() if v is not None},
                          clients_s=f"{clients_per_s * len(members):.1f}")
        if is_ckpt:
          ckpt.save(r, view(server, i), view(client_states, i), elapsed[i])
      if stop:
        for ckpt in ckpts:
          ckpt.wait()
        raise Interrupted(members[0].run.workdir, r, stop)
      pending, t_last = [], time.perf_counter()

  return [_summarize(m, log, view(server, i)) for i, (m, log) in enumerate(zip(members, logs))]


def _log_rows(m: Member, log: MetricsLog, ckpt: Checkpointer, ledger, pending, losses,
              extras, r: int, is_eval: bool, clients_per_s: float, elapsed: float,
              state: Callable[[], tuple]) -> dict | None:
  """One run's rows for the rounds `pending` since the last log point (evaluated at `r`
  when `is_eval`, from `state()`); the accuracies shown in the progress bar, if any."""
  shown = None
  for (rr, _, _), loss, extra in zip(pending, losses, extras):
    if not np.isfinite(loss):
      raise loss_not_finite("Training loss", loss, rr, ckpt,
                            "Try a smaller lr or check the data.")
    row = {"round": rr, "train_loss": float(loss),
           **{k: float(v) for k, v in extra.items()},
           **({"epsilon": ledger.epsilon(rr)} if ledger else {})}
    if rr == r:
      row.update(clients_per_s=clients_per_s, elapsed_s=elapsed)
      if is_eval:
        s = m.setup
        server, client_states = state()
        row.update(evaluate(m.config, s.sim, s.evaluator, server, client_states, s.train_ids,
                            s.new_ids, _eval_key(m.config, r)))
        shown = {"acc": row["global_accuracy"], "pacc": row.get("personalized_accuracy")}
    log.append(row)
  return shown


def _summarize(m: Member, log: MetricsLog, server) -> dict:
  """The summary and plots of a finished run."""
  config, s, workdir = m.config, m.setup, m.run.workdir
  final = {k: log.last(k) for k in ("global_accuracy", "global_loss", "personalized_accuracy",
                                    "personalized_std", "personalized_worst10",
                                    "new_client_accuracy")}
  # A loss-threshold membership attack on the final global model: its training clients'
  # examples against the test set (Yeom et al. 2018).
  audit = privacy.audit_classifier(s.evaluator.apply_fn, server.params, *s.members,
                                   *s.nonmembers, seed=config.seed)
  summary = {"experiment": config.get("experiment", "run"), "algorithm": config.algorithm,
             **({"custom": m.custom} if m.custom else {}),
             **final, "rounds": config.rounds, "wall_time_s": log.last("elapsed_s"),
             "plan": vars(s.sim.plan), "conv_impl": s.conv_impl,
             "backend": jax.default_backend(), **(s.aug_summary or {}),
             **privacy_summary(config, s.noise_multiplier, len(s.train_ids)),
             "audit": {"membership": audit},
             **_time_split(log.rows)}
  write_json(os.path.join(workdir, "summary.json"), summary)
  plot_accuracy(log.rows, os.path.join(workdir, "accuracy.png"), title=_plot_title(config))
  return summary


def _plot_title(config: ml_collections.ConfigDict) -> str:
  """`fedavg on fashion_mnist, dirichlet(alpha=0.5), 10 of 100 clients per round`."""
  split = {"dirichlet": f"alpha={config.alpha:g}", "quantity": f"alpha={config.alpha:g}",
           "label_k": f"k={config.classes_per_client}",
           "pathological": f"k={config.classes_per_client}",
           "shards": f"{config.data.shards_per_client} shards"}.get(config.partition)
  return (f"{config.algorithm} on {config.dataset}, {config.partition}"
          f"{f'({split})' if split else ''}, {config.clients_per_round} of "
          f"{config.num_clients} clients per round")
