"""Experiment configs: Python files with `get_config()` returning a `ConfigDict`.

`fedjax-gen run EXPERIMENT KEY=VALUE ...` loads a built-in config (`fedjax_gen/configs/`)
or a config file by path, applies the overrides (typed by the defaults; nested keys as
`genfl.lam_policy=cos`) and validates the result before any data is read. The keys, their
defaults and meanings are declared by the code that reads them (`trainer.options`);
`fedjax-gen config EXPERIMENT` prints them.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import os
import pkgutil

import ml_collections

from fedjax_gen.trainer.options import (FAMILIES, TOP, all_options, apply_overrides,
                                        base_config, flatten, validate)

__all__ = ["apply_overrides", "base_config", "builtin_experiments", "describe",
           "load_config", "validate"]

_CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def builtin_experiments() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules([_CONFIGS_DIR])
                if not m.name.startswith("_"))


def load_config(experiment: str) -> ml_collections.ConfigDict:
  """A built-in experiment name, or a path to a Python file defining `get_config()` that
  returns a full config (start from `fedjax_gen.config.base_config()`)."""
  if experiment.endswith(".py") or os.sep in experiment:
    if os.path.isdir(experiment):
      raise ValueError(f"Config {experiment!r} is a folder; pass a Python file defining "
                       "get_config(), or a built-in experiment name (`fedjax-gen list`).")
    if not os.path.isfile(experiment):
      raise FileNotFoundError(f"Config file {experiment!r} does not exist; pass a Python "
                              "file defining get_config(), or a built-in experiment name "
                              "(`fedjax-gen list`).")
    spec = importlib.util.spec_from_file_location("_fedjax_gen_user_config", experiment)
    module = importlib.util.module_from_spec(spec)
    try:
      spec.loader.exec_module(module)
    except SyntaxError as e:
      raise ValueError(f"Config file {experiment!r}, line {e.lineno}: {e.msg}; fix the "
                       "Python syntax there.") from None
    except Exception as e:
      raise ValueError(f"Config file {experiment!r} failed to load: {type(e).__name__}: "
                       f"{e}.") from None
  elif experiment in builtin_experiments():
    module = importlib.import_module(f"fedjax_gen.configs.{experiment}")
  else:
    close = difflib.get_close_matches(experiment, builtin_experiments(), n=3)
    raise ValueError(f"Unknown experiment {experiment!r}"
                     + (f" (did you mean {' or '.join(close)}?)" if close else "")
                     + f"; built-in experiments: {', '.join(builtin_experiments())} (or pass "
                     "a path to a config file defining get_config()).")
  if not callable(getattr(module, "get_config", None)):
    raise ValueError(f"Config {experiment!r} defines no get_config().")
  try:
    config = module.get_config()
  except Exception as e:
    raise ValueError(f"get_config() of {experiment!r} raised {type(e).__name__}: {e}.") from None
  if isinstance(config, dict):
    config = ml_collections.ConfigDict(config)
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f"get_config() of {experiment!r} returned a {type(config).__name__}; "
                     "return an ml_collections.ConfigDict (start from "
                     "fedjax_gen.config.base_config()).")
  missing = sorted(set(flatten(json.loads(base_config().to_json())))
                   - set(flatten(json.loads(config.to_json()))))
  if missing:
    raise ValueError(f"get_config() of {experiment!r} lacks {len(missing)} keys "
                     f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); start "
                     "from `config = fedjax_gen.config.base_config()` and change what you need.")
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
