"""`train_and_evaluate(config, workdir)`: the one trainer, read top to bottom.

Sections: checks -> data -> model and algorithm -> resume -> round loop -> summary.
New research forks this file rather than adding hooks to it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from fedjax_gen import config as config_lib
from fedjax_gen import data as data_lib
from fedjax_gen import genaug
from fedjax_gen import models
from fedjax_gen import pfedgpa
from fedjax_gen.algorithms import make_algorithm
from fedjax_gen.checkpoint import Checkpointer
from fedjax_gen.engine import (Evaluator, ExecutionPlan, LocalSchedule, Simulation,
                               auto_plan, masked_cross_entropy, personalized_summary,
                               uses_conv)
from fedjax_gen.outputs import MetricsLog, atomic_write, plot_accuracy, write_json

# Hyperparameters passed to `make_algorithm` as they are.
_ALGORITHM_KEYS = ("fedrep_head_fraction", "ditto_lambda", "apfl_alpha", "apfl_alpha_lr",
                   "pfedme_lambda", "pfedme_inner_steps", "pfedme_personal_lr",
                   "perfedavg_alpha", "perfedavg_beta")

# Keys that do not change what a run computes: a work folder may be resumed with others.
_RESUMABLE_KEYS = ("rounds", "checkpoint_every", "progress", "show_label_counts",
                   "chunk_size", "steps_per_call", "eval_batch_size", "conv_impl")

# Keys that change only how a trained run is evaluated (`evaluate_checkpoint`, `fedjax-gen
# eval`): local steps before evaluation and pFedGPA's newcomer recipe.
EVAL_KEYS = ("finetune_steps", "newcomer_steps", "eval_batch_size", "pfedgpa_omega",
             "pfedgpa_init_rounds", "pfedgpa_guidance")


def _matters(key: str, algorithm: str) -> bool:
  """Whether a changed `key` makes a resumed run compute something else. An algorithm's own
  hyperparameter (`_ALGORITHM_KEYS`, named after it: "apfl_alpha") does not matter to the
  other algorithms ("perfedavg_hf" reads "perfedavg_alpha")."""
  if key in _ALGORITHM_KEYS:
    return key.split("_")[0] == algorithm.split("_")[0]
  return key not in _RESUMABLE_KEYS


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str, *,
                    resumable: tuple[str, ...] = ()) -> None:
  """Creates the work folder, checks it is writable and was made by this config (up to
  `_RESUMABLE_KEYS` and the caller's own `resumable` keys)."""
  try:
    os.makedirs(workdir, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=workdir, prefix=".write-test-")  # one per process
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f"Work folder {workdir!r} is not writable ({e.strerror}); pass "
                          "--workdir pointing to a folder you can write.") from None
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    added = json.loads(config_lib.base_config().to_json())  # keys added since: defaults
    diff = sorted(k for k in set(saved) | set(current) if _matters(k, current["algorithm"])
                  and k not in resumable and saved.get(k, added.get(k)) != current.get(k))
    if diff:
      changes = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" if k in current
                          else f"{k}={saved[k]!r}, a key this version no longer has"
                          for k in diff)
      raise ValueError(f"Work folder {workdir!r} holds a run of a different config "
                       f"({changes}). Use a new --workdir, or delete this one to start over.")
  atomic_write(path, json.dumps(current, indent=2, sort_keys=True) + "\n")


def load_federated_data(config: ml_collections.ConfigDict) -> data_lib.FederatedData:
  dataset = data_lib.load_dataset(config.dataset, data_dir=config.data_dir or None,
                                  source=config.data_source)
  return data_lib.make_federated_data(
      dataset, num_clients=config.num_clients, partition=config.partition, seed=config.seed,
      alpha=config.alpha, classes_per_client=config.classes_per_client,
      shards_per_client=config.shards_per_client, min_size=config.min_client_size,
      test_fraction=config.test_fraction)


def _plan(config, has_conv: bool) -> ExecutionPlan:
  auto = auto_plan(config.clients_per_round, has_conv=has_conv)
  return ExecutionPlan(config.chunk_size or auto.chunk_size,
                       auto.steps_per_call if config.steps_per_call < 0 else config.steps_per_call)


def _client_sharding(num_devices: int, num_clients: int):
  devices = jax.devices()[: num_devices or None]
  if len(devices) <= 1:
    return None
  if num_clients % len(devices):
    raise ValueError(f"num_clients={num_clients} is not divisible by the {len(devices)} "
                     "devices the client axis is sharded over; change num_clients or "
                     "num_devices.")
  mesh = jax.sharding.Mesh(np.array(devices), ("clients",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("clients"))


def split_holdout(config) -> tuple[np.ndarray, np.ndarray]:
  """(training clients, held-out newcomers): a seeded choice of `holdout_clients`."""
  perm = np.random.default_rng([config.seed, 2]).permutation(config.num_clients)
  held = np.sort(perm[: config_lib.num_holdout(config.num_clients, config.holdout_clients)])
  return np.setdiff1d(np.arange(config.num_clients), held), held


def evaluate(config, sim: Simulation, evaluator: Evaluator, server, client_states,
             train_ids, new_ids, key) -> dict:
  """Global accuracy; each training client's personalized accuracy (after the algorithm's
  `personalize` steps, with its `eval_params`, or with the global model); newcomers'
  accuracy after their `newcomer` recipe."""
  alg = sim.alg
  metrics = evaluator.global_metrics(server.params)
  if config.test_fraction == 0:
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
      accuracies(train_ids, alg.personalize, config.finetune_steps, client_states)))
  if len(new_ids):
    fresh = jax.tree.map(lambda a: jnp.broadcast_to(a, (config.num_clients, *a.shape)),
                         alg.client_state_init(server.params))
    metrics.update(personalized_summary(
        accuracies(new_ids, alg.newcomer, config.newcomer_steps, fresh), prefix="new_client"))
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


def _setup(config: ml_collections.ConfigDict, workdir: str, *, heatmap: bool = False
           ) -> _Setup:
  """Data (with a generative algorithm's synthetic part, cached in `workdir`), model,
  algorithm, simulation and evaluator of `config`; no training. `heatmap`: save the
  clients' label counts as `workdir/label_counts.png`."""
  fed = load_federated_data(config)
  if config.show_label_counts:
    print(data_lib.format_label_counts(fed.label_counts, fed.class_names))
  if heatmap:
    data_lib.save_label_heatmap(fed.label_counts, os.path.join(workdir, "label_counts.png"),
                                class_names=fed.class_names,
                                title=f"{config.dataset} {config.partition}")
  aug = aug_summary = None
  if config.algorithm in genaug.GENERATIVE:  # generator checked against the data, then run
    aug, aug_summary = genaug.prepare(config, fed, workdir)
    fed = aug.fed

  example_shape = fed.train.x.shape[2:]
  conv_impl = config.conv_impl
  if conv_impl == "auto" and config.steps_per_call == 0:  # a forced fused (scanned) round
    conv_impl = models.resolve_conv_impl("auto", scanned=True)
  model = models.get_model(config.model, num_classes=fed.num_classes,
                           input_shape=example_shape, conv_impl=conv_impl)
  conv_impl = getattr(model, "conv_impl", "none")  # "auto" resolved for this model
  apply_fn = lambda params, x: model.apply({"params": params}, x)
  params = models.init_params(model, example_shape, jax.random.key(config.seed))
  if config.algorithm in ("genfl", "aigc_only"):
    alg = genaug.make_generative_algorithm(config, masked_cross_entropy(apply_fn), aug,
                                           fed.num_classes)
  else:
    alg = make_algorithm(
        genaug.fl_algorithm_name(config), masked_cross_entropy(apply_fn), lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay, num_clients=config.num_clients,
        server_optimizer_name=config.server_optimizer, server_lr=config.server_lr or None,
        server_momentum=config.server_momentum, prox_mu=config.prox_mu, params=params,
        personal_layers=[n.strip() for n in config.personal_layers.split(",") if n.strip()],
        **{k: config[k] for k in _ALGORITHM_KEYS},
        pfedgpa_options=(pfedgpa.options_from_config(config)
                         if config.algorithm == "pfedgpa" else None),
        clients_per_round=config.clients_per_round)
  schedule = LocalSchedule(config.batch_size, config.local_epochs, config.local_steps)
  train_ids, new_ids = split_holdout(config)
  sim = Simulation(alg, fed.train, schedule, clients_per_round=config.clients_per_round,
                   plan=_plan(config, uses_conv(apply_fn, params, example_shape)),
                   sharding=_client_sharding(config.num_devices, config.num_clients),
                   train_ids=train_ids, time_split=alg.server_post is not None)
  evaluator = Evaluator(apply_fn, fed.global_test_x, fed.global_test_y, fed.test.x,
                        fed.test.y, fed.test.count, batch_size=config.eval_batch_size)
  return _Setup(sim, evaluator, params, train_ids, new_ids, conv_impl, aug_summary)


def _eval_key(config, round_: int) -> jax.Array:
  """The key of the evaluation after round `round_` (its newcomers' and fine-tunes' batches)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1), round_)


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a `fedjax-gen run` saved in `workdir`, over this version's defaults."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir!r} holds no run (no config.json); pass the --workdir "
                            "of a `fedjax-gen run`.")
  config = config_lib.base_config()
  with open(path) as f:
    config.update(json.load(f))
  return config


def restore_run(config: ml_collections.ConfigDict, workdir: str):
  """`(setup, server, client_states, round)`: the run in `workdir` built under `config`
  and restored from its last checkpoint (a ValueError if it has none yet)."""
  ckpt = Checkpointer(workdir)
  try:
    last = ckpt.latest_round()
    if not last:
      raise ValueError(f"{workdir!r} has no checkpoint yet; let the run save one first.")
    s = _setup(config, workdir)
    server, client_states = s.sim.init(s.params)
    server, client_states, _ = ckpt.restore(server, client_states)
  finally:
    ckpt.close()
  return s, server, client_states, last


def evaluate_checkpoint(workdir: str, overrides: Sequence[str] = ()) -> dict:
  """Evaluates the last checkpoint of the run in `workdir` again, under its own config with
  `overrides` of evaluation-only keys (`EVAL_KEYS`: how many fine-tune and newcomer steps,
  pFedGPA's newcomer guidance). Unchanged, it reproduces the run's evaluation of that round
  exactly (the final round is always both saved and evaluated). Writes nothing."""
  run_config = read_run_config(workdir)
  if run_config.get("task", "classify") != "classify":
    raise ValueError(f"`eval` re-evaluates classifier runs; {workdir!r} holds a "
                     f"{run_config.task!r} run.")
  config = config_lib.apply_overrides(run_config, list(overrides))
  not_eval = [k for k in config if k not in EVAL_KEYS and config[k] != run_config[k]]
  if not_eval:
    raise ValueError(f"{', '.join(not_eval)} change(s) training, not only evaluation; "
                     f"`eval` takes {', '.join(EVAL_KEYS)}. Start a new run for the others.")
  config_lib.validate(config)
  s, server, client_states, last = restore_run(config, workdir)
  metrics = evaluate(config, s.sim, s.evaluator, server, client_states, s.train_ids,
                     s.new_ids, _eval_key(config, last))
  return {"round": last, "overrides": list(overrides),
          **{k: float(v) for k, v in metrics.items()}}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) the federated experiment `config` in `workdir`; returns the summary."""
  # --- checks, data, model and algorithm: everything that can fail does so before training
  config_lib.validate(config)
  prepare_workdir(config, workdir)
  s = _setup(config, workdir, heatmap=True)
  sim, evaluator, train_ids, new_ids = s.sim, s.evaluator, s.train_ids, s.new_ids
  server, client_states = sim.init(s.params)

  # --- resume ----------------------------------------------------------------------------
  ckpt = Checkpointer(workdir)
  start = ckpt.latest_round()
  elapsed = 0.0
  if start:
    server, client_states, elapsed = ckpt.restore(server, client_states)
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), keep_through_round=start)

  # --- round loop: metrics stay on device until a log point ---------------------------
  key = jax.random.key(config.seed)  # round r uses fold_in(key, r)
  pending, t_last = [], time.perf_counter()
  bar = tqdm(range(start + 1, config.rounds + 1), initial=start, total=config.rounds,
             desc=config.experiment if "experiment" in config else "run",
             disable=not config.progress, unit="round")
  for r in bar:
    server, client_states, round_metrics = sim.round(server, client_states,
                                                     jax.random.fold_in(key, r))
    extra = dict(sim.last_timing or {})  # pFedGPA: server vs clients seconds, DDPM loss
    if hasattr(server, "diffusion_loss"):
      extra["diffusion_loss"] = server.diffusion_loss
    pending.append((r, round_metrics.train_loss, extra))
    is_eval = r % config.eval_every == 0 or r == config.rounds
    is_ckpt = r == config.rounds or (config.checkpoint_every and r % config.checkpoint_every == 0)
    if not (is_eval or is_ckpt):
      continue
    losses, extras = jax.device_get(([loss for _, loss, _ in pending],  # syncs: rounds done
                                     [e for _, _, e in pending]))
    now = time.perf_counter()
    elapsed += now - t_last
    clients_per_s = len(pending) * config.clients_per_round / (now - t_last)
    for (rr, _, _), loss, extra in zip(pending, losses, extras):
      if not np.isfinite(loss):
        raise FloatingPointError(
            f"Training loss became {loss} at round {rr}; stopped. The last checkpoint (round "
            f"{ckpt.latest_round()}) is intact. Try a smaller lr or check the data.")
      row = {"round": rr, "train_loss": float(loss), **{k: float(v) for k, v in extra.items()}}
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
    pending, t_last = [], time.perf_counter()
  ckpt.close()

  # --- summary -------------------------------------------------------------------------
  final = {k: log.last(k) for k in ("global_accuracy", "global_loss", "personalized_accuracy",
                                    "personalized_std", "personalized_worst10",
                                    "new_client_accuracy")}
  summary = {"experiment": config.get("experiment", "run"), "algorithm": config.algorithm,
             **final, "rounds": config.rounds, "wall_time_s": log.last("elapsed_s"),
             "plan": vars(sim.plan), "conv_impl": s.conv_impl,
             "backend": jax.default_backend(), **(s.aug_summary or {}),
             **_time_split(log.rows)}
  write_json(os.path.join(workdir, "summary.json"), summary)
  plot_accuracy(log.rows, os.path.join(workdir, "accuracy.png"),
                title=f"{config.algorithm} on {config.dataset} ({config.partition})")
  return summary
