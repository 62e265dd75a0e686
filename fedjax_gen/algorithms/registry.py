"""Algorithm names of the config, mapped to their factories, and the options they read:
`fl.*` (the FedAvg family's server and client optimizers) and `personalized.*`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fedjax_gen.algorithms import base
from fedjax_gen.algorithms import personalized as personal
from fedjax_gen.algorithms.apfl import apfl
from fedjax_gen.algorithms.ditto import ditto
from fedjax_gen.algorithms.fedavg import fedavg
from fedjax_gen.algorithms.fednova import fednova
from fedjax_gen.algorithms.fedprox import fedprox
from fedjax_gen.algorithms.layers import layer_mask, norm_mask
from fedjax_gen.algorithms.perfedavg import perfedavg
from fedjax_gen.algorithms.pfedgpa import PFedGPAOptions, pfedgpa
from fedjax_gen.algorithms.pfedme import pfedme
from fedjax_gen.algorithms.scaffold import scaffold
from fedjax_gen.algorithms.server_optimizers import (DEFAULT_SERVER_LR, SERVER_OPTIMIZERS,
                                                     server_optimizer)
from fedjax_gen.types import Option, options_of

# FedAvgM / FedAdam / FedYogi are FedAvg with that server optimizer.
_SERVER_OPT_OF = {"fedavgm": "momentum", "fedadam": "adam", "fedyogi": "yogi"}
STANDARD = ("fedavg", "fedprox", "scaffold", "fednova", "fedavgm", "fedadam", "fedyogi")
PERSONALIZED = ("local", "fedavg_ft", "fedper", "fedrep", "fedbabu", "fedbn", "ditto", "apfl",
                "pfedme", "perfedavg", "perfedavg_hf")
ALGORITHMS = STANDARD + PERSONALIZED
# Generative augmentation: built by the trainer, which generates data first (GenFL's and
# AIGC-only's server algorithms are `algorithms.genfl`).
GENERATIVE = ("gen_fedsd", "genfl", "aigc_only")
# Generative parameter aggregation: personalized, with a diffusion model over parameters.
GENERATIVE_AGGREGATION = ("pfedgpa",)

FL_OPTIONS = (
    Option("weight_decay", 0.0, "local SGD weight decay"),
    Option("prox_mu", 0.01, "FedProx's proximal weight mu", algorithms=("fedprox",)),
    Option("server_optimizer", "sgd", "sgd | momentum | adam | yogi (fedavgm, fedadam, "
           "fedyogi set it)"),
    Option("server_lr", 0.0, "server learning rate; 0 = the optimizer's default (1.0 for "
           "sgd and momentum, 0.01 adaptive)"),
    Option("server_momentum", 0.9, "server momentum (server_optimizer=momentum, fedavgm)"),
)

PERSONALIZED_OPTIONS = (
    Option("holdout_clients", 0.0, "fraction of clients that never train: new-client "
           "evaluation"),
    Option("finetune_steps", 10, "local steps before evaluation (fedavg_ft, fedbabu, "
           "perfedavg)", "eval"),
    Option("newcomer_steps", 10, "local steps a held-out client adapts with its recipe",
           "eval"),
    Option("personal_layers", "head", "comma-separated top-level layers kept local (fedper, "
           "fedrep, fedbabu)"),
    Option("fedrep_head_fraction", 0.5, "FedRep: share of local steps that train the head",
           algorithms=("fedrep",)),
    Option("ditto_lambda", 1.0, "Ditto's lambda", algorithms=("ditto",)),
    Option("apfl_alpha", 0.5, "APFL's initial mixing weight", algorithms=("apfl",)),
    Option("apfl_alpha_lr", 0.01, "APFL's mixing-weight learning rate", algorithms=("apfl",)),
    Option("pfedme_lambda", 15.0, "pFedMe's lambda (its beta is fl.server_lr)",
           algorithms=("pfedme",)),
    Option("pfedme_inner_steps", 5, "pFedMe's inner steps", algorithms=("pfedme",)),
    Option("pfedme_personal_lr", 0.01, "pFedMe's personal learning rate",
           algorithms=("pfedme",)),
    Option("perfedavg_alpha", 0.01, "Per-FedAvg's inner step (also its fine-tune lr)",
           algorithms=("perfedavg", "perfedavg_hf")),
    Option("perfedavg_beta", 0.001, "Per-FedAvg's outer step",
           algorithms=("perfedavg", "perfedavg_hf")),
)


def personal_layers(text: str) -> list[str]:
  return [n.strip() for n in str(text).split(",") if n.strip()]


def check_options(c) -> None:
  """The algorithm name, `c.fl` and `c.personalized` (cheap: no model needed)."""
  check_algorithm(c.algorithm)
  fl, p = c.fl, c.personalized
  if fl.server_optimizer not in SERVER_OPTIMIZERS:
    raise ValueError(f"Unknown fl.server_optimizer {fl.server_optimizer!r}; valid names: "
                     f"{', '.join(SERVER_OPTIMIZERS)}.")
  for key in ("weight_decay", "prox_mu", "server_lr"):
    if fl[key] < 0:
      raise ValueError(f"fl.{key} must be >= 0, got {fl[key]}.")
  if not 0 <= p.holdout_clients < 1:
    raise ValueError(f"personalized.holdout_clients must be a fraction in [0, 1), got "
                     f"{p.holdout_clients}.")
  for key in ("finetune_steps", "newcomer_steps"):
    if p[key] < 0:
      raise ValueError(f"personalized.{key} must be >= 0 (local steps), got {p[key]}.")
  if not personal_layers(p.personal_layers):
    raise ValueError("personalized.personal_layers is empty; name the layers kept local, "
                     "e.g. head.")


def check_algorithm(name: str) -> None:
  valid = ALGORITHMS + GENERATIVE + GENERATIVE_AGGREGATION
  if name not in valid:
    raise ValueError(f"Unknown algorithm {name!r}; valid names: {', '.join(valid)}.")


def make_algorithm(name: str, loss_fn: base.LossFn, *, lr: float, momentum: float = 0.0,
                   num_clients: int, params: base.Params = None, fl=None, personalized=None,
                   pfedgpa_options: PFedGPAOptions | None = None,
                   clients_per_round: int | None = None) -> base.FederatedAlgorithm:
  """Builds algorithm `name` with local SGD(lr, momentum, fl.weight_decay).

  `fl` and `personalized` are the options of those families (a config's `config.fl`,
  `config.personalized`, a dict, or None for the defaults). `params` (the initial model)
  is needed by the methods that split it into parts (`personal_layers` for
  FedPer/FedRep/FedBABU; normalisation layers for FedBN) and by pFedGPA (its tokens; its
  buffer checked against `clients_per_round`).
  """
  check_algorithm(name)
  if name in GENERATIVE:
    raise ValueError(f"{name} needs generated data: the trainer builds it "
                     "(fedjax_gen.trainer.generation).")
  f, p = options_of(FL_OPTIONS, fl), options_of(PERSONALIZED_OPTIONS, personalized)
  traced = lambda v: isinstance(v, jax.Array)  # runs side by side (`engine.runs`)
  client_opt = optax.chain(optax.add_decayed_weights(f.weight_decay), optax.sgd(
      lr, momentum=momentum if traced(momentum) else momentum or None))
  opt_name = _SERVER_OPT_OF.get(name, f.server_optimizer)
  server_lr = (jnp.where(f.server_lr > 0, f.server_lr, DEFAULT_SERVER_LR[opt_name])
               if traced(f.server_lr) else f.server_lr or None)  # 0: the default
  server_opt = server_optimizer(opt_name, server_lr, f.server_momentum)
  if name in ("fedper", "fedrep", "fedbabu"):
    head = layer_mask(params, personal_layers(p.personal_layers))
  if name == "pfedgpa":
    return pfedgpa(loss_fn, client_opt, params, pfedgpa_options or PFedGPAOptions(),
                   clients_per_round=clients_per_round)
  if name == "fedprox":
    return fedprox(loss_fn, client_opt, server_opt, mu=f.prox_mu)
  if name == "scaffold":
    return scaffold(loss_fn, client_opt, server_opt, lr=lr, num_clients=num_clients)
  if name == "fednova":
    return fednova(loss_fn, client_opt, server_opt, momentum=momentum)
  if name == "local":
    return personal.local_only(loss_fn, client_opt)
  if name == "fedavg_ft":
    return personal.fedavg_ft(loss_fn, client_opt, server_opt)
  if name == "fedper":
    return personal.partial_personalization(loss_fn, client_opt, server_opt, head)
  if name == "fedbn":
    return personal.partial_personalization(loss_fn, client_opt, server_opt,
                                                norm_mask(params))
  if name == "fedrep":
    return personal.fedrep(loss_fn, client_opt, server_opt, head,
                           head_fraction=p.fedrep_head_fraction)
  if name == "fedbabu":
    return personal.fedbabu(loss_fn, client_opt, server_opt, head)
  if name == "ditto":
    return ditto(loss_fn, client_opt, server_opt, lam=p.ditto_lambda)
  if name == "apfl":
    return apfl(loss_fn, client_opt, server_opt, alpha=p.apfl_alpha, alpha_lr=p.apfl_alpha_lr)
  if name == "pfedme":
    return pfedme(loss_fn, client_opt, server_opt, lam=p.pfedme_lambda,
                  inner_steps=p.pfedme_inner_steps, personal_lr=p.pfedme_personal_lr)
  if name in ("perfedavg", "perfedavg_hf"):
    return perfedavg(loss_fn, client_opt, server_opt, alpha=p.perfedavg_alpha,
                     beta=p.perfedavg_beta, hessian_free=name == "perfedavg_hf")
  return fedavg(loss_fn, client_opt, server_opt)
