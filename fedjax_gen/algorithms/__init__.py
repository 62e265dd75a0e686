"""Federated algorithms as small sets of pure functions (see `base.FederatedAlgorithm`)."""

from fedjax_gen.algorithms.base import (Batch, FederatedAlgorithm, LocalState, LossFn,
                                        ServerState, weighted_mean)
from fedjax_gen.algorithms.fedavg import fedavg
from fedjax_gen.algorithms.fednova import fednova
from fedjax_gen.algorithms.fedprox import fedprox, proximal_loss
from fedjax_gen.algorithms.scaffold import scaffold
from fedjax_gen.algorithms.server_optimizers import SERVER_OPTIMIZERS, server_optimizer
from fedjax_gen.algorithms.apfl import apfl
from fedjax_gen.algorithms.base import Adaptation
from fedjax_gen.algorithms.ditto import ditto
from fedjax_gen.algorithms.finetune import finetune
from fedjax_gen.algorithms.perfedavg import perfedavg
from fedjax_gen.algorithms.personalized import (fedavg_ft, fedbabu, fedrep, local_only,
                                                partial_personalization)
from fedjax_gen.algorithms.pfedme import pfedme
from fedjax_gen.algorithms import genfl as _genfl_module  # noqa: F401  (algorithms.genfl)
from fedjax_gen.algorithms import pfedgpa
from fedjax_gen.algorithms.genfl import aigc_only, genfl
from fedjax_gen.algorithms.registry import ALGORITHMS, PERSONALIZED, make_algorithm

__all__ = [
    "Adaptation", "PERSONALIZED", "apfl", "ditto", "fedavg_ft", "fedbabu", "fedrep",
    "finetune", "local_only", "partial_personalization", "perfedavg", "pfedme",
    "ALGORITHMS", "Batch", "FederatedAlgorithm", "LocalState", "LossFn", "SERVER_OPTIMIZERS",
    "ServerState", "aigc_only", "fedavg", "genfl", "pfedgpa", "fednova", "fedprox", "make_algorithm", "proximal_loss",
    "scaffold", "server_optimizer", "weighted_mean",
]
