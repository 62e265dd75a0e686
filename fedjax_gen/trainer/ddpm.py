"""`train_ddpm(config, workdir)`: a class-conditional image DDPM trained by federated
learning through the fedjax-gen engine (FedAvg over the UNet's parameters, clients vmapped
like any other model; no image leaves a client), or centrally (`ddpm.central=true`: one client
that holds the whole training set, the same code path).

Sections: checks -> data -> model -> resume -> round loop -> generator, quality, summary.
The run leaves `generator/` (the trained DDPM, EMA weights, see `ddpm.DDPMGenerator.load`),
`samples.png`, `loss.png`, `metrics.jsonl` and `summary.json` in its work folder.
"""

from __future__ import annotations

import contextlib
import os
import time

import jax
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

from fedjax_gen import data as data_lib
from fedjax_gen import privacy
from fedjax_gen.algorithms import fedavg
from fedjax_gen.diffusion import quality
from fedjax_gen.diffusion.ddpm import (DDPMGenerator, DDPMSpec, record_quality, save_ddpm,
                                     training_loss)
from fedjax_gen.engine import LocalSchedule, Simulation
from fedjax_gen.outputs import MetricsLog, plot_accuracy, write_json
from fedjax_gen.trainer import options
from fedjax_gen.trainer import plan as plan_lib
from fedjax_gen.trainer.checkpoint import Checkpointer
from fedjax_gen.trainer.ddpm_options import check_options, guidance_scales
from fedjax_gen.trainer.train import (AUDIT_EXAMPLES, load_federated_data, make_private,
                                      privacy_summary, sample_members)
from fedjax_gen.trainer.workdir import Interrupted, Run, loss_not_finite, open_run, training


def train_ddpm(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) the DDPM of `config` in `workdir`; returns the summary."""
  options.validate(config)
  d, spec = config.ddpm, check_options(config)
  if d.central:
    config = config.copy_and_resolve_references()
    config.update(num_clients=1, clients_per_round=1, partition="iid")
  with open_run(config, workdir, resumable=("sample",)) as run:
    fed = load_federated_data(config)
    run.commit()
    return _train(config, run, fed, spec)


def _train(config: ml_collections.ConfigDict, run: Run, fed, spec: DDPMSpec) -> dict:
  """`train_ddpm`'s round loop (resumed from the newest readable checkpoint), generator,
  quality and summary."""
  workdir = run.workdir
  d = config.ddpm
  if tuple(fed.train.x.shape[2:]) != spec.image_shape:
    spec = DDPMSpec(tuple(fed.train.x.shape[2:]), fed.num_classes, spec.channels,
                    spec.num_res_blocks, spec.diffusion_steps, spec.noise_schedule)

  # --- model and algorithm -----------------------------------------------------------
  conv_impl = plan_lib.ddpm_conv_impl(config.run.conv_impl)
  alg = fedavg(training_loss(spec, cond_drop_prob=d.cond_drop_prob, conv_impl=conv_impl),
               optax.adam(config.lr), optax.sgd(config.fl.server_lr or 1.0))
  alg, noise = make_private(config, alg, population=config.num_clients)
  schedule = LocalSchedule(config.batch_size, config.local_epochs, config.local_steps)
  plan = plan_lib.plan_for(config.clients_per_round, native_conv=conv_impl == "xla",
                           chunk_size=config.run.chunk_size,
                           steps_per_call=config.run.steps_per_call)
  sim = Simulation(alg, fed.train, schedule, clients_per_round=config.clients_per_round,
                   plan=plan)
  params = spec.init_params(jax.random.key(config.seed))
  server, client_states = sim.init(params)
  ema = params

  # --- resume ----------------------------------------------------------------------------
  ckpt = Checkpointer(workdir)
  start, elapsed = 0, 0.0
  if ckpt.latest_round():
    (server, ema), client_states, elapsed, start = ckpt.restore((server, ema), client_states)
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), keep_through_round=start)
  update_ema = jax.jit(lambda e, p: jax.tree.map(
      lambda a, b: d.ema_decay * a + (1 - d.ema_decay) * b, e, p))

  # --- round loop ----------------------------------------------------------------------
  key = jax.random.key(config.seed)
  bar = tqdm(range(start + 1, config.rounds + 1), initial=start, total=config.rounds,
             desc=config.get("experiment", "ddpm"), disable=not config.progress, unit="round")
  t_last = time.perf_counter()
  with training(run, ckpt) as stop_requested, bar, contextlib.closing(log):
    for r in bar:
      server, client_states, metrics = sim.round(server, client_states,
                                                 jax.random.fold_in(key, r))
      ema = update_ema(ema, server.params)
      loss = float(metrics.train_loss)  # syncs; rounds of a DDPM are long, the sync is cheap
      if not np.isfinite(loss):
        raise loss_not_finite("DDPM loss", loss, r, ckpt, "Try a smaller lr.")
      now = time.perf_counter()
      elapsed += now - t_last
      t_last = now
      log.append({"round": r, "train_loss": loss, "elapsed_s": elapsed})
      bar.set_postfix(loss=f"{loss:.4f}")
      stop = stop_requested()
      if (r == config.rounds or stop
          or (config.checkpoint_every and r % config.checkpoint_every == 0)):
        ckpt.save(r, (server, ema), client_states, elapsed)
        t_last = time.perf_counter()  # checkpoint time is not training time
      if stop:
        ckpt.wait()
        raise Interrupted(workdir, r, stop)

  # --- generator, quality, summary -------------------------------------------------------
  generator_dir = os.path.join(workdir, "generator")
  guarantee = privacy_summary(config, noise, config.num_clients)
  save_ddpm(generator_dir, spec, ema, privacy=guarantee.get("privacy"))
  dataset = data_lib.load_dataset(config.dataset, data_dir=config.data.dir or None,
                                  source=config.data.source)
  clf = quality.train_reference_classifier(dataset.x_train, dataset.y_train, dataset.x_test,
                                           dataset.y_test, spec.num_classes, seed=config.seed,
                                           epochs=d.classifier_epochs)
  labels = np.repeat(np.arange(spec.num_classes), d.eval_samples_per_class)
  real = dataset.x_test[:len(labels)]
  real_features = clf.features(real)
  sample_key = jax.random.fold_in(key, 2**31 - 1)

  saved = DDPMGenerator.load(generator_dir)  # read back once: what later runs point at

  def judge(guidance_scale):
    gen = DDPMGenerator(saved.spec, saved.params, sample_steps=d.sample_steps,
                        guidance_scale=guidance_scale, sampler=d.sampler,
                        batch_size=d.sample_batch_size, source=saved.source)
    gen.generate(labels[:1], jax.random.key(0))  # compile outside the timing
    t0 = time.perf_counter()
    images = gen.generate(labels, sample_key)
    return gen, images, len(labels) / (time.perf_counter() - t0), {
        "guidance_scale": guidance_scale,
        "cas": quality.classification_accuracy_score(clf, images, labels),
        "frechet_distance": quality.frechet_distance(real_features, clf.features(images))}

  gen, images, images_per_s, scores = judge(d.guidance_scale)
  record_quality(generator_dir, {"cas": scores["cas"],
                                 "frechet_distance": scores["frechet_distance"],
                                 "guidance_scale": d.guidance_scale,
                                 "sample_steps": d.sample_steps, "sampler": d.sampler,
                                 "rounds": config.rounds, "dataset": config.dataset})
  sweep = [scores if g == d.guidance_scale else judge(g)[3]
           for g in tqdm(sorted(set(guidance_scales(d))), desc="guidance sweep",
                         disable=not config.progress)]
  # What the generator leaks: its samples' distances to training vs held-out images, and a
  # membership attack on its denoising loss (members: clients' training images).
  x_members, y_members = sample_members(fed.train, np.arange(config.num_clients),
                                        AUDIT_EXAMPLES, config.seed)
  n = min(len(y_members), len(dataset.y_test), d.audit_examples)
  audit = {"memorisation": privacy.audit_generated(images, labels, clf, x_members, y_members,
                                                   dataset.x_test, dataset.y_test,
                                                   seed=config.seed),
           "membership": privacy.audit_ddpm(spec, ema, x_members[:n], y_members[:n],
                                            dataset.x_test[:n], dataset.y_test[:n],
                                            seed=config.seed, conv_impl=conv_impl)}
  summary = {
      "experiment": config.get("experiment", "ddpm"), "central": bool(d.central),
      "rounds": config.rounds, "cas": scores["cas"],
      "frechet_distance": scores["frechet_distance"],
      "frechet_distance_real_train_vs_test": quality.frechet_distance(
          clf.features(dataset.x_train[:len(labels)]), real_features),
      "classifier_test_accuracy": clf.test_accuracy, "guidance_sweep": sweep,
      "train_wall_time_s": log.last("elapsed_s"), "sample_images_per_s": images_per_s,
      "samples_evaluated": int(len(labels)), "generator_dir": os.path.abspath(generator_dir),
      "generator": gen.metadata(), "backend": jax.default_backend(), "conv_impl": conv_impl,
      "plan": vars(plan), **guarantee, "audit": audit}
  write_json(os.path.join(workdir, "summary.json"), summary)
  kind = "central" if d.central else "federated"
  quality.save_sample_grid(images, labels, os.path.join(workdir, "samples.png"),
                           class_names=dataset.class_names,
                           title=f"{kind} DDPM, guidance {d.guidance_scale:g}, "
                                 f"CAS {summary['cas']:.2f}")
  if sweep:
    quality.plot_guidance_sweep(sweep, os.path.join(workdir, "guidance.png"),
                                title=f"{kind} DDPM after {config.rounds} rounds")
  plot_accuracy(log.rows, os.path.join(workdir, "loss.png"), title="DDPM training loss",
                series=(("train_loss", "noise-prediction loss"),), ylabel="loss", loss=None)
  return summary
