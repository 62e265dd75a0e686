"""`train_ddpm(config, workdir)`: a class-conditional image DDPM trained by federated
learning through the fedjax-gen engine (FedAvg over the UNet's parameters, clients vmapped
like any other model; no image leaves a client), or centrally (`central=true`: one client
that holds the whole training set, the same code path).

Sections: checks -> data -> model -> resume -> round loop -> generator, quality, summary.
The run leaves `generator/` (the trained DDPM, EMA weights, see `ddpm.DDPMGenerator.load`),
`samples.png`, `loss.png`, `metrics.jsonl` and `summary.json` in its work folder.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

from fedjax_gen import config as config_lib
from fedjax_gen import data as data_lib
from fedjax_gen.algorithms import fedavg
from fedjax_gen.checkpoint import Checkpointer
from fedjax_gen.diffusion import core, quality
from fedjax_gen.diffusion.ddpm import (DDPMGenerator, DDPMSpec, save_ddpm, training_loss,
                                       unet_conv_impl)
from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation, auto_plan
from fedjax_gen.outputs import MetricsLog, plot_accuracy, write_json


def ddpm_config(**overrides) -> ml_collections.ConfigDict:
  """The keys a DDPM run understands on top of `config.base_config()`."""
  config = config_lib.base_config()
  defaults = dict(
      task="ddpm",
      central=False,            # true: one client holds all training data (a server with data)
      unet_channels="32,64,64", # channels per resolution level (H, W divisible by 2**(n-1))
      unet_res_blocks=1,
      diffusion_steps=1000,
      noise_schedule="linear",  # linear | cosine
      cond_drop_prob=0.1,       # label dropout for classifier-free guidance
      ema_decay=0.8,            # per round: generator weights = EMA of the global model
      sampler="ddim",           # ddim | ddpm
      sample_steps=50,
      guidance_scale=2.0,       # the saved generator's, and the one `cas` is reported at
      eval_guidance_scales="",  # e.g. "1,2,4,8": CAS and Frechet distance at each (guidance.png)
      eval_samples_per_class=100,
      sample_batch_size=250,
      classifier_epochs=2)      # the real-data classifier behind CAS and the Frechet distance
  config.update({**defaults, **overrides})
  return config


def _channels(config) -> tuple[int, ...]:
  try:
    channels = tuple(int(c) for c in str(config.unet_channels).split(","))
  except ValueError:
    raise ValueError(f"unet_channels={config.unet_channels!r}: expected comma-separated "
                     "integers, e.g. 32,64,64.") from None
  if not channels or min(channels) < 1:
    raise ValueError(f"unet_channels={config.unet_channels!r} must list positive integers.")
  return channels


def _guidance_scales(config) -> list[float]:
  try:
    return [float(g) for g in str(config.eval_guidance_scales).split(",") if g.strip()]
  except ValueError:
    raise ValueError(f"eval_guidance_scales={config.eval_guidance_scales!r}: expected "
                     "comma-separated numbers, e.g. 1,2,4,8.") from None


# Keys that only change how the trained DDPM is sampled and judged: a finished run can be
# re-evaluated with others (same `rounds`: no training step runs, the summary is rewritten).
_SAMPLING_KEYS = ("sampler", "sample_steps", "guidance_scale", "eval_guidance_scales",
                  "eval_samples_per_class", "sample_batch_size", "classifier_epochs")


def validate(config) -> DDPMSpec:
  """All cheap checks of a DDPM run; returns the model spec."""
  config_lib.validate(config)
  if config.algorithm != "fedavg":
    raise ValueError(f"A DDPM trains with algorithm=fedavg, got {config.algorithm!r}.")
  if not 0 <= config.cond_drop_prob < 1:
    raise ValueError(f"cond_drop_prob must be in [0, 1), got {config.cond_drop_prob}.")
  if not 0 <= config.ema_decay < 1:
    raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}.")
  for scale in (config.guidance_scale, *_guidance_scales(config)):
    if scale < 0:
      raise ValueError(f"guidance_scale and eval_guidance_scales must be >= 0, got {scale}.")
  if config.sampler not in ("ddim", "ddpm"):
    raise ValueError(f"Unknown sampler {config.sampler!r}; valid: ddim, ddpm.")
  if not 1 <= config.sample_steps <= config.diffusion_steps:
    raise ValueError(f"sample_steps must be in [1, diffusion_steps={config.diffusion_steps}], "
                     f"got {config.sample_steps}.")
  for key in ("eval_samples_per_class", "sample_batch_size", "classifier_epochs",
              "unet_res_blocks"):
    if config[key] < 1:
      raise ValueError(f"{key} must be >= 1, got {config[key]}.")
  if config.noise_schedule not in core.SCHEDULES:
    raise ValueError(f"Unknown noise_schedule {config.noise_schedule!r}; valid: "
                     f"{', '.join(core.SCHEDULES)}.")
  num_classes = config_lib.DATASET_CLASSES[config.dataset]
  size = {"digits": (8, 8, 1)}.get(config.dataset)
  if config.dataset in ("cifar10", "cifar100"):
    size = (32, 32, 3)
  size = size or (28, 28, 1)
  return DDPMSpec(size, num_classes, _channels(config), config.unet_res_blocks,
                  config.diffusion_steps, config.noise_schedule)


def train_ddpm(config: ml_collections.ConfigDict, workdir: str) -> dict:
  from fedjax_gen.run import load_federated_data, prepare_workdir  # the classifier trainer's

  spec = validate(config)
  if config.central:
    config = config.copy_and_resolve_references()
    config.update(num_clients=1, clients_per_round=1, partition="iid")
  prepare_workdir(config, workdir, resumable=_SAMPLING_KEYS)
  fed = load_federated_data(config)
  if tuple(fed.train.x.shape[2:]) != spec.image_shape:
    spec = DDPMSpec(tuple(fed.train.x.shape[2:]), fed.num_classes, spec.channels,
                    spec.num_res_blocks, spec.diffusion_steps, spec.noise_schedule)

  # --- model and algorithm -----------------------------------------------------------
  conv_impl = unet_conv_impl(config.conv_impl)
  alg = fedavg(training_loss(spec, cond_drop_prob=config.cond_drop_prob, conv_impl=conv_impl),
               optax.adam(config.lr), optax.sgd(config.server_lr or 1.0))
  schedule = LocalSchedule(config.batch_size, config.local_epochs, config.local_steps)
  auto = auto_plan(config.clients_per_round, has_conv=conv_impl == "xla")
  plan = ExecutionPlan(config.chunk_size or auto.chunk_size,
                       auto.steps_per_call if config.steps_per_call < 0 else config.steps_per_call)
  sim = Simulation(alg, fed.train, schedule, clients_per_round=config.clients_per_round,
                   plan=plan)
  params = spec.init_params(jax.random.key(config.seed))
  server, client_states = sim.init(params)
  ema = params

  # --- resume ----------------------------------------------------------------------------
  ckpt = Checkpointer(workdir)
  start, elapsed = ckpt.latest_round(), 0.0
  if start:
    (server, ema), client_states, elapsed = ckpt.restore((server, ema), client_states)
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), keep_through_round=start)
  update_ema = jax.jit(lambda e, p: jax.tree.map(
      lambda a, b: config.ema_decay * a + (1 - config.ema_decay) * b, e, p))

  # --- round loop ----------------------------------------------------------------------
  key = jax.random.key(config.seed)
  bar = tqdm(range(start + 1, config.rounds + 1), initial=start, total=config.rounds,
             desc=config.get("experiment", "ddpm"), disable=not config.progress, unit="round")
  t_last = time.perf_counter()
  for r in bar:
    server, client_states, metrics = sim.round(server, client_states, jax.random.fold_in(key, r))
    ema = update_ema(ema, server.params)
    loss = float(metrics.train_loss)  # syncs; rounds of a DDPM are long, the sync is cheap
    if not np.isfinite(loss):
      raise FloatingPointError(f"DDPM loss became {loss} at round {r}; the last checkpoint "
                               f"(round {ckpt.latest_round()}) is intact. Try a smaller lr.")
    now = time.perf_counter()
    elapsed += now - t_last
    t_last = now
    log.append({"round": r, "train_loss": loss, "elapsed_s": elapsed})
    bar.set_postfix(loss=f"{loss:.4f}")
    if r == config.rounds or (config.checkpoint_every and r % config.checkpoint_every == 0):
      ckpt.save(r, (server, ema), client_states, elapsed)
      t_last = time.perf_counter()  # checkpoint time is not training time
  ckpt.close()

  # --- generator, quality, summary -------------------------------------------------------
  generator_dir = os.path.join(workdir, "generator")
  save_ddpm(generator_dir, spec, ema)
  dataset = data_lib.load_dataset(config.dataset, data_dir=config.data_dir or None,
                                  source=config.data_source)
  clf = quality.train_reference_classifier(dataset.x_train, dataset.y_train, dataset.x_test,
                                           dataset.y_test, spec.num_classes, seed=config.seed,
                                           epochs=config.classifier_epochs)
  labels = np.repeat(np.arange(spec.num_classes), config.eval_samples_per_class)
  real = dataset.x_test[:len(labels)]
  real_features = clf.features(real)
  sample_key = jax.random.fold_in(key, 2**31 - 1)

  saved = DDPMGenerator.load(generator_dir)  # read back once: what later runs point at

  def judge(guidance_scale):
    gen = DDPMGenerator(saved.spec, saved.params, sample_steps=config.sample_steps,
                        guidance_scale=guidance_scale, sampler=config.sampler,
                        batch_size=config.sample_batch_size, source=saved.source)
    gen.generate(labels[:1], jax.random.key(0))  # compile outside the timing
    t0 = time.perf_counter()
    images = gen.generate(labels, sample_key)
    return gen, images, len(labels) / (time.perf_counter() - t0), {
        "guidance_scale": guidance_scale,
        "cas": quality.classification_accuracy_score(clf, images, labels),
        "frechet_distance": quality.frechet_distance(real_features, clf.features(images))}

  gen, images, images_per_s, scores = judge(config.guidance_scale)
  sweep = [scores if g == config.guidance_scale else judge(g)[3]
           for g in tqdm(sorted(set(_guidance_scales(config))), desc="guidance sweep",
                         disable=not config.progress)]
  summary = {
      "experiment": config.get("experiment", "ddpm"), "central": bool(config.central),
      "rounds": config.rounds, "cas": scores["cas"],
      "frechet_distance": scores["frechet_distance"],
      "frechet_distance_real_train_vs_test": quality.frechet_distance(
          clf.features(dataset.x_train[:len(labels)]), real_features),
      "classifier_test_accuracy": clf.test_accuracy, "guidance_sweep": sweep,
      "train_wall_time_s": log.last("elapsed_s"), "sample_images_per_s": images_per_s,
      "samples_evaluated": int(len(labels)), "generator_dir": os.path.abspath(generator_dir),
      "generator": gen.metadata(), "backend": jax.default_backend(), "conv_impl": conv_impl,
      "plan": vars(plan)}
  write_json(os.path.join(workdir, "summary.json"), summary)
  kind = "central" if config.central else "federated"
  quality.save_sample_grid(images, labels, os.path.join(workdir, "samples.png"),
                           class_names=dataset.class_names,
                           title=f"{kind} DDPM, guidance {config.guidance_scale:g}, "
                                 f"CAS {summary['cas']:.2f}")
  if sweep:
    quality.plot_guidance_sweep(sweep, os.path.join(workdir, "guidance.png"),
                                title=f"{kind} DDPM after {config.rounds} rounds")
  plot_accuracy(log.rows, os.path.join(workdir, "loss.png"), title="DDPM training loss",
                series=(("train_loss", "noise-prediction loss"),), ylabel="loss")
  return summary
