"""Server optimizers on the aggregated pseudo-gradient, as optax transformations.

FedAvg is plain SGD with learning rate 1 on `global - mean(local)`; FedAvgM adds server
momentum (Hsu et al. 2019, arXiv 1909.06335); FedAdam and FedYogi use adaptive server
steps (Reddi et al. 2021, "Adaptive Federated Optimization", arXiv 2003.00295), with
beta1=0.9, beta2=0.99 and adaptivity tau=1e-3 as in that paper.
"""

from __future__ import annotations

import jax
import optax

SERVER_OPTIMIZERS = ("sgd", "momentum", "adam", "yogi")
DEFAULT_SERVER_LR = {"sgd": 1.0, "momentum": 1.0, "adam": 0.01, "yogi": 0.01}


def server_optimizer(name: str = "sgd", lr: float | None = None,
                     momentum: float = 0.9) -> optax.GradientTransformation:
  if name not in SERVER_OPTIMIZERS:
    raise ValueError(f"Unknown server optimizer {name!r}; valid names: "
                     f"{', '.join(SERVER_OPTIMIZERS)}.")
  lr = DEFAULT_SERVER_LR[name] if lr is None else lr
  if not isinstance(lr, jax.Array) and lr <= 0:  # a traced lr was checked in its config
    raise ValueError(f"server_lr must be > 0, got {lr}.")
  if name == "sgd":
    return optax.sgd(lr)
  if name == "momentum":
    return optax.sgd(lr, momentum=momentum)
  if name == "adam":
    return optax.adam(lr, b1=0.9, b2=0.99, eps=1e-3)
  return optax.yogi(lr, b1=0.9, b2=0.99, eps=1e-3)
