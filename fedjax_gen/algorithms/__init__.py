"""Federated algorithms as small sets of pure functions (see `base.FederatedAlgorithm`)."""

from fedjax_gen.algorithms.base import (Batch, FederatedAlgorithm, LocalState, LossFn,
                                        ServerState, weighted_mean)
from fedjax_gen.algorithms.fedavg import fedavg
from fedjax_gen.algorithms.fednova import fednova
from fedjax_gen.algorithms.fedprox import fedprox, proximal_loss
from fedjax_gen.algorithms.scaffold import scaffold
from fedjax_gen.algorithms.server_optimizers import SERVER_OPTIMIZERS, server_optimizer
from fedjax_gen.algorithms.registry import ALGORITHMS, make_algorithm

__all__ = [
    "ALGORITHMS", "Batch", "FederatedAlgorithm", "LocalState", "LossFn", "SERVER_OPTIMIZERS",
    "ServerState", "fedavg", "fednova", "fedprox", "make_algorithm", "proximal_loss",
    "scaffold", "server_optimizer", "weighted_mean",
]
