"""Generative augmentation, as the trainer runs it: the generator, the synthetic data,
the algorithm; and the `genaug.*` and `genfl.*` options with their checks.

`train_and_evaluate` calls, in order: `check_options` (from `config.validate`, cheap,
before any data), `prepare` (builds the generator, checks its image shape and classes
against the dataset, THEN generates, cached on disk, and augments clients' data), and
`make_generative_algorithm` (GenFL, AIGC-only) or `fl_algorithm_name` (Gen-FedSD trains
with a standard algorithm on the augmented data).

Algorithms (config `algorithm=`):
  gen_fedsd  Gen-FedSD (arXiv 2405.07925): clients fill label gaps (`genaug.fill_rule`,
             `genaug.fill_budget`), then `genaug.base_algorithm` (default fedavg) trains.
  genfl      GenFL (arXiv 2503.20166): a balanced synthetic set on the server
             (`genfl.synthetic_per_class`), a share for each client (`genfl.share`,
             `genfl.generator_on`), generative aggregation (`genfl.lam_*`,
             `genfl.server_steps`, `genfl.skew_weight`).
  aigc_only  the GenFL paper's baseline: a model trained on the synthetic set alone.

Generators (`genaug.generator=`): "ddpm", a class-conditional DDPM trained by
`fedjax-gen run ddpm_fmnist --workdir W` (`genaug.generator_dir=W/generator`); "sd", Stable
Diffusion (`genaug.sd_model`, `sd_revision`, `sd_dtype`) prompted with the class names.
"""

from __future__ import annotations

import os
import sys
import time

import optax

from fedjax_gen import data as data_lib
from fedjax_gen.algorithms.genfl import LAM_POLICIES, aigc_only, genfl
from fedjax_gen.algorithms.registry import ALGORITHMS, FL_OPTIONS, GENERATIVE
from fedjax_gen.algorithms.server_optimizers import server_optimizer
from fedjax_gen.augment.fill import FILL_RULES
from fedjax_gen.augment.synthetic import (CACHE_NAMES, GENERATOR_LOCATIONS, Augmented,
                                          gen_fedsd_data, genfl_data)
from fedjax_gen.diffusion.generator import cached_generation_s
from fedjax_gen.types import Option, options_of

GENERATORS = ("ddpm", "sd")
OPTIONS = (
    Option("generator", "ddpm", "ddpm (genaug.generator_dir) | sd (Stable Diffusion, "
           "genaug.sd_model)"),
    Option("generator_dir", "", "a trained DDPM: W/generator of `fedjax-gen run ddpm_fmnist`"),
    Option("sample_steps", 25, "DDIM steps (DDPM and SD)"),
    Option("guidance", 2.0, "classifier-free guidance scale"),
    Option("batch_size", 250, "images per compiled sampler call"),
    Option("sd_model", "CompVis/stable-diffusion-v1-4", "hub id or local diffusers folder"),
    Option("sd_revision", "flax", "a revision holding Flax weights (\"\" = default)"),
    Option("sd_dtype", "float32", "float32 | bfloat16 | float16"),
    Option("cache_dir", "", "where generated images are cached (\"\" = <workdir>/generated)"),
    Option("fill_rule", "max", "Gen-FedSD: max | budget | global"),
    Option("fill_budget", 0, "images per client for fill_rule=budget"),
    Option("base_algorithm", "fedavg", "what trains on Gen-FedSD's augmented data"),
)

GENFL_OPTIONS = tuple(o._replace(algorithms=("genfl", "aigc_only")) for o in (
    Option("synthetic_per_class", 100, "GenFL / AIGC-only: the server's balanced set"),
    Option("share", 0.2, "share of the synthetic set each client receives, [0, 1]"),
    Option("generator_on", "server", "server | clients: where clients' shares are generated"),
    Option("lam_policy", "cos", "constant | exp | cos | adaptive"),
    Option("lam0", 0.5, "lam_t's initial (or constant) value"),
    Option("lam_decay", 0.9, "exp: lam0 * decay**t"),
    Option("server_steps", 10, "server SGD steps on synthetic data per round"),
    Option("skew_weight", 0.5, "client weight ~ size * (1 - skew_weight * entropy deficit)"),
))

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TRAIN_HINT = ("train one with `fedjax-gen run ddpm_fmnist --workdir W` and pass "
               "genaug.generator_dir=W/generator")


def resolve_generator_dir(path: str) -> str:
  """An absolute `generator_dir`: relative paths are tried against the current folder,
  then against the repository root (so configs may name `experiments/runs/...`)."""
  if os.path.isabs(path) or os.path.exists(path):
    return os.path.abspath(path)
  in_repo = os.path.join(_REPO_ROOT, path)
  return in_repo if os.path.exists(in_repo) else os.path.abspath(path)


def check_options(c) -> None:
  """Cheap checks of `c.genaug` and `c.genfl` (called by `config.validate`)."""
  g, f = c.genaug, c.genfl

  def choice(family, key, valid, what="names"):
    value = c[family][key]
    if value not in valid:
      raise ValueError(f"Unknown {family}.{key} {value!r}; valid {what}: "
                       f"{', '.join(valid)}.")

  choice("genaug", "generator", GENERATORS)
  choice("genaug", "fill_rule", FILL_RULES, "rules")
  choice("genfl", "generator_on", GENERATOR_LOCATIONS)
  choice("genfl", "lam_policy", LAM_POLICIES, "policies")
  choice("genaug", "base_algorithm", ALGORITHMS)
  choice("genaug", "sd_dtype", ("float32", "bfloat16", "float16"))
  if g.fill_budget < 0:
    raise ValueError(f"genaug.fill_budget must be >= 0 (images per client), got "
                     f"{g.fill_budget}.")
  if g.fill_rule == "budget" and c.algorithm == "gen_fedsd" and g.fill_budget == 0:
    raise ValueError("genaug.fill_rule=budget with genaug.fill_budget=0 generates nothing; "
                     "set genaug.fill_budget to the images each client generates.")
  if not 0 <= f.share <= 1:
    raise ValueError(f"genfl.share must be in [0, 1] (the share of the synthetic set each "
                     f"client receives), got {f.share}.")
  if not 0 <= f.lam0 <= 1:
    raise ValueError(f"genfl.lam0 must be in [0, 1], got {f.lam0}.")
  if not 0 < f.lam_decay <= 1:
    raise ValueError(f"genfl.lam_decay must be in (0, 1], got {f.lam_decay}.")
  if not 0 <= f.skew_weight < 1:
    raise ValueError(f"genfl.skew_weight must be in [0, 1) (0 = size weights), got "
                     f"{f.skew_weight}.")
  if f.synthetic_per_class < 1:
    raise ValueError(f"genfl.synthetic_per_class must be >= 1, got "
                     f"{f.synthetic_per_class}.")
  if f.server_steps < (1 if c.algorithm == "aigc_only" else 0):
    raise ValueError(f"genfl.server_steps must be >= {int(c.algorithm == 'aigc_only')} for "
                     f"algorithm={c.algorithm}, got {f.server_steps}.")
  if g.sample_steps < 1:
    raise ValueError(f"genaug.sample_steps must be >= 1, got {g.sample_steps}.")
  if g.guidance < 0:
    raise ValueError(f"genaug.guidance must be >= 0, got {g.guidance}.")
  if g.batch_size < 1:
    raise ValueError(f"genaug.batch_size must be >= 1, got {g.batch_size}.")
  if c.algorithm not in GENERATIVE:
    return
  if g.generator == "sd":
    if not g.sd_model:
      raise ValueError("genaug.generator=sd needs genaug.sd_model (a Hugging Face id such "
                       "as CompVis/stable-diffusion-v1-4, or a local pipeline folder).")
    return
  if not g.generator_dir:
    raise ValueError(f"algorithm={c.algorithm} needs a trained generator: {_TRAIN_HINT}.")
  folder = resolve_generator_dir(g.generator_dir)
  if not os.path.isfile(os.path.join(folder, "generator.json")):
    raise FileNotFoundError(f"genaug.generator_dir={g.generator_dir!r} ({folder}) holds no "
                            f"trained DDPM (no generator.json); {_TRAIN_HINT}.")


def build_generator(config, class_names, image_shape):
  """The configured generator (DDPM from `genaug.generator_dir`, or Stable Diffusion)."""
  g = config.genaug
  if g.generator == "sd":
    from fedjax_gen.diffusion.stable_diffusion import StableDiffusionGenerator
    return StableDiffusionGenerator.from_pretrained(
        g.sd_model, class_names=list(class_names), image_shape=tuple(image_shape),
        revision=g.sd_revision or None, dtype=g.sd_dtype, num_steps=g.sample_steps,
        guidance_scale=g.guidance, batch_size=g.batch_size)
  from fedjax_gen.diffusion.ddpm import DDPMGenerator
  return DDPMGenerator.load(resolve_generator_dir(g.generator_dir),
                            sample_steps=g.sample_steps, guidance_scale=g.guidance,
                            batch_size=g.batch_size)


# The guard, from `experiments/genaug_map.py` (RESULTS.md, "When does generated data help?";
# digits, 10 clients, 30 rounds, seed 0). Generator quality, on #C=2: with a federated DDPM of
# CAS 0.73 Gen-FedSD and GenFL gained over FedAvg (+3.3, +1.1 points); with the same DDPM
# stopped earlier (CAS 0.08-0.15) Gen-FedSD lost 1.3-7.3 points and GenFL ranged from +1.3 to
# -16.0. Label skew (`data.label_skew`, with that CAS 0.73 generator): Gen-FedSD gained on
# every split from skew 0.70 up (#C=3 0.70 +3.1, Dir(0.1) 0.74 +1.1, #C=2 0.80 +3.3, #C=1
# 0.90 +4.0) and lost on Dir(0.5), skew 0.51 (-1.3; GenFL -3.1). Nothing in between was
# measured, so each line is drawn at the lowest value that gained.
MIN_CAS_WITH_GAIN = 0.73
MIN_SKEW_WITH_GAIN = 0.70
_MAP = "RESULTS.md (\"When does generated data help?\")"


def guard(generator, label_counts=None) -> dict:
  """The summary's `genaug_guard`: the generator's CAS (as `train_ddpm` judged it, in its
  `generator.json`; None for a generator not judged, e.g. Stable Diffusion) and the clients'
  label skew (`data.label_skew` of `label_counts`), each against the lowest value at which
  the map measured a gain; a warning line names each one below it."""
  quality = getattr(generator, "quality", None) or {}
  cas = quality.get("cas")
  weak = cas is not None and cas < MIN_CAS_WITH_GAIN
  skew = None if label_counts is None else round(data_lib.label_skew(label_counts), 3)
  mild = skew is not None and skew < MIN_SKEW_WITH_GAIN
  if weak:
    print(f"fedjax-gen: warning: the generator's CAS is {cas:.2f} (judged at guidance "
          f"{quality.get('guidance_scale')}, {quality.get('sample_steps')} steps), below "
          f"{MIN_CAS_WITH_GAIN}, the lowest CAS at which Gen-FedSD gained accuracy in {_MAP}; "
          "with weaker generators it lost 1-7 points there and GenFL up to 16. Expect no "
          "gain, or train the generator longer.", file=sys.stderr)
  if mild:
    print(f"fedjax-gen: warning: the clients' label skew is {skew:.2f} (mean total variation "
          f"from the pooled labels; IID 0, two classes of ten per client 0.8), below "
          f"{MIN_SKEW_WITH_GAIN}, the lowest skew at which Gen-FedSD gained accuracy in "
          f"{_MAP}; on Dir(0.5) (skew 0.51) it lost 1.3 points there and GenFL 3.1. Expect "
          "little or no gain from generated data on this split.", file=sys.stderr)
  return {"generator_cas": cas, "min_cas_with_gain": MIN_CAS_WITH_GAIN, "below": weak,
          "label_skew": skew, "min_skew_with_gain": MIN_SKEW_WITH_GAIN, "mild_split": mild}


def cache_dir(config, workdir: str) -> str:
  return config.genaug.cache_dir or os.path.join(workdir, "generated")


def prepare(config, fed, workdir: str, generator=None) -> tuple[Augmented, dict]:
  """Generates (or loads from the cache) the synthetic data of `config.algorithm` and
  augments clients' data (its label counts: `label_counts_augmented.png`); returns it and
  the summary entries: `synthetic_examples` (added to clients, in total) and
  `synthetic_examples_per_client`, `server_synthetic_examples` (GenFL / AIGC-only),
  `generation_s` (seconds the generator took to make the sets, also on a re-run that loads
  them from the cache; loading the generator not included), `generation_wall_s` (this
  call's wall time, cache loads included), `generator` (its metadata) and `genaug_guard`
  (`guard`). The generator's compatibility with the dataset is checked first."""
  generator = generator or build_generator(config, fed.class_names, fed.train.x.shape[2:])
  # AIGC-only trains on the server's synthetic set alone: the clients' skew is not its
  # concern.
  verdict = guard(generator, None if config.algorithm == "aigc_only" else fed.label_counts)
  start = time.perf_counter()
  if config.algorithm == "gen_fedsd":
    aug = gen_fedsd_data(fed, generator, config.genaug.fill_rule, config.genaug.fill_budget,
                         config.seed, cache_dir(config, workdir))
  else:
    aug = genfl_data(fed, generator, per_class=config.genfl.synthetic_per_class,
                     share=config.genfl.share, generator_on=config.genfl.generator_on,
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
             "generation_wall_s": seconds, "generator": generator.metadata(),
             "genaug_guard": verdict}
  print(f"{config.algorithm}: {summary['synthetic_examples']} synthetic examples added to "
        f"clients (per client: {per_client}), {summary['server_synthetic_examples']} held "
        f"by the server; generation {summary['generation_s']:.1f} s "
        f"(this run: {seconds:.1f} s)")
  return aug, summary


def fl_algorithm_name(config) -> str:
  """The registry algorithm that trains: Gen-FedSD's base algorithm, else the config's."""
  return config.genaug.base_algorithm if config.algorithm == "gen_fedsd" else config.algorithm


def make_generative_algorithm(config, loss_fn, aug: Augmented, num_classes: int):
  """GenFL or AIGC-only from the config and the server's synthetic set."""
  fl, f = options_of(FL_OPTIONS, config.fl), config.genfl
  opt = optax.chain(optax.add_decayed_weights(fl.weight_decay),
                    optax.sgd(config.lr, momentum=config.momentum or None))
  if config.algorithm == "aigc_only":
    return aigc_only(loss_fn, opt, synthetic_x=aug.server_x, synthetic_y=aug.server_y,
                     server_steps=f.server_steps, batch_size=config.batch_size,
                     seed=config.seed)
  if config.algorithm != "genfl":
    raise ValueError(f"{config.algorithm} is not built here; use make_algorithm.")
  return genfl(loss_fn, opt,
               server_optimizer(fl.server_optimizer, fl.server_lr or None,
                                fl.server_momentum),
               synthetic_x=aug.server_x, synthetic_y=aug.server_y,
               num_classes=num_classes, server_steps=f.server_steps,
               server_batch_size=config.batch_size, lam_policy=f.lam_policy,
               lam0=f.lam0, lam_decay=f.lam_decay, rounds=config.rounds,
               skew_weight=f.skew_weight, seed=config.seed)
