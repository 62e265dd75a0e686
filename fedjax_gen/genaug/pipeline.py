"""The config side of generative augmentation: checks, the generator, the data, the algorithm.

`fedjax_gen.run.train_and_evaluate` calls, in order: `check_config` (from
`config.validate`, cheap, before any data), `prepare` (builds the generator, checks its
image shape and classes against the dataset, THEN generates -- cached on disk -- and
augments clients' data), and `make_generative_algorithm` (GenFL, AIGC-only) or
`fl_algorithm_name` (Gen-FedSD trains with a standard algorithm on the augmented data).

Algorithms (config `algorithm=`):
  gen_fedsd  Gen-FedSD (arXiv 2405.07925): clients fill label gaps (`fill_rule`,
             `fill_budget`), then `genaug_base_algorithm` (default fedavg) trains.
  genfl      GenFL (arXiv 2503.20166): a balanced synthetic set on the server
             (`genfl_synthetic_per_class`), a share for each client (`genfl_share`,
             `genfl_generator_on`), generative aggregation (`genfl_lam_*`,
             `genfl_server_steps`, `genfl_skew_weight`).
  aigc_only  the GenFL paper's baseline: a model trained on the synthetic set alone.

Generators (config `generator=`): "ddpm", a class-conditional DDPM trained by
`fedjax-gen run ddpm_fmnist --workdir W` (`generator_dir=W/generator`); "sd", Stable
Diffusion (`sd_model`, `sd_revision`, `sd_dtype`) prompted with the dataset's class names.
"""

from __future__ import annotations

import os
import time

from fedjax_gen import data as data_lib
from fedjax_gen.algorithms.registry import ALGORITHMS, GENERATIVE
from fedjax_gen.diffusion.generator import cached_generation_s
from fedjax_gen.genaug.augment import (CACHE_NAMES, GENERATOR_LOCATIONS, Augmented,
                                      gen_fedsd_data, genfl_data)
from fedjax_gen.genaug.fill import FILL_RULES
from fedjax_gen.genaug.genfl import LAM_POLICIES

GENERATORS = ("ddpm", "sd")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TRAIN_HINT = ("train one with `fedjax-gen run ddpm_fmnist --workdir W` and pass "
               "generator_dir=W/generator")


def resolve_generator_dir(path: str) -> str:
  """An absolute `generator_dir`: relative paths are tried against the current folder,
  then against the repository root (so configs may name `experiments/runs/...`)."""
  if os.path.isabs(path) or os.path.exists(path):
    return os.path.abspath(path)
  in_repo = os.path.join(_REPO_ROOT, path)
  return in_repo if os.path.exists(in_repo) else os.path.abspath(path)


def check_config(c) -> None:
  """Cheap checks of the generative-augmentation keys (called by `config.validate`)."""
  def choice(key, valid, what="names"):
    if c[key] not in valid:
      raise ValueError(f"Unknown {key} {c[key]!r}; valid {what}: {', '.join(valid)}.")

  choice("generator", GENERATORS)
  choice("fill_rule", FILL_RULES, "rules")
  choice("genfl_generator_on", GENERATOR_LOCATIONS)
  choice("genfl_lam_policy", LAM_POLICIES, "policies")
  choice("genaug_base_algorithm", ALGORITHMS)
  choice("sd_dtype", ("float32", "bfloat16", "float16"))
  if c.fill_budget < 0:
    raise ValueError(f"fill_budget must be >= 0 (images per client), got {c.fill_budget}.")
  if c.fill_rule == "budget" and c.algorithm == "gen_fedsd" and c.fill_budget == 0:
    raise ValueError("fill_rule=budget with fill_budget=0 generates nothing; set "
                     "fill_budget to the images each client generates.")
  if not 0 <= c.genfl_share <= 1:
    raise ValueError(f"genfl_share must be in [0, 1] (the share of the synthetic set each "
                     f"client receives), got {c.genfl_share}.")
  if not 0 <= c.genfl_lam0 <= 1:
    raise ValueError(f"genfl_lam0 must be in [0, 1], got {c.genfl_lam0}.")
  if not 0 < c.genfl_lam_decay <= 1:
    raise ValueError(f"genfl_lam_decay must be in (0, 1], got {c.genfl_lam_decay}.")
  if not 0 <= c.genfl_skew_weight < 1:
    raise ValueError(f"genfl_skew_weight must be in [0, 1) (0 = size weights), got "
                     f"{c.genfl_skew_weight}.")
  if c.genfl_synthetic_per_class < 1:
    raise ValueError(f"genfl_synthetic_per_class must be >= 1, got "
                     f"{c.genfl_synthetic_per_class}.")
  if c.genfl_server_steps < (1 if c.algorithm == "aigc_only" else 0):
    raise ValueError(f"genfl_server_steps must be >= {int(c.algorithm == 'aigc_only')} for "
                     f"algorithm={c.algorithm}, got {c.genfl_server_steps}.")
  if c.generator_sample_steps < 1:
    raise ValueError(f"generator_sample_steps must be >= 1, got {c.generator_sample_steps}.")
  if c.generator_guidance < 0:
    raise ValueError(f"generator_guidance must be >= 0, got {c.generator_guidance}.")
  if c.generator_batch_size < 1:
    raise ValueError(f"generator_batch_size must be >= 1, got {c.generator_batch_size}.")
  if c.algorithm not in GENERATIVE:
    return
  if c.generator == "sd":
    if not c.sd_model:
      raise ValueError("generator=sd needs sd_model (a Hugging Face id such as "
                       "CompVis/stable-diffusion-v1-4, or a local pipeline folder).")
    return
  if not c.generator_dir:
    raise ValueError(f"algorithm={c.algorithm} needs a trained generator: {_TRAIN_HINT}.")
  folder = resolve_generator_dir(c.generator_dir)
  if not os.path.isfile(os.path.join(folder, "generator.json")):
    raise FileNotFoundError(f"generator_dir={c.generator_dir!r} ({folder}) holds no trained "
                            f"DDPM (no generator.json); {_TRAIN_HINT}.")


def build_generator(config, class_names, image_shape):
  """The configured generator (DDPM from `generator_dir`, or Stable Diffusion)."""
  if config.generator == "sd":
    from fedjax_gen.diffusion.stable_diffusion import StableDiffusionGenerator
    return StableDiffusionGenerator.from_pretrained(
        config.sd_model, class_names=list(class_names), image_shape=tuple(image_shape),
        revision=config.sd_revision or None, dtype=config.sd_dtype,
        num_steps=config.generator_sample_steps, guidance_scale=config.generator_guidance,
        batch_size=config.generator_batch_size)
  from fedjax_gen.diffusion.ddpm import DDPMGenerator
  return DDPMGenerator.load(resolve_generator_dir(config.generator_dir),
                            sample_steps=config.generator_sample_steps,
                            guidance_scale=config.generator_guidance,
                            batch_size=config.generator_batch_size)


def cache_dir(config, workdir: str) -> str:
  return config.generated_cache_dir or os.path.join(workdir, "generated")


def prepare(config, fed, workdir: str, generator=None) -> tuple[Augmented, dict]:
  """Generates (or loads from the cache) the synthetic data of `config.algorithm` and
  augments clients' data (its label counts: `label_counts_augmented.png`); returns it and
  the summary entries: `synthetic_examples` (added to clients, in total) and
  `synthetic_examples_per_client`, `server_synthetic_examples` (GenFL / AIGC-only),
  `generation_s` (seconds the generator took to make the sets, also on a re-run that loads
  them from the cache; loading the generator not included), `generation_wall_s` (this
  call's wall time, cache loads included) and `generator` (its metadata). The generator's
  compatibility with the dataset is checked first."""
  generator = generator or build_generator(config, fed.class_names, fed.train.x.shape[2:])
  start = time.perf_counter()
  if config.algorithm == "gen_fedsd":
    aug = gen_fedsd_data(fed, generator, config.fill_rule, config.fill_budget, config.seed,
                         cache_dir(config, workdir))
  else:
    aug = genfl_data(fed, generator, per_class=config.genfl_synthetic_per_class,
                     share=config.genfl_share, generator_on=config.genfl_generator_on,
                     seed=config.seed, cache_dir=cache_dir(config, workdir),
                     augment=config.algorithm == "genfl")
  seconds = time.perf_counter() - start
  data_lib.save_label_heatmap(aug.fed.label_counts,
                              os.path.join(workdir, "label_counts_augmented.png"),
                              class_names=fed.class_names,
                              title=f"{config.dataset} {config.partition} + synthetic")
  per_client = [int(n) for n in aug.synthetic_per_client]
  summary = {"synthetic_examples": int(sum(per_client)),
             "synthetic_examples_per_client": per_client,
             "server_synthetic_examples": 0 if aug.server_y is None else int(len(aug.server_y)),
             "generation_s": cached_generation_s(cache_dir(config, workdir),
                                                 CACHE_NAMES[config.algorithm]),
             "generation_wall_s": seconds, "generator": generator.metadata()}
  print(f"{config.algorithm}: {summary['synthetic_examples']} synthetic examples added to "
        f"clients (per client: {per_client}), {summary['server_synthetic_examples']} held "
        f"by the server; generation {summary['generation_s']:.1f} s "
        f"(this run: {seconds:.1f} s)")
  return aug, summary


def fl_algorithm_name(config) -> str:
  """The registry algorithm that trains: Gen-FedSD's base algorithm, else the config's."""
  return config.genaug_base_algorithm if config.algorithm == "gen_fedsd" else config.algorithm


def make_generative_algorithm(config, loss_fn, aug: Augmented, num_classes: int):
  """GenFL or AIGC-only from the config and the server's synthetic set."""
  import optax

  from fedjax_gen.algorithms.server_optimizers import server_optimizer
  from fedjax_gen.genaug.genfl import aigc_only, genfl

  opt = optax.chain(optax.add_decayed_weights(config.weight_decay),
                    optax.sgd(config.lr, momentum=config.momentum or None))
  if config.algorithm == "aigc_only":
    return aigc_only(loss_fn, opt, synthetic_x=aug.server_x, synthetic_y=aug.server_y,
                     server_steps=config.genfl_server_steps, batch_size=config.batch_size,
                     seed=config.seed)
  if config.algorithm != "genfl":
    raise ValueError(f"{config.algorithm} is not built here; use make_algorithm.")
  return genfl(loss_fn, opt,
               server_optimizer(config.server_optimizer, config.server_lr or None,
                                config.server_momentum),
               synthetic_x=aug.server_x, synthetic_y=aug.server_y,
               num_classes=num_classes, server_steps=config.genfl_server_steps,
               server_batch_size=config.batch_size, lam_policy=config.genfl_lam_policy,
               lam0=config.genfl_lam0, lam_decay=config.genfl_lam_decay,
               rounds=config.rounds, skew_weight=config.genfl_skew_weight, seed=config.seed)
