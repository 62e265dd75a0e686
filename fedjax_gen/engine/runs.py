"""Several simulations side by side: one jitted round `vmap`ped over a leading run axis.

Runs that share an algorithm's structure, a model and a population size but differ in seed
(partition, initialisation, sampling) or in float hyperparameters advance together: their
server states, client states, populations and sampling keys are stacked `[R, ...]`, and
the algorithm is rebuilt inside the trace from each run's hyperparameters (`alg_fn`), so a
learning rate is a traced value, not a compiled-in constant. Each run's numbers are those
it gets alone (float tolerance): populations are padded to the runs' largest client, and
padding never changes which examples a client's batches hold (`engine.local`).

Memory: the stacked populations and client states take R times one run's; split the runs
into chunks when that does not fit (the trainer's `sweep.chunk`).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_gen.engine.simulation import RoundMetrics, Simulation, fused_round
from fedjax_gen.types import ClientData, FederatedAlgorithm, PyTree


def stack(trees: Sequence[PyTree]) -> PyTree:
  """Pytrees of equal structure stacked along a new leading run axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def take(tree: PyTree, i: int) -> PyTree:
  """Run `i` of a stacked pytree."""
  return jax.tree.map(lambda a: a[i], tree)


def _pad_clients(a: np.ndarray, n: int) -> np.ndarray:
  return np.pad(a, [(0, 0), (0, n - a.shape[1])] + [(0, 0)] * (a.ndim - 2))


def unstackable(sims: Sequence[Simulation]) -> str | None:
  """Why these simulations cannot share one jitted round, or None."""
  if not all(isinstance(s, Simulation) for s in sims):
    return "their population is streamed from a host store (data.layout=store)"
  first = sims[0]
  for name, value in (("clients_per_round", lambda s: s.clients_per_round),
                      ("num_clients", lambda s: s.num_clients),
                      ("training clients", lambda s: len(s.train_ids)),
                      ("local schedule", lambda s: s.schedule),
                      ("chunk size", lambda s: s.plan.chunk_size),
                      ("example shape", lambda s: s.host_data().x.shape[2:])):
    if any(value(s) != value(first) for s in sims):
      return f"their {name} differs"
  if not first.plan.fused:
    return "their plan is the host loop (run.steps_per_call > 0), which is not one jitted round"
  if first.alg.server_post is not None:
    return "the algorithm has a second server computation (server_post)"
  return None


class StackedRuns:
  """R runs advanced by one jitted, `vmap`ped round.

  Args:
    sims: one `Simulation` per run (their data is read from the host; none is moved to
      the device on its own). They must agree in what `unstackable` checks.
    alg_fn: `alg_fn(hparams) -> FederatedAlgorithm`, the algorithm of a run whose traced
      hyperparameters are `hparams` (a dict of scalars).
    hparams: `{name: [R] values}`, the hyperparameters that differ between runs.
    sharding: optional `NamedSharding` of the client axis (as a single run's); the run
      axis stays whole on every device.
  """

  def __init__(self, sims: Sequence[Simulation],
               alg_fn: Callable[[Mapping[str, jax.Array]], FederatedAlgorithm],
               hparams: Mapping[str, Sequence[float]] | None = None, *, sharding=None):
    why = unstackable(sims)
    if why:
      raise ValueError(f"These runs cannot be stacked: {why}.")
    self.num_runs, self.alg_fn = len(sims), alg_fn
    first = sims[0]
    pops = [s.host_data() for s in sims]
    max_n = max(p.x.shape[1] for p in pops)
    put = jax.device_put
    if isinstance(sharding, jax.sharding.NamedSharding):
      spec = jax.sharding.PartitionSpec(None, *sharding.spec)
      self._sharding = jax.sharding.NamedSharding(sharding.mesh, spec)
      put = lambda a: jax.device_put(a, self._sharding)
    else:
      self._sharding = None
    self.data = ClientData(put(np.stack([_pad_clients(p.x, max_n) for p in pops])),
                           put(np.stack([_pad_clients(p.y, max_n) for p in pops])),
                           put(np.stack([p.count for p in pops])))
    self.train_ids = jax.device_put(np.stack([s.train_ids for s in sims]).astype(np.int32))
    self.hparams = {k: jax.device_put(np.asarray(v, np.float32))
                    for k, v in (hparams or {}).items()}
    max_steps = max(s.max_steps for s in sims)

    def one_run(hp, population, train_ids, server, client_states, key, r):
      return fused_round(alg_fn(hp), first.schedule, population, train_ids, server,
                         client_states, jax.random.fold_in(key, r),
                         clients_per_round=first.clients_per_round,
                         chunk_size=first.plan.chunk_size, max_steps=max_steps)

    self._round = jax.jit(jax.vmap(one_run, in_axes=(0, 0, 0, 0, 0, 0, None)),
                          donate_argnums=(4,))

  def init(self, states: Sequence[tuple[PyTree, PyTree]]) -> tuple[PyTree, PyTree]:
    """The runs' `(server, client_states)` pairs, stacked."""
    server, clients = stack([s for s, _ in states]), stack([c for _, c in states])
    if self._sharding is not None:
      mesh = self._sharding.mesh
      server = jax.device_put(server, jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec()))
      clients = jax.device_put(clients, self._sharding)
    return server, clients

  def check(self, one_run: tuple[PyTree, PyTree]) -> None:
    """Traces the round without running it, given one run's `(server, client_states)` (or
    their shapes): raises `jax.errors.ConcretizationTypeError` (and kin) when the algorithm
    branches in Python on a hyperparameter that differs between the runs."""
    server, clients = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((self.num_runs, *a.shape), a.dtype), one_run)
    keys = jax.eval_shape(lambda: jnp.stack([jax.random.key(0)] * self.num_runs))
    jax.eval_shape(self._round, self.hparams, self.data, self.train_ids, server, clients,
                   keys, np.int32(1))

  def round(self, server, client_states, keys, r: int
            ) -> tuple[PyTree, PyTree, RoundMetrics]:
    """Round `r` of every run; run i's key is `fold_in(keys[i], r)`, as a single run's.
    `client_states` is consumed (donated). Metrics have a leading run axis."""
    return self._round(self.hparams, self.data, self.train_ids, server, client_states, keys,
                       np.int32(r))
