"""Every key a run understands: the common ones at the top level, each family's nested
(`data.*`, `fl.*`, `personalized.*`, `genaug.*`, `genfl.*`, `pfedgpa.*`, `run.*`,
`ddpm.*`), each declared beside the code that reads it; and what a resumed or
re-evaluated run may change, read from each key's `Option.role`."""

from __future__ import annotations

import difflib
import json
import math
from typing import Any, Iterable

import ml_collections

from fedjax_gen import models
from fedjax_gen.algorithms import pfedgpa
from fedjax_gen.algorithms.registry import FL_OPTIONS, PERSONALIZED_OPTIONS, check_options
from fedjax_gen.data import options as data_options
from fedjax_gen.privacy import dp as dp_lib
from fedjax_gen.trainer import ddpm_options, generation, plan, sweep_options
from fedjax_gen.types import Option

TOP = (
    Option("dataset", "digits", "digits | fashion_mnist | mnist | cifar10 | cifar100 | emnist"),
    Option("partition", "dirichlet", "iid | dirichlet | label_k | pathological | shards | "
           "quantity"),
    Option("alpha", 0.5, "Dirichlet concentration (dirichlet, quantity)"),
    Option("classes_per_client", 2, "k of label_k (#C=k) and pathological"),
    Option("num_clients", 20, "clients in the population"),
    Option("clients_per_round", 10, "clients sampled each round"),
    Option("rounds", 50, "federated rounds", "free"),
    Option("local_epochs", 1, "local epochs per round (when local_steps == 0)"),
    Option("local_steps", 0, "> 0: fixed local steps per round instead of epochs"),
    Option("batch_size", 32, "local batch size"),
    Option("lr", 0.01, "local learning rate"),
    Option("momentum", 0.0, "local SGD momentum"),
    Option("algorithm", "fedavg", "fedavg | fedprox | scaffold | fednova | fedavgm | fedadam "
           "| fedyogi | personalized ones | gen_fedsd | genfl | aigc_only | pfedgpa"),
    Option("model", "mlp", "mlp | simple_cnn | cnn4 | resnet18 | fedpac_cnn"),
    Option("seed", 0, "partition, initialisation and sampling seed"),
    Option("eval_every", 5, "rounds between evaluations"),
    Option("checkpoint_every", 10, "rounds between checkpoints; 0 = only at the end", "free"),
    Option("progress", True, "show a progress bar", "free"),
    Option("task", "classify", "classify | ddpm (train a generator)"),
)

FAMILIES: dict[str, tuple[Option, ...]] = {
    "data": data_options.OPTIONS,
    "fl": FL_OPTIONS,
    "personalized": PERSONALIZED_OPTIONS,
    "genaug": generation.OPTIONS,
    "genfl": generation.GENFL_OPTIONS,
    "pfedgpa": pfedgpa.OPTIONS,
    "run": plan.OPTIONS,
    "ddpm": ddpm_options.OPTIONS,
    "dp": dp_lib.OPTIONS,
    "sweep": sweep_options.OPTIONS,
}

# Keys of the flat config of earlier versions -> their nested names (old work folders
# resume; an old name on the command line is answered with the new one).
RENAMED = {
    "data_dir": "data.dir", "data_source": "data.source",
    "generator_sample_steps": "genaug.sample_steps", "generator_guidance": "genaug.guidance",
    "generator_batch_size": "genaug.batch_size", "generated_cache_dir": "genaug.cache_dir",
    "genaug_base_algorithm": "genaug.base_algorithm",
    **{o.name: f"data.{o.name}" for o in data_options.OPTIONS
       if o.name not in ("dir", "source", "layout")},  # layout: never a flat key
    **{o.name: f"fl.{o.name}" for o in FL_OPTIONS},
    **{o.name: f"personalized.{o.name}" for o in PERSONALIZED_OPTIONS},
    **{o.name: f"genaug.{o.name}" for o in generation.OPTIONS
       if o.name in ("generator", "generator_dir", "sd_model", "sd_revision", "sd_dtype",
                     "fill_rule", "fill_budget")},
    **{f"genfl_{o.name}": f"genfl.{o.name}" for o in generation.GENFL_OPTIONS},
    **{f"pfedgpa_{o.name}": f"pfedgpa.{o.name}" for o in pfedgpa.OPTIONS},
    **{o.name: f"run.{o.name}" for o in plan.OPTIONS},
    **{o.name: f"ddpm.{o.name}" for o in ddpm_options.OPTIONS},
}


def all_options() -> dict[str, Option]:
  """Every key, dotted ("genfl.lam_policy"), with its declaration."""
  keys = {o.name: o for o in TOP}
  for family, options in FAMILIES.items():
    keys.update({f"{family}.{o.name}": o for o in options})
  return keys


def base_config() -> ml_collections.ConfigDict:
  """Every key a run understands, with its default (experiments override a few)."""
  config = {o.name: o.default for o in TOP}
  for family, options in FAMILIES.items():
    config[family] = {o.name: o.default for o in options}
  return ml_collections.ConfigDict(config)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """A (nested) config or dict as {"family.key": value}."""
  items = tree.items() if hasattr(tree, "items") else ()
  out = {}
  for key, value in items:
    if hasattr(value, "items"):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """The config of a run's `config.json` (nested, or flat from an earlier version), over
  this version's defaults; entries of no key of this version are kept at the top level."""
  config = base_config()
  for key, value in flatten(saved).items():
    key = RENAMED.get(key, key)
    family, _, name = key.rpartition(".")
    with config.ignore_type():
      if family and family in config and name in config[family]:
        config[family][name] = value
      elif not family:
        config[key] = value
  return config


def applies(option: Option, algorithm: str) -> bool:
  return not option.algorithms or algorithm in option.algorithms


def identity(config: dict, allowed: Iterable[str] = ("free",),
             algorithm: str | None = None) -> dict:
  """The dotted keys that fix what a run computes, with their values: the flattened config
  (nested dict as `config.to_json` writes it; old flat names renamed, keys added since at
  their defaults) without the keys whose role is in `allowed` or that `algorithm` (the
  config's own by default) does not read (`Option.algorithms`). Keys this version no
  longer has stay."""
  options = all_options()
  flat = {**flatten(json.loads(base_config().to_json())),
          **{RENAMED.get(k, k): v for k, v in flatten(config).items()}}
  algorithm = flat.get("algorithm", "") if algorithm is None else algorithm
  skip = {k for k, o in options.items() if o.role in allowed or not applies(o, algorithm)}
  return {k: v for k, v in flat.items() if k not in skip}


def changed(saved: dict, current: dict, allowed: Iterable[str] = ("free",)) -> list[str]:
  """The dotted keys that differ between two configs (nested dicts as `config.to_json`
  writes them) and whose role is not in `allowed`; keys the current algorithm does not read
  (`Option.algorithms`) do not count. Keys this version no longer has do."""
  algorithm = current.get("algorithm", "")
  old, new = identity(saved, allowed, algorithm), identity(current, allowed, algorithm)
  return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def validate(c: ml_collections.ConfigDict, *, custom_model: bool = False,
             custom_dataset: bool = False, custom_algorithm: bool = False) -> None:
  """Raises ValueError naming the bad value and how to fix it (cheap checks only: no data
  is read). Each family is checked by the code that reads it. The `custom_*` flags skip the
  names a passed model, dataset or algorithm replaces."""
  def positive(key):
    if not c[key] > 0:
      raise ValueError(f"{key} must be > 0, got {c[key]}.")

  for key, value in flatten(c).items():
    if isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f"{key}={value} is not a finite number; give a finite value.")
  if isinstance(c.seed, bool) or not isinstance(c.seed, int) or not 0 <= c.seed < 2**32:
    raise ValueError(f"seed must be an integer in [0, 2**32), got {c.seed!r}.")

  for key in ("batch_size", "rounds", "lr", "num_clients", "clients_per_round", "eval_every"):
    positive(key)
  if not custom_model and c.model not in models.MODELS:
    raise ValueError(f"Unknown model {c.model!r}; valid names: {', '.join(models.MODELS)}.")
  if c.task not in ("classify", "ddpm"):
    raise ValueError(f"Unknown task {c.task!r}; valid: classify, ddpm.")
  if c.clients_per_round > c.num_clients:
    raise ValueError(f"clients_per_round={c.clients_per_round} exceeds num_clients="
                     f"{c.num_clients}; sample at most num_clients clients per round.")
  if c.local_steps < 0:
    raise ValueError(f"local_steps must be >= 0 (0 = train by local_epochs), got "
                     f"{c.local_steps}.")
  if c.local_steps == 0 and c.local_epochs < 1:
    raise ValueError(f"local_epochs must be >= 1 when local_steps=0, got {c.local_epochs}.")
  if not 0 <= c.momentum < 1:
    raise ValueError(f"momentum must be in [0, 1), got {c.momentum}.")
  if c.checkpoint_every < 0:
    raise ValueError(f"checkpoint_every must be >= 0, got {c.checkpoint_every}.")
  if custom_dataset:
    if not 0 <= c.data.test_fraction < 1:
      raise ValueError(f"data.test_fraction must be in [0, 1), got {c.data.test_fraction}.")
  else:
    data_options.check_options(c)
  if custom_algorithm:
    c = c.copy_and_resolve_references()
    c.algorithm = "fedavg"  # the other families' checks, as for any run
  check_options(c)
  training = c.num_clients - round(c.num_clients * c.personalized.holdout_clients)
  if c.clients_per_round > training:
    raise ValueError(f"clients_per_round={c.clients_per_round} exceeds the {training} "
                     f"clients left to train after holding out "
                     f"{c.personalized.holdout_clients:.0%}.")
  generation.check_options(c)
  plan.check_options(c)
  sweep_options.check_options(c)
  if c.dp.enabled:
    algorithm = "fedavg" if c.task == "ddpm" else generation.fl_algorithm_name(c)
    dp_lib.check(algorithm, clip_norm=c.dp.clip_norm, noise_multiplier=c.dp.noise_multiplier,
                 delta=c.dp.delta, target_epsilon=c.dp.target_epsilon,
                 num_clients=training if c.task != "ddpm" else c.num_clients)
  if c.algorithm == "pfedgpa":
    pfedgpa.check_options(pfedgpa.options_from_config(c), c.clients_per_round)
  if c.task == "ddpm":
    ddpm_options.check_options(c)


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
        if kind is int and not text.lstrip("+-").isdigit() and float(text).is_integer():
          return int(float(text))  # 1e3
        return kind(text)
      except (ValueError, OverflowError):
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"{key}={text!r}: expected {expected}.") from None
  return text


def _unknown(key: str, config) -> ValueError:
  if key in RENAMED:
    return ValueError(f"Config key {key!r} is now {RENAMED[key]!r} (options are nested by "
                      f"family); write {RENAMED[key]}=...")
  keys = list(dict.fromkeys([*all_options(), *(
      k for k in config if not isinstance(config[k], ml_collections.ConfigDict))]))
  close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
  if not close:  # a nested key's bare name, or near it: `min_size` for `data.min_client_size`
    by_name = {}
    for k in keys:
      by_name.setdefault(k.rpartition(".")[2], []).append(k)
    names = difflib.get_close_matches(key.rpartition(".")[2], by_name, n=3, cutoff=0.6)
    close = [k for name in names for k in by_name[name]][:3]
  hint = f"did you mean {' or '.join(close)}? " if close else ""
  return ValueError(f"Unknown config key {key!r}; {hint}`fedjax-gen config EXPERIMENT` "
                    "lists every key with its meaning.")


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]
                    ) -> ml_collections.ConfigDict:
  """Applies `KEY=VALUE` strings (`lr=0.1`, `genfl.lam_policy=cos`), each typed like the
  key's current value."""
  config = config.copy_and_resolve_references()
  for item in overrides:
    if "=" not in item:
      raise ValueError(f"Override {item!r} is not KEY=VALUE (e.g. alpha=0.1).")
    key, text = item.split("=", 1)
    key = key.strip()
    family, _, name = key.rpartition(".")
    node = config
    if family:
      if family not in config or not isinstance(config[family], ml_collections.ConfigDict):
        raise _unknown(key, config)
      node = config[family]
    if name not in node or isinstance(node[name], ml_collections.ConfigDict):
      raise _unknown(key, config)
    with node.ignore_type():
      node[name] = _parse(key, text.strip(), node[name])
  return config
