"""Experiment configs: Python files with `get_config()` returning a `ConfigDict`.

`fedjax-gen run EXPERIMENT KEY=VALUE ...` loads a built-in config (`fedjax_gen/configs/`)
or a config file by path, applies the overrides (typed by the defaults) and validates the
result before any data is read or any computation starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil

import ml_collections

from fedjax_gen import configs as _configs

DATASET_CLASSES = {"digits": 10, "fashion_mnist": 10, "mnist": 10, "cifar10": 10,
                   "cifar100": 100, "emnist": 47}


def base_config() -> ml_collections.ConfigDict:
  """Every key a run understands, with defaults (experiments override a few)."""
  return ml_collections.ConfigDict(dict(
      # data
      dataset="digits",         # digits | fashion_mnist | mnist | cifar10 | cifar100 | emnist
      data_dir="",              # "" = the dataset's default location
      data_source="auto",       # auto | sklearn | idx | tfds
      partition="dirichlet",    # iid | dirichlet | label_k | pathological | shards | quantity
      alpha=0.5,                # Dirichlet concentration (dirichlet, quantity)
      classes_per_client=2,     # k of label_k (#C=k) and pathological (PFLlib "pat")
      shards_per_client=2,      # shards
      min_client_size=10,       # dirichlet/quantity resample until every client has this many
      test_fraction=0.25,       # each client's local test split (personalized evaluation)
      num_clients=20,
      # federated training
      algorithm="fedavg",       # fedavg | fedprox | scaffold | fednova | fedavgm | fedadam | fedyogi
      clients_per_round=10,
      rounds=50,
      local_epochs=1,           # used when local_steps == 0
      local_steps=0,            # > 0: fixed local steps per round instead of epochs
      batch_size=32,
      lr=0.01,
      momentum=0.0,
      weight_decay=0.0,
      prox_mu=0.01,             # FedProx
      server_optimizer="sgd",   # sgd | momentum | adam | yogi (fedavgm/fedadam/fedyogi set it)
      server_lr=0.0,            # 0 = the optimizer's default (1.0 for sgd/momentum, 0.01 adaptive)
      server_momentum=0.9,
      # personalized FL (see fedjax_gen/algorithms/personalized.py and friends)
      holdout_clients=0.0,      # fraction of clients that never train: new-client evaluation
      finetune_steps=10,        # local steps before evaluation (fedavg_ft, fedbabu, perfedavg)
      newcomer_steps=10,        # local steps a held-out client adapts with its recipe
      personal_layers="head",   # comma-separated top-level layers kept local (fedper/rep/babu)
      fedrep_head_fraction=0.5, # FedRep: share of local steps that train the head
      ditto_lambda=1.0,         # Ditto's lambda (the authors' scripts)
      apfl_alpha=0.5,
      apfl_alpha_lr=0.01,
      pfedme_lambda=15.0,       # pFedMe (the authors' MNIST command; beta = server_lr)
      pfedme_inner_steps=5,
      pfedme_personal_lr=0.01,
      perfedavg_alpha=0.01,     # Per-FedAvg inner step (also its eval fine-tune lr)
      perfedavg_beta=0.001,
      # generative augmentation: gen_fedsd | genfl | aigc_only (see fedjax_gen/genaug/)
      generator="ddpm",         # ddpm (generator_dir) | sd (Stable Diffusion, sd_model)
      generator_dir="",         # a trained DDPM: W/generator of `fedjax-gen run ddpm_fmnist`
      generator_sample_steps=25,  # DDIM steps (DDPM and SD)
      generator_guidance=2.0,   # classifier-free guidance scale
      generator_batch_size=250, # images per compiled sampler call
      sd_model="CompVis/stable-diffusion-v1-4",  # hub id or local diffusers folder
      sd_revision="flax",       # a revision holding Flax weights ("" = default)
      sd_dtype="float32",       # float32 | bfloat16
      generated_cache_dir="",   # "" = <workdir>/generated
      fill_rule="max",          # Gen-FedSD: max | budget | global
      fill_budget=0,            # images per client for fill_rule=budget
      genaug_base_algorithm="fedavg",  # what trains on Gen-FedSD's augmented data
      genfl_synthetic_per_class=100,   # GenFL / AIGC-only: the server's balanced set
      genfl_share=0.2,          # share of the synthetic set each client receives, [0, 1]
      genfl_generator_on="server",  # server | clients: where clients' shares are generated
      genfl_lam_policy="cos",   # constant | exp | cos | adaptive
      genfl_lam0=0.5,           # lam_t's initial (or constant) value
      genfl_lam_decay=0.9,      # exp: lam0 * decay**t
      genfl_server_steps=10,    # server SGD steps on synthetic data per round
      genfl_skew_weight=0.5,    # client weight ~ size * (1 - skew_weight * entropy deficit)
      # pFedGPA: diffusion-based generative parameter aggregation (fedjax_gen/pfedgpa/)
      pfedgpa_layers="",        # comma-separated top-level layers diffused ("" = all)
      pfedgpa_token_size=256,   # parameters per token
      pfedgpa_token_pad="end",  # end (zero tail) | layer (pad each layer) | none (must divide)
      pfedgpa_norm="layer",     # layer | element: normalisation stats fitted on the buffer
      pfedgpa_denoiser="transformer",  # transformer | mlp (per-token) | lowrank (x0, whole model)
      pfedgpa_width=64,         # denoiser width, depth and attention heads
      pfedgpa_depth=2,
      pfedgpa_heads=4,
      pfedgpa_timesteps=100,    # T of the noise schedule
      pfedgpa_schedule="linear",  # linear | cosine
      pfedgpa_s=20,             # inversion depth, in [1, T]
      pfedgpa_ddim_steps=0,     # DDIM steps to reach s (0 = all s)
      pfedgpa_inversion="ddim",  # ddim (the paper's) | noise (x_s ~ q(x_s | x_0), SDEdit-like)
      pfedgpa_fixed_point_iters=0,  # refinement of each inversion step (0 = plain DDIM)
      pfedgpa_buffer=40,        # recent uploads kept for online training (>= clients_per_round)
      pfedgpa_train_steps=50,   # denoiser Adam steps per round
      pfedgpa_batch=16,         # denoiser batch (uploads)
      pfedgpa_lr=1e-3,          # denoiser Adam learning rate
      pfedgpa_aggregation="diffusion",  # diffusion | mean (plain averaging) | identity (none)
      pfedgpa_omega=0.5,        # newcomers' guidance weight
      pfedgpa_init_rounds=2,    # newcomers' initialisation rounds I (within newcomer_steps)
      pfedgpa_guidance="update",  # update | as_written (sign of the guidance; see algorithm.py)
      model="mlp",              # mlp | simple_cnn | cnn4 | resnet18 | fedpac_cnn
      conv_impl="auto",         # auto (CPU: per model, see models/conv.py) | xla | im2col
      seed=0,
      # execution
      chunk_size=0,             # clients per vmapped computation; 0 = automatic
      steps_per_call=-1,        # -1 automatic; 0 one jitted round; k host loop of k-step blocks
      num_devices=1,            # shard the client axis over this many devices (0 = all)
      # outputs
      eval_every=5,
      eval_batch_size=1000,
      checkpoint_every=10,      # rounds; 0 = only at the end
      show_label_counts=False,  # print each client's label counts before training
      progress=True,
  ))


def builtin_experiments() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(_configs.__path__)
                if not m.name.startswith("_"))


def load_config(experiment: str) -> ml_collections.ConfigDict:
  """A built-in experiment name, or a path to a Python file defining `get_config()`."""
  if experiment.endswith(".py") or os.sep in experiment:
    if not os.path.isfile(experiment):
      raise FileNotFoundError(f"Config file {experiment!r} does not exist.")
    spec = importlib.util.spec_from_file_location("_fedjax_gen_user_config", experiment)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  elif experiment in builtin_experiments():
    module = importlib.import_module(f"fedjax_gen.configs.{experiment}")
  else:
    raise ValueError(f"Unknown experiment {experiment!r}; built-in experiments: "
                     f"{', '.join(builtin_experiments())} (or pass a path to a config file "
                     "defining get_config()).")
  if not hasattr(module, "get_config"):
    raise ValueError(f"Config {experiment!r} defines no get_config().")
  config = module.get_config()
  config.experiment = os.path.splitext(os.path.basename(experiment))[0]
  return config


def _parse(key: str, text: str, current):
  if isinstance(current, bool):
    if text.lower() in ("1", "true", "yes", "on"):
      return True
    if text.lower() in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"{key}={text!r}: expected true or false.")
  for kind in (int, float):
    if isinstance(current, kind):
      try:
        return kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
      except ValueError:
        raise ValueError(f"{key}={text!r}: expected a number ({kind.__name__}).") from None
  return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]
                    ) -> ml_collections.ConfigDict:
  """Applies `KEY=VALUE` strings, each typed like the key's current value."""
  config = config.copy_and_resolve_references()
  for item in overrides:
    if "=" not in item:
      raise ValueError(f"Override {item!r} is not KEY=VALUE (e.g. alpha=0.1).")
    key, text = item.split("=", 1)
    key = key.strip()
    if key not in config:
      raise ValueError(f"Unknown config key {key!r}; valid keys: {', '.join(sorted(config))}.")
    with config.ignore_type():
      config[key] = _parse(key, text.strip(), config[key])
  return config


def num_holdout(num_clients: int, fraction: float) -> int:
  return int(round(num_clients * fraction))


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad value and how to fix it (cheap checks only)."""
  from fedjax_gen.algorithms.registry import check_algorithm
  from fedjax_gen.algorithms.server_optimizers import SERVER_OPTIMIZERS
  from fedjax_gen.data import DATASETS, PARTITIONS
  from fedjax_gen.models import MODELS

  c = config
  from fedjax_gen.models.conv import CONV_IMPLS
  for key, valid in (("dataset", DATASETS), ("partition", PARTITIONS), ("model", MODELS),
                     ("server_optimizer", SERVER_OPTIMIZERS), ("conv_impl", CONV_IMPLS)):
    if c[key] not in valid:
      raise ValueError(f"Unknown {key} {c[key]!r}; valid names: {', '.join(valid)}.")
  check_algorithm(c.algorithm)

  def positive(key):
    if not c[key] > 0:
      raise ValueError(f"{key} must be > 0, got {c[key]}.")

  for key in ("batch_size", "rounds", "lr", "num_clients", "clients_per_round",
              "eval_every", "eval_batch_size"):
    positive(key)
  if c.partition in ("dirichlet", "quantity") and not c.alpha > 0:
    raise ValueError(f"alpha must be > 0 for partition={c.partition}, got {c.alpha}: "
                     "small alpha (e.g. 0.1) is very non-IID, large (e.g. 100) near IID.")
  num_classes = DATASET_CLASSES[c.dataset]
  if (c.partition in ("label_k", "pathological")
      and not 1 <= c.classes_per_client <= num_classes):
    raise ValueError(f"classes_per_client={c.classes_per_client} is outside [1, "
                     f"{num_classes}]: {c.dataset} has {num_classes} classes.")
  if c.clients_per_round > c.num_clients:
    raise ValueError(f"clients_per_round={c.clients_per_round} exceeds num_clients="
                     f"{c.num_clients}; sample at most num_clients clients per round.")
  if not 0 <= c.holdout_clients < 1:
    raise ValueError(f"holdout_clients must be a fraction in [0, 1), got "
                     f"{c.holdout_clients}.")
  training = c.num_clients - num_holdout(c.num_clients, c.holdout_clients)
  if c.clients_per_round > training:
    raise ValueError(f"clients_per_round={c.clients_per_round} exceeds the {training} "
                     f"clients left to train after holding out {c.holdout_clients:.0%}.")
  for key in ("finetune_steps", "newcomer_steps"):
    if c[key] < 0:
      raise ValueError(f"{key} must be >= 0 (local steps), got {c[key]}.")
  if not [n for n in c.personal_layers.split(",") if n.strip()]:
    raise ValueError("personal_layers is empty; name the layers kept local, e.g. head.")
  if c.local_steps < 0:
    raise ValueError(f"local_steps must be >= 0 (0 = train by local_epochs), got "
                     f"{c.local_steps}.")
  if c.local_steps == 0 and c.local_epochs < 1:
    raise ValueError(f"local_epochs must be >= 1 when local_steps=0, got {c.local_epochs}.")
  if not 0 <= c.momentum < 1:
    raise ValueError(f"momentum must be in [0, 1), got {c.momentum}.")
  if not 0 <= c.test_fraction < 1:
    raise ValueError(f"test_fraction must be in [0, 1), got {c.test_fraction}.")
  for key in ("checkpoint_every", "weight_decay", "prox_mu", "server_lr", "chunk_size",
              "num_devices"):
    if c[key] < 0:
      raise ValueError(f"{key} must be >= 0, got {c[key]}.")
  if c.steps_per_call < -1:
    raise ValueError(f"steps_per_call must be -1 (auto), 0 or positive, got "
                     f"{c.steps_per_call}.")
  from fedjax_gen.genaug.pipeline import check_config
  check_config(c)
  if c.algorithm == "pfedgpa":
    from fedjax_gen.pfedgpa import check_options, options_from_config
    check_options(options_from_config(c), c.clients_per_round)
