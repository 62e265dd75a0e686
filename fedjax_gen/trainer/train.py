"""`train_and_evaluate(config, workdir)`: the trainer, read top to bottom.

Sections: checks -> data -> model and algorithm -> resume -> round loop -> summary.
Bring your own model, dataset or algorithm by passing them (`model=`, `dataset=`,
`algorithm=`): they replace what the config names, and the run records it.
"""

from __future__ import annotations

import contextlib
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
from fedjax_gen.engine import (Evaluator, LocalSchedule, Simulation, masked_cross_entropy,
                               personalized_summary)
from fedjax_gen.outputs import MetricsLog, plot_accuracy, write_json
from fedjax_gen.privacy import accounting, dp
from fedjax_gen.trainer import generation, options
from fedjax_gen.trainer import plan as plan_lib
from fedjax_gen.trainer.checkpoint import Checkpointer, saved_rounds
from fedjax_gen.trainer.workdir import Interrupted, Run, loss_not_finite, open_run, training
from fedjax_gen.types import FederatedAlgorithm

Dataset = tuple  # (x_train, y_train, x_test, y_test) NumPy arrays, integer labels


def load_federated_data(config: ml_collections.ConfigDict,
                        dataset: data_lib.Dataset | None = None) -> data_lib.FederatedData:
  """The config's dataset (or `dataset`), partitioned by the config's partitioner."""
  d = config.data
  if dataset is None:
    dataset = data_lib.load_dataset(config.dataset, data_dir=d.dir or None, source=d.source)
  return data_lib.make_federated_data(
      dataset, num_clients=config.num_clients, partition=config.partition, seed=config.seed,
      alpha=config.alpha, classes_per_client=config.classes_per_client,
      shards_per_client=d.shards_per_client, min_client_size=d.min_client_size,
      test_fraction=d.test_fraction)


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
      states = jax.tree.map(lambda a: a[ids], client_states)
      params = jax.vmap(alg.eval_params, in_axes=(None, 0))(server, states)
    else:
      return evaluator.client_accuracies(ids, params=server.params)
    return evaluator.client_accuracies(ids, client_params=params)

  metrics.update(personalized_summary(
      accuracies(train_ids, alg.personalize, config.personalized.finetune_steps,
                 client_states)))
  if len(new_ids):
    fresh = jax.tree.map(lambda a: jnp.broadcast_to(a, (config.num_clients, *a.shape)),
                         alg.client_state_init(server.params))
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
  sim: Simulation
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
  fed = load_federated_data(config, dataset)
  if config.data.show_label_counts:  # stderr: stdout carries only the summary
    print(data_lib.format_label_counts(fed.label_counts, fed.class_names), file=sys.stderr)
  aug = aug_summary = None
  if config.algorithm in generation.GENERATIVE and algorithm is None:
    aug, aug_summary = generation.prepare(config, fed, workdir)  # generator checked first
    fed = aug.fed

  example_shape = tuple(fed.train.x.shape[2:])
  r = config.run
  build = model if model is not None else (
      lambda impl: models.get_model(config.model, num_classes=fed.num_classes,
                                    input_shape=example_shape, conv_impl=impl))
  choice = plan_lib.choose(build, example_shape, clients_per_round=config.clients_per_round,
                           conv_impl=r.conv_impl, chunk_size=r.chunk_size,
                           steps_per_call=r.steps_per_call)
  net = choice.model
  apply_fn = lambda params, x: net.apply({"params": params}, x)
  params = models.init_params(net, example_shape, jax.random.key(config.seed))
  loss_fn = masked_cross_entropy(apply_fn)
  if isinstance(algorithm, FederatedAlgorithm):
    alg = algorithm
  elif algorithm is not None:  # a factory: (loss_fn, params) -> FederatedAlgorithm
    alg = algorithm(loss_fn, params)
  elif config.algorithm in ("genfl", "aigc_only"):
    alg = generation.make_generative_algorithm(config, loss_fn, aug, fed.num_classes)
  else:
    alg = make_algorithm(
        generation.fl_algorithm_name(config), loss_fn, lr=config.lr, momentum=config.momentum,
        num_clients=config.num_clients, params=params, fl=config.fl,
        personalized=config.personalized,
        pfedgpa_options=(pfedgpa.options_from_config(config)
                         if config.algorithm == "pfedgpa" else None),
        clients_per_round=config.clients_per_round)
  schedule = LocalSchedule(config.batch_size, config.local_epochs, config.local_steps)
  train_ids, new_ids = split_holdout(config)
  alg, noise = make_private(config, alg, population=len(train_ids))
  sim = Simulation(alg, fed.train, schedule, clients_per_round=config.clients_per_round,
                   plan=choice.plan,
                   sharding=_client_sharding(r.num_devices, config.num_clients),
                   train_ids=train_ids, time_split=alg.server_post is not None)
  evaluator = Evaluator(apply_fn, fed.global_test_x, fed.global_test_y, fed.test.x,
                        fed.test.y, fed.test.count, batch_size=r.eval_batch_size)
  members = sample_members(fed.train, train_ids, AUDIT_EXAMPLES, config.seed)
  nonmembers = (fed.global_test_x[:AUDIT_EXAMPLES], fed.global_test_y[:AUDIT_EXAMPLES])
  return _Setup(sim, evaluator, params, train_ids, new_ids, choice.conv_impl, aug_summary,
                noise, members, nonmembers, fed.label_counts, fed.class_names)


AUDIT_EXAMPLES = 2000  # members and non-members each, in a run's membership audit


def sample_members(train: data_lib.ClientArrays, ids: np.ndarray, n: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Up to `n` of the clients `ids`' training examples, drawn without replacement (seeded):
  the members of a membership-inference audit, gathered without copying the population."""
  counts = np.asarray(train.count)[ids]
  offsets = np.concatenate([[0], np.cumsum(counts)])
  pick = np.sort(np.random.default_rng([seed, 4]).choice(
      offsets[-1], min(n, int(offsets[-1])), replace=False))
  client = np.searchsorted(offsets, pick, side="right") - 1
  rows, cols = ids[client], pick - offsets[client]
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
    server, client_states, _, last = ckpt.restore(server, client_states, set_aside=False)
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


def _train(config: ml_collections.ConfigDict, run: Run, s: _Setup, custom: dict) -> dict:
  """The round loop of `train_and_evaluate` (resumed from the newest readable checkpoint),
  then the summary and plots."""
  workdir = run.workdir
  sim, evaluator, train_ids, new_ids = s.sim, s.evaluator, s.train_ids, s.new_ids
  server, client_states = sim.init(s.params)

  # --- resume ----------------------------------------------------------------------------
  ckpt = Checkpointer(workdir)
  start, elapsed = 0, 0.0
  if ckpt.latest_round():
    server, client_states, elapsed, start = ckpt.restore(server, client_states)
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), keep_through_round=start)
  ledger = (None if s.noise_multiplier is None else accounting.Ledger(
      s.noise_multiplier, len(train_ids), config.clients_per_round, config.dp.delta))

  # --- round loop: metrics stay on device until a log point ---------------------------
  key = jax.random.key(config.seed)  # round r uses fold_in(key, r)
  pending, t_last = [], time.perf_counter()
  bar = tqdm(range(start + 1, config.rounds + 1), initial=start, total=config.rounds,
             desc=config.experiment if "experiment" in config else "run",
             disable=not config.progress, unit="round")
  with training(run, ckpt) as stop_requested, bar, contextlib.closing(log):
    for r in bar:
      server, client_states, round_metrics = sim.round(server, client_states,
                                                       jax.random.fold_in(key, r))
      extra = dict(sim.last_timing or {})  # pFedGPA: server vs clients seconds, DDPM loss
      if hasattr(server, "diffusion_loss"):
        extra["diffusion_loss"] = server.diffusion_loss
      pending.append((r, round_metrics.train_loss, extra))
      stop = stop_requested()
      is_eval = r % config.eval_every == 0 or r == config.rounds
      is_ckpt = (r == config.rounds or stop
                 or (config.checkpoint_every and r % config.checkpoint_every == 0))
      if not (is_eval or is_ckpt):
        continue
      losses, extras = jax.device_get(([loss for _, loss, _ in pending],  # syncs: rounds done
                                       [e for _, _, e in pending]))
      now = time.perf_counter()
      elapsed += now - t_last
      clients_per_s = len(pending) * config.clients_per_round / (now - t_last)
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
            row.update(evaluate(config, sim, evaluator, server, client_states, train_ids,
                                new_ids, _eval_key(config, r)))
            shown = {"acc": row["global_accuracy"], "pacc": row.get("personalized_accuracy")}
            bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items() if v is not None},
                            clients_s=f"{clients_per_s:.1f}")
        log.append(row)
      if is_ckpt:
        ckpt.save(r, server, client_states, elapsed)
      if stop:
        ckpt.wait()
        raise Interrupted(workdir, r, stop)
      pending, t_last = [], time.perf_counter()

  # --- summary -------------------------------------------------------------------------
  final = {k: log.last(k) for k in ("global_accuracy", "global_loss", "personalized_accuracy",
                                    "personalized_std", "personalized_worst10",
                                    "new_client_accuracy")}
  # A loss-threshold membership attack on the final global model: its training clients'
  # examples against the test set (Yeom et al. 2018).
  audit = privacy.audit_classifier(evaluator.apply_fn, server.params, *s.members,
                                   *s.nonmembers, seed=config.seed)
  summary = {"experiment": config.get("experiment", "run"), "algorithm": config.algorithm,
             **({"custom": custom} if custom else {}),
             **final, "rounds": config.rounds, "wall_time_s": log.last("elapsed_s"),
             "plan": vars(sim.plan), "conv_impl": s.conv_impl,
             "backend": jax.default_backend(), **(s.aug_summary or {}),
             **privacy_summary(config, s.noise_multiplier, len(train_ids)),
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
