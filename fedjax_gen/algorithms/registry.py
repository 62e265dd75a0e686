"""Algorithm names of the config, mapped to their factories."""

from __future__ import annotations

import optax

from fedjax_gen.algorithms import base
from fedjax_gen.algorithms.fedavg import fedavg
from fedjax_gen.algorithms.fednova import fednova
from fedjax_gen.algorithms.fedprox import fedprox
from fedjax_gen.algorithms.scaffold import scaffold
from fedjax_gen.algorithms.server_optimizers import server_optimizer

# FedAvgM / FedAdam / FedYogi are FedAvg with that server optimizer.
_SERVER_OPT_OF = {"fedavgm": "momentum", "fedadam": "adam", "fedyogi": "yogi"}
ALGORITHMS = ("fedavg", "fedprox", "scaffold", "fednova", "fedavgm", "fedadam", "fedyogi")


def check_algorithm(name: str) -> None:
  if name not in ALGORITHMS:
    raise ValueError(f"Unknown algorithm {name!r}; valid names: {', '.join(ALGORITHMS)}.")


def make_algorithm(name: str, loss_fn: base.LossFn, *, lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0, num_clients: int,
                   server_optimizer_name: str = "sgd", server_lr: float | None = None,
                   server_momentum: float = 0.9, prox_mu: float = 0.01
                   ) -> base.FederatedAlgorithm:
  """Builds algorithm `name` with local SGD(lr, momentum, weight_decay)."""
  check_algorithm(name)
  client_opt = optax.chain(optax.add_decayed_weights(weight_decay),
                           optax.sgd(lr, momentum=momentum or None))
  server_opt = server_optimizer(_SERVER_OPT_OF.get(name, server_optimizer_name), server_lr,
                                server_momentum)
  if name == "fedprox":
    return fedprox(loss_fn, client_opt, server_opt, mu=prox_mu)
  if name == "scaffold":
    return scaffold(loss_fn, client_opt, server_opt, lr=lr, num_clients=num_clients)
  if name == "fednova":
    return fednova(loss_fn, client_opt, server_opt, momentum=momentum)
  return fedavg(loss_fn, client_opt, server_opt)
