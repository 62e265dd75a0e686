"""fedjax-gen: fast vectorized federated learning simulation in JAX/Flax.

The public API (import from here, not from submodules):

  train_and_evaluate(config, workdir)   the trainer behind `fedjax-gen run`
  load_config(name_or_path), apply_overrides(config, ["key=value", ...])
  Simulation, ExecutionPlan, LocalSchedule    the vmapped round engine
  make_algorithm, fedavg, fedprox, scaffold, fednova    algorithms (pure functions)
  load_dataset, make_federated_data, partition          data
  get_model, init_params                                Flax models
"""

from fedjax_gen.algorithms import (FederatedAlgorithm, fedavg, fednova, fedprox,
                                   make_algorithm, scaffold)
from fedjax_gen.config import apply_overrides, load_config
from fedjax_gen.data import load_dataset, make_federated_data, partition
from fedjax_gen.engine import (Evaluator, ExecutionPlan, LocalSchedule, Simulation,
                               masked_cross_entropy)
from fedjax_gen.models import get_model, init_params
from fedjax_gen.run import train_and_evaluate

__version__ = "0.1.0"

__all__ = [
    "Evaluator", "ExecutionPlan", "FederatedAlgorithm", "LocalSchedule", "Simulation",
    "apply_overrides", "fedavg", "fednova", "fedprox", "get_model", "init_params",
    "load_config", "load_dataset", "make_algorithm", "make_federated_data",
    "masked_cross_entropy", "partition", "scaffold", "train_and_evaluate",
]
