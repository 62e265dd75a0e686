"""fedjax-gen: fast vectorized federated learning simulation in JAX/Flax.

The public API (import from here, not from submodules):

  train_and_evaluate(config, workdir, *, model=, dataset=, algorithm=)   the trainer
  evaluate_checkpoint(workdir, overrides), train_ddpm(config, workdir)
  load_config(name_or_path), apply_overrides(config, ["key=value", ...]), base_config()
  Simulation, ExecutionPlan, LocalSchedule    the vmapped round engine
  FederatedAlgorithm, make_algorithm, fedavg, fedprox, scaffold, fednova    algorithms
  load_dataset, make_federated_data, partition          data
  get_model, init_params                                Flax models

The package is layered (ARCHITECTURE.md): types -> data, models -> engine, diffusion ->
algorithms, augment -> trainer -> config, configs -> cli.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Names -> the module that defines them, imported on first use (PEP 562): `import
# fedjax_gen.cli` (the command line) and `fedjax-gen --version` do not wait for JAX.
_EXPORTS = {
    "fedavg": "algorithms", "fednova": "algorithms", "fedprox": "algorithms",
    "make_algorithm": "algorithms", "scaffold": "algorithms",
    "apply_overrides": "config", "base_config": "config", "load_config": "config",
    "load_dataset": "data", "make_federated_data": "data", "partition": "data",
    "Evaluator": "engine", "ExecutionPlan": "engine", "LocalSchedule": "engine",
    "Simulation": "engine", "masked_cross_entropy": "engine",
    "get_model": "models", "init_params": "models",
    "evaluate_checkpoint": "trainer", "train_and_evaluate": "trainer", "train_ddpm": "trainer",
    "Batch": "types", "FederatedAlgorithm": "types",
}

if TYPE_CHECKING:  # what type checkers and IDEs see
  from fedjax_gen.algorithms import fedavg, fednova, fedprox, make_algorithm, scaffold
  from fedjax_gen.config import apply_overrides, base_config, load_config
  from fedjax_gen.data import load_dataset, make_federated_data, partition
  from fedjax_gen.engine import (Evaluator, ExecutionPlan, LocalSchedule, Simulation,
                                 masked_cross_entropy)
  from fedjax_gen.models import get_model, init_params
  from fedjax_gen.trainer import evaluate_checkpoint, train_and_evaluate, train_ddpm
  from fedjax_gen.types import Batch, FederatedAlgorithm


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'fedjax_gen' has no attribute {name!r}")
  value = getattr(importlib.import_module(f"fedjax_gen.{_EXPORTS[name]}"), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted([*globals(), *_EXPORTS])


__all__ = [
    "Batch", "Evaluator", "ExecutionPlan", "FederatedAlgorithm", "LocalSchedule",
    "Simulation", "apply_overrides", "base_config", "evaluate_checkpoint", "fedavg",
    "fednova", "fedprox", "get_model", "init_params", "load_config", "load_dataset",
    "make_algorithm", "make_federated_data", "masked_cross_entropy", "partition", "scaffold",
    "train_and_evaluate", "train_ddpm",
]
