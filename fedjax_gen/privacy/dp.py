"""Client-level differential privacy for algorithms whose upload is a model update.

DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent Language Models",
ICLR 2018): every sampled client's upload is clipped to L2 norm `clip_norm`, the server
averages the clipped uploads with equal weights (example counts would depend on the
clients' data) and adds Gaussian noise of std `noise_multiplier * clip_norm` to their sum,
all inside the jitted round. The noise of the r-th aggregation is drawn from
`fold_in(key, r)`, so a run is deterministic and resumes exactly. `accounting.py` turns the noise, the
population, the cohort and the rounds into (epsilon, delta).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_gen.types import Adaptation, FederatedAlgorithm, Option, PyTree

OPTIONS = (
    Option("enabled", False, "client-level DP on the uploads (DP-FedAvg: clip, average, "
           "noise)"),
    Option("clip_norm", 1.0, "L2 bound of each client's upload (its model update)"),
    Option("noise_multiplier", 1.0, "noise std / clip_norm on the sum of uploads (unused "
           "when target_epsilon > 0)"),
    Option("target_epsilon", 0.0, "> 0: choose noise_multiplier so that `rounds` rounds "
           "spend exactly this epsilon"),
    Option("delta", 1e-5, "delta of the (epsilon, delta) guarantee, below 1/num_clients"),
)

# Algorithms whose server update is a function of the mean of their uploads (model
# updates): the FedAvg family and the personalized methods that share a global model.
COVERED = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedavg_ft", "fedper",
           "fedrep", "fedbabu", "fedbn", "ditto", "apfl", "pfedme", "perfedavg",
           "perfedavg_hf")
NOT_COVERED = {
    "scaffold": "its uploads carry control variates whose server-side mean is not clipped "
                "and noised with the model update",
    "fednova": "it weights clients by their local step counts, which depend on their data",
    "local": "it uploads nothing (no federated training to protect)",
    "pfedgpa": "its server denoises each client's upload separately",
    "genfl": "its server weights clients by their label skew, a function of their data",
    "aigc_only": "it trains on the server's synthetic data, not on client uploads",
}


class DPServerState(NamedTuple):
  """The wrapped algorithm's server state and the number of noised rounds so far."""
  inner: PyTree
  rounds: jax.Array  # int32 []: keys round r's noise

  @property
  def params(self):
    return self.inner.params


def clip(tree: PyTree, clip_norm: float) -> tuple[PyTree, jax.Array]:
  """`tree` scaled to L2 norm at most `clip_norm` (over all leaves), and its norm before."""
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                      for x in jax.tree.leaves(tree)))
  scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norm, 1e-12))
  return jax.tree.map(lambda x: (x * scale).astype(x.dtype), tree), norm


def check(algorithm: str, *, clip_norm: float, noise_multiplier: float, delta: float,
          target_epsilon: float, num_clients: int) -> None:
  """ValueError naming the bad `dp.*` value (or algorithm) and the fix; cheap, no data."""
  if algorithm not in COVERED:
    why = NOT_COVERED.get(algorithm, "its upload is not a model update averaged by the server")
    raise ValueError(f"dp.enabled=true cannot cover algorithm={algorithm}: {why}. DP covers "
                     f"{', '.join(COVERED)}.")
  if not clip_norm > 0:
    raise ValueError(f"dp.clip_norm must be > 0, got {clip_norm}.")
  if not noise_multiplier >= 0:
    raise ValueError(f"dp.noise_multiplier must be >= 0, got {noise_multiplier}.")
  if target_epsilon < 0:
    raise ValueError(f"dp.target_epsilon must be > 0 (or 0: use dp.noise_multiplier), got "
                     f"{target_epsilon}.")
  if not 0 < delta < 1:
    raise ValueError(f"dp.delta must be in (0, 1), got {delta}.")
  if delta > 1 / num_clients:
    raise ValueError(f"dp.delta={delta:g} is above 1/num_clients = {1 / num_clients:g}: a "
                     "guarantee that allows leaking one client's data outright; use "
                     f"dp.delta <= {1 / num_clients:.1e}.")


def dp_aggregate(alg: FederatedAlgorithm, *, clip_norm: float, noise_multiplier: float,
                 key: jax.Array) -> FederatedAlgorithm:
  """`alg` with client-level DP: uploads clipped to `clip_norm`, their equal-weight mean plus
  N(0, (noise_multiplier * clip_norm / m)^2) per coordinate (m: the cohort) passed to `alg`'s
  server update as a single upload. With noise_multiplier 0 and a clip norm above every
  upload's norm it computes what `alg` does on equal weights."""
  if alg.server_post is not None:
    raise ValueError("dp_aggregate wraps algorithms whose server only averages uploads; "
                     "this one post-processes them (server_post).")
  inner = lambda f: (lambda server, *args: f(server.inner, *args))

  def server_init(params):
    return DPServerState(alg.server_init(params), jnp.zeros((), jnp.int32))

  def client_final(server, client_state, carry):
    upload, client_state = alg.client_final(server.inner, client_state, carry)
    return clip(upload, clip_norm)[0], client_state

  def server_update(server, uploads, weights):
    m = weights.shape[0]
    mean = jax.tree.map(lambda x: jnp.tensordot(jnp.full((m,), 1.0 / m, x.dtype), x,
                                                axes=1).astype(x.dtype), uploads)
    if noise_multiplier > 0:
      leaves, treedef = jax.tree.flatten(mean)
      keys = jax.random.split(jax.random.fold_in(key, server.rounds), len(leaves))
      std = noise_multiplier * clip_norm / m
      mean = treedef.unflatten([x + (std * jax.random.normal(k, x.shape, jnp.float32)
                                     ).astype(x.dtype) for x, k in zip(leaves, keys)])
    one = jax.tree.map(lambda x: x[None], mean)
    return DPServerState(alg.server_update(server.inner, one, jnp.ones((1,), weights.dtype)),
                         server.rounds + 1)

  def adaptation(a: Adaptation | None) -> Adaptation | None:
    return None if a is None else Adaptation(inner(a.init), inner(a.step), inner(a.final))

  return FederatedAlgorithm(
      server_init, alg.client_state_init, inner(alg.client_init), inner(alg.client_step),
      client_final, server_update,
      eval_params=None if alg.eval_params is None else inner(alg.eval_params),
      personalize=adaptation(alg.personalize), newcomer=adaptation(alg.newcomer))
