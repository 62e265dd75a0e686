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

from fedjax_gen.algorithms import fedavg, fednova, fedprox, make_algorithm, scaffold
from fedjax_gen.config import apply_overrides, base_config, load_config
from fedjax_gen.data import load_dataset, make_federated_data, partition
from fedjax_gen.engine import (Evaluator, ExecutionPlan, LocalSchedule, Simulation,
                               masked_cross_entropy)
from fedjax_gen.models import get_model, init_params
from fedjax_gen.trainer import evaluate_checkpoint, train_and_evaluate, train_ddpm
from fedjax_gen.types import Batch, FederatedAlgorithm

__version__ = "0.1.0"

__all__ = [
    "Batch", "Evaluator", "ExecutionPlan", "FederatedAlgorithm", "LocalSchedule",
    "Simulation", "apply_overrides", "base_config", "evaluate_checkpoint", "fedavg",
    "fednova", "fedprox", "get_model", "init_params", "load_config", "load_dataset",
    "make_algorithm", "make_federated_data", "masked_cross_entropy", "partition", "scaffold",
    "train_and_evaluate", "train_ddpm",
]
