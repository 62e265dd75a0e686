"""Algorithm names of the config, mapped to their factories."""

from __future__ import annotations

from typing import Sequence

import optax

from fedjax_gen.algorithms import base, personalized
from fedjax_gen.algorithms.apfl import apfl
from fedjax_gen.algorithms.ditto import ditto
from fedjax_gen.algorithms.fedavg import fedavg
from fedjax_gen.algorithms.fednova import fednova
from fedjax_gen.algorithms.fedprox import fedprox
from fedjax_gen.algorithms.layers import layer_mask, norm_mask
from fedjax_gen.algorithms.perfedavg import perfedavg
from fedjax_gen.algorithms.pfedme import pfedme
from fedjax_gen.algorithms.scaffold import scaffold
from fedjax_gen.algorithms.server_optimizers import server_optimizer

# FedAvgM / FedAdam / FedYogi are FedAvg with that server optimizer.
_SERVER_OPT_OF = {"fedavgm": "momentum", "fedadam": "adam", "fedyogi": "yogi"}
STANDARD = ("fedavg", "fedprox", "scaffold", "fednova", "fedavgm", "fedadam", "fedyogi")
PERSONALIZED = ("local", "fedavg_ft", "fedper", "fedrep", "fedbabu", "fedbn", "ditto", "apfl",
                "pfedme", "perfedavg", "perfedavg_hf")
ALGORITHMS = STANDARD + PERSONALIZED
# Generative augmentation (`fedjax_gen.genaug`): built by the trainer, which generates data first.
GENERATIVE = ("gen_fedsd", "genfl", "aigc_only")
# Generative parameter aggregation (`fedjax_gen.pfedgpa`): personalized, with a server-side
# diffusion model over client parameters.
GENERATIVE_AGGREGATION = ("pfedgpa",)


def check_algorithm(name: str) -> None:
  valid = ALGORITHMS + GENERATIVE + GENERATIVE_AGGREGATION
  if name not in valid:
    raise ValueError(f"Unknown algorithm {name!r}; valid names: {', '.join(valid)}.")


def make_algorithm(name: str, loss_fn: base.LossFn, *, lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0, num_clients: int,
                   server_optimizer_name: str = "sgd", server_lr: float | None = None,
                   server_momentum: float = 0.9, prox_mu: float = 0.01,
                   params: base.Params = None, personal_layers: Sequence[str] = ("head",),
                   fedrep_head_fraction: float = 0.5, ditto_lambda: float = 1.0,
                   apfl_alpha: float = 0.5, apfl_alpha_lr: float = 0.01,
                   pfedme_lambda: float = 15.0, pfedme_inner_steps: int = 5,
                   pfedme_personal_lr: float = 0.01, perfedavg_alpha: float = 0.01,
                   perfedavg_beta: float = 0.001, pfedgpa_options=None,
                   clients_per_round: int | None = None) -> base.FederatedAlgorithm:
  """Builds algorithm `name` with local SGD(lr, momentum, weight_decay).

  `params` (the initial model) is needed by the methods that split it into parts
  (`personal_layers` for FedPer/FedRep/FedBABU; normalisation layers for FedBN) and by
  pFedGPA (its tokens; `pfedgpa_options` a `fedjax_gen.pfedgpa.PFedGPAOptions`, its
  buffer checked against `clients_per_round`).
  """
  check_algorithm(name)
  if name in GENERATIVE:
    raise ValueError(f"{name} needs generated data: build it with "
                     "fedjax_gen.genaug.make_generative_algorithm (the trainer does).")
  client_opt = optax.chain(optax.add_decayed_weights(weight_decay),
                           optax.sgd(lr, momentum=momentum or None))
  server_opt = server_optimizer(_SERVER_OPT_OF.get(name, server_optimizer_name), server_lr,
                                server_momentum)
  if name in ("fedper", "fedrep", "fedbabu"):
    head = layer_mask(params, personal_layers)
  if name == "pfedgpa":
    from fedjax_gen.pfedgpa import PFedGPAOptions, pfedgpa  # imports algorithms.base
    return pfedgpa(loss_fn, client_opt, params, pfedgpa_options or PFedGPAOptions(),
                   clients_per_round=clients_per_round)
  if name == "fedprox":
    return fedprox(loss_fn, client_opt, server_opt, mu=prox_mu)
  if name == "scaffold":
    return scaffold(loss_fn, client_opt, server_opt, lr=lr, num_clients=num_clients)
  if name == "fednova":
    return fednova(loss_fn, client_opt, server_opt, momentum=momentum)
  if name == "local":
    return personalized.local_only(loss_fn, client_opt)
  if name == "fedavg_ft":
    return personalized.fedavg_ft(loss_fn, client_opt, server_opt)
  if name == "fedper":
    return personalized.partial_personalization(loss_fn, client_opt, server_opt, head)
  if name == "fedbn":
    return personalized.partial_personalization(loss_fn, client_opt, server_opt,
                                                norm_mask(params))
  if name == "fedrep":
    return personalized.fedrep(loss_fn, client_opt, server_opt, head,
                               head_fraction=fedrep_head_fraction)
  if name == "fedbabu":
    return personalized.fedbabu(loss_fn, client_opt, server_opt, head)
  if name == "ditto":
    return ditto(loss_fn, client_opt, server_opt, lam=ditto_lambda)
  if name == "apfl":
    return apfl(loss_fn, client_opt, server_opt, alpha=apfl_alpha, alpha_lr=apfl_alpha_lr)
  if name == "pfedme":
    return pfedme(loss_fn, client_opt, server_opt, lam=pfedme_lambda,
                  inner_steps=pfedme_inner_steps, personal_lr=pfedme_personal_lr)
  if name in ("perfedavg", "perfedavg_hf"):
    return perfedavg(loss_fn, client_opt, server_opt, alpha=perfedavg_alpha,
                     beta=perfedavg_beta, hessian_free=name == "perfedavg_hf")
  return fedavg(loss_fn, client_opt, server_opt)
