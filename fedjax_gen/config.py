"""Experiment configs: Python files with `get_config()` returning a `ConfigDict`.

`fedjax-gen run EXPERIMENT KEY=VALUE ...` loads a built-in config (`fedjax_gen/configs/`)
or a config file by path, applies the overrides (typed by the defaults; nested keys as
`genfl.lam_policy=cos`) and validates the result before any data is read. The keys, their
defaults and meanings are declared by the code that reads them (`trainer.options`);
`fedjax-gen config EXPERIMENT` prints them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil

import ml_collections

from fedjax_gen.trainer.options import (FAMILIES, TOP, all_options, apply_overrides,
                                        base_config, validate)

__all__ = ["apply_overrides", "base_config", "builtin_experiments", "describe",
           "load_config", "validate"]

_CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def builtin_experiments() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules([_CONFIGS_DIR])
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


def describe(config: ml_collections.ConfigDict) -> str:
  """The resolved config, one `key = value  # meaning` line per key, by family."""
  meaning = all_options()
  top = {o.name for o in TOP}
  lines = []

  def line(key, value):
    option = meaning.get(key)
    note = f"  # {option.help}" if option else ""
    if option and option.role != "train":
      note += f" [{option.role}]"
    lines.append(f"{key} = {value!r}{note}")

  for key in config:
    if not isinstance(config[key], ml_collections.ConfigDict) and (key in top
                                                                   or key not in FAMILIES):
      line(key, config[key])
  for family in config:
    if isinstance(config[family], ml_collections.ConfigDict):
      lines.append(f"\n# {family}.*")
      for name in config[family]:
        line(f"{family}.{name}", config[family][name])
  lines.append("\n# roles: [free] a resume or `eval` may change it; [eval] `eval` may; "
               "[sample] a DDPM resume may; others fix what a run computes.")
  return "\n".join(lines)
