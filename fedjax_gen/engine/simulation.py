"""The vmapped federated round: gather sampled clients -> local updates -> aggregate.

The population's data lives on the device once, stacked `[clients, max_n, ...]` with
counts; persistent client states are stacked the same way and gathered/scattered for
the sampled clients. A round runs under an `ExecutionPlan`:

* `steps_per_call == 0` ("fused", the default): the whole round is ONE jitted
  computation; clients are `vmap`ped in chunks of `chunk_size` (`lax.map`) and local
  steps run in a loop whose trip count is bounded by each client's own steps.
* `steps_per_call == k > 0` ("host loop"): the same per-client functions, jitted in
  pieces; the host loops over chunks of clients and over blocks of at most k unrolled
  local steps (the fewest blocks, of equal length), skipping blocks where every client of
  the chunk is done and leaving out the step mask where every client is active. It exists
  for one case: native XLA convolutions on CPU, which run several times slower inside a
  scanned loop than unrolled (ARCHITECTURE.md, "One engine path?").

Both paths call the same per-client functions (`engine.local`), so they agree to float
tolerance. The engine takes functions and arrays only: which plan and which convolution
suit a model and a backend is the trainer's choice (`fedjax_gen.trainer.plan`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_gen.engine import local
from fedjax_gen.engine.local import LocalSchedule
from fedjax_gen.types import ClientData, FederatedAlgorithm, PyTree


@dataclasses.dataclass(frozen=True)
class ExecutionPlan:
  chunk_size: int        # clients per vmapped computation
  steps_per_call: int    # 0: one jitted round; k > 0: host loop over k-step jitted blocks

  @property
  def fused(self) -> bool:
    return self.steps_per_call == 0


class RoundMetrics(NamedTuple):
  train_loss: jax.Array   # [] weighted mean over sampled clients
  client_ids: jax.Array   # [m] sampled clients
  local_steps: jax.Array  # [m]


def _take(tree: PyTree, ids: jax.Array) -> PyTree:
  return jax.tree.map(lambda a: a[ids], tree)


def _put(tree: PyTree, ids: jax.Array, values: PyTree) -> PyTree:
  return jax.tree.map(lambda a, v: a.at[ids].set(v), tree, values)


def _concat(trees: list[PyTree]) -> PyTree:
  return trees[0] if len(trees) == 1 else jax.tree.map(
      lambda *xs: jnp.concatenate(xs), *trees)


def _client_data(data: ClientData, ids) -> ClientData:
  return ClientData(data.x[ids], data.y[ids], data.count[ids])


FLOYD_FROM = 1 << 16  # populations at least this large are sampled in O(m) (`_floyd`)


def _floyd(key: jax.Array, n: int, m: int) -> jax.Array:
  """m distinct positions of [0, n), uniformly (Floyd's algorithm): O(m^2) work on m
  numbers, where `jax.random.choice(..., replace=False)` permutes all n (0.5 s a round at
  n = 10^6 on a 2-core CPU)."""
  keys = jax.random.split(key, m)

  def pick(i, chosen):
    j = n - m + i
    t = jax.random.randint(keys[i], (), 0, j + 1)
    return chosen.at[i].set(jnp.where(jnp.any(chosen == t), j, t))

  return jax.lax.fori_loop(0, m, pick, jnp.full((m,), -1, jnp.int32))


def sample_clients(train_ids: jax.Array, key: jax.Array, clients_per_round: int):
  """`(ids, keys)`: clients drawn uniformly without replacement from `train_ids`, each with
  its own key (folded from its id, so a client's key does not depend on its position).
  Populations of `FLOYD_FROM` clients or more are drawn by `_floyd`, whose cost does not
  grow with the population; smaller ones keep `jax.random.choice` (the draws of every
  earlier result)."""
  k_sample, k_clients = jax.random.split(key)
  n = train_ids.shape[0]
  pos = (_floyd(k_sample, n, clients_per_round) if n >= FLOYD_FROM else
         jax.random.choice(k_sample, n, (clients_per_round,), replace=False))
  ids = train_ids[pos]
  return ids, jax.vmap(lambda i: jax.random.fold_in(k_clients, i))(ids)


def train_client(alg: FederatedAlgorithm, schedule: LocalSchedule, server, client_state,
                 key, data: ClientData, max_steps: int):
  """One client's round: `client_init`, its local steps (at most `max_steps`, each client
  stopping at its own count), `client_final` -> `(upload, new state, metrics)`."""
  carry = local.begin(alg.client_init, server, client_state, key)
  carry = local.run_steps(alg.client_step, schedule, server, carry, data, 0, max_steps,
                          loop="scan")
  return local.end(alg, schedule, server, client_state, carry, data)


def adapt_client(adaptation, schedule: LocalSchedule, server, client_state, key, cid,
                 data: ClientData, steps: int):
  """Client `cid`'s params after `steps` local steps of `adaptation` (no upload)."""
  schedule = schedule._replace(local_steps=steps)
  carry = local.begin(adaptation.init, server, client_state, jax.random.fold_in(key, cid))
  carry = local.run_steps(adaptation.step, schedule, server, carry, data, 0, steps,
                          loop="scan")
  return adaptation.final(server, client_state, carry.alg)


def server_step(alg: FederatedAlgorithm, counts, server, ids, uploads, metrics):
  """The server update, weights proportional to the sampled clients' example `counts`
  `[m]`, and the round's metrics."""
  counts = counts.astype(jnp.float32)
  weights = counts / jnp.maximum(counts.sum(), 1.0)
  server = alg.server_update(server, uploads, weights)
  return server, RoundMetrics(jnp.dot(weights, metrics["train_loss"]), ids,
                              metrics["local_steps"])


def aggregate(alg: FederatedAlgorithm, data: ClientData, server, client_states, ids, uploads,
              new_states, metrics):
  """The server update (`server_step`) and the sampled clients' new states scattered back."""
  server, round_metrics = server_step(alg, data.count[ids], server, ids, uploads, metrics)
  return server, _put(client_states, ids, new_states), round_metrics


def fused_round(alg: FederatedAlgorithm, schedule: LocalSchedule, population: ClientData,
                train_ids: jax.Array, server, client_states, key, *, clients_per_round: int,
                chunk_size: int, max_steps: int):
  """One whole round as a pure function (traced by `Simulation` under `jit`, and by
  `engine.runs` under `vmap` over runs): sample, local steps of every sampled client
  (`vmap`ped in chunks of `chunk_size`), aggregate. `max_steps` only bounds the loop: each
  client stops at its own step count."""
  ids, keys = sample_clients(train_ids, key, clients_per_round)
  sampled = _take(client_states, ids)

  def one_client(args):
    cid, cstate, ckey = args
    return train_client(alg, schedule, server, cstate, ckey, _client_data(population, cid),
                        max_steps)

  uploads, new_states, metrics = jax.lax.map(one_client, (ids, sampled, keys),
                                             batch_size=chunk_size)
  return aggregate(alg, population, server, client_states, ids, uploads, new_states, metrics)


class Simulation:
  """A federated population on device and the round that trains it.

  Args:
    alg: the algorithm (pure functions written for one client).
    train: padded client training arrays `x [C, max_n, ...]`, `y [C, max_n]`,
      `count [C]` (NumPy; moved to the device once, here).
    schedule: batch size and local epochs/steps.
    clients_per_round: clients sampled uniformly without replacement each round.
    plan: how the round is executed; `None`: fused, all sampled clients in one chunk
      (what accelerators want; `fedjax_gen.trainer.plan.auto_plan` picks per backend).
    sharding: optional `jax.sharding.Sharding` for the client axis of the population data
      and client states (e.g. `NamedSharding(mesh, P("clients"))`).
    train_ids: the clients that may be sampled (default all); the others are held out as
      newcomers, who never train.
    time_split: block after each part of a round whose algorithm has a `server_post`, and
      record the seconds of each in `last_timing` (`{"client_s", "server_s"}`: the
      clients' local updates with the aggregation, then the server's extra work).
  """

  def __init__(self, alg: FederatedAlgorithm, train, schedule: LocalSchedule, *,
               clients_per_round: int, plan: ExecutionPlan | None = None,
               sharding=None, train_ids=None,
               time_split: bool = False):
    self.alg, self.schedule = alg, schedule
    self.time_split, self.last_timing = time_split, None
    self.num_clients = int(train.count.shape[0])
    self.train_ids = np.arange(self.num_clients) if train_ids is None else np.asarray(train_ids)
    if not 1 <= clients_per_round <= len(self.train_ids):
      raise ValueError(f"clients_per_round={clients_per_round} must be in [1, "
                       f"{len(self.train_ids)}] (the clients that train).")
    self.clients_per_round = clients_per_round
    self.plan = plan or ExecutionPlan(chunk_size=clients_per_round, steps_per_call=0)
    self.sharding = sharding
    self.counts = np.asarray(train.count, np.int32)
    self._host, self._data = train, None  # moved to the device on first use (`data`)
    self._train_ids = None
    self.max_steps = int(schedule.num_steps(self.counts).max())
    # The population data is an ARGUMENT of every jitted piece (first, `data`): closed
    # over, it would be embedded in each compiled program as a constant (a copy per
    # program, compile time and host memory growing with the population).
    self._round_fused = jax.jit(self._fused_round, donate_argnums=(3,))
    chunk_map = self._squeezed if self.plan.chunk_size == 1 else jax.vmap
    # Host-loop block length: as few blocks as `steps_per_call` allows, of equal length, so
    # padding steps are few (12 steps, k=10: two blocks of 6, not 10 + 10 masked to 2).
    n, k = max(self.max_steps, 1), self.plan.steps_per_call
    self._k = k = k and -(-n // -(-n // k))
    self._begin = jax.jit(self._gather_and_begin)
    self._split = jax.jit(self._split_chunks)
    # The host loop's block offsets as device scalars, made once: no transfer per round.
    self._t0 = [jax.device_put(np.int32(t)) for t in range(0, self.max_steps, k)] if k else []
    self._block, self._full_block = (jax.jit(chunk_map(
        lambda server, c, d, t0, m=masked: local.run_steps(
            alg.client_step, schedule, server, c, d, t0, k, loop="unroll", masked=m),
        in_axes=(None, 0, 0, None)), donate_argnums=(1,)) for masked in (True, False))
    self._end = jax.jit(chunk_map(
        lambda server, cs, c, d: local.end(alg, schedule, server, cs, c, d),
        in_axes=(None, 0, 0, 0)))
    self._finish = jax.jit(self._aggregate, donate_argnums=(2,))
    self._sample = jax.jit(self._sample_ids)
    self._adapt = jax.jit(self._adapt_clients, static_argnames=("adaptation", "steps"))
    self._post = (None if alg.server_post is None
                  else jax.jit(self._server_post, donate_argnums=(1,)))

  @staticmethod
  def _squeezed(f, in_axes):
    """`vmap` over a client axis of size 1, without the vmap (no grouped convolutions)."""
    def g(*args):
      args = [jax.tree.map(lambda a: a[0], x) if ax == 0 else x
              for x, ax in zip(args, in_axes)]
      return jax.tree.map(lambda a: a[None], f(*args))
    return g

  @property
  def data(self) -> ClientData:
    """The population on the device, `[C, max_n, ...]`: moved there once, on first use (a
    run stacked with others by `engine.runs` never moves its own copy)."""
    if self._data is None:
      put = ((lambda a: jax.device_put(a, self.sharding)) if self.sharding
             else jax.device_put)
      train, self._host = self._host, None
      self._data = ClientData(put(np.asarray(train.x)), put(np.asarray(train.y, np.int32)),
                              put(self.counts))
      self._train_ids = jax.device_put(self.train_ids.astype(np.int32))
    return self._data

  def host_data(self) -> ClientData:
    """The population as NumPy arrays (from the host copy while it has not moved)."""
    train = self._host if self._data is None else jax.device_get(self._data)
    return ClientData(np.asarray(train.x), np.asarray(train.y, np.int32), self.counts)

  # --- state -----------------------------------------------------------------------
  def init(self, params) -> tuple[PyTree, PyTree]:
    """Server state and the population's stacked client states."""
    server = self.alg.server_init(params)
    one = self.alg.client_state_init(params)
    states = jax.tree.map(
        lambda a: jnp.broadcast_to(a, (self.num_clients, *a.shape)).copy(), one)
    if self.sharding is not None:
      states = jax.device_put(states, self.sharding)
      if isinstance(self.sharding, jax.sharding.NamedSharding):  # the server: on every device
        server = jax.device_put(server, jax.sharding.NamedSharding(
            self.sharding.mesh, jax.sharding.PartitionSpec()))
    return server, states

  def states_of(self, client_states, ids) -> PyTree:
    """Clients `ids`' states, stacked."""
    return _take(client_states, jnp.asarray(ids))

  def fresh_states(self, params) -> PyTree:
    """Client states of a population none of whose clients has trained, each holding
    `client_state_init(params)`."""
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (self.num_clients, *a.shape)),
                        self.alg.client_state_init(params))

  # --- pieces shared by both plans -----------------------------------------------------
  def _sample_ids(self, key):
    return sample_clients(jnp.asarray(self.train_ids), key, self.clients_per_round)

  def _aggregate(self, data, server, client_states, ids, uploads, new_states, metrics):
    return aggregate(self.alg, data, server, client_states, ids, uploads, new_states, metrics)

  # --- fused plan: one jitted round ----------------------------------------------------
  def _fused_round(self, population, train_ids, server, client_states, key):
    return fused_round(self.alg, self.schedule, population, train_ids, server, client_states,
                       key, clients_per_round=self.clients_per_round,
                       chunk_size=self.plan.chunk_size, max_steps=self.max_steps)

  # --- host-loop plan ------------------------------------------------------------------
  def _gather_and_begin(self, population, server, client_states, ids, keys):
    cstates = _take(client_states, ids)
    carry = jax.vmap(lambda cs, k: local.begin(self.alg.client_init, server, cs, k))(
        cstates, keys)
    return cstates, carry, _client_data(population, ids)

  def _split_chunks(self, ids, keys):
    size = self.plan.chunk_size
    return [(ids[s:s + size], keys[s:s + size]) for s in range(0, ids.shape[0], size)]

  def _host_round(self, server, client_states, key):
    ids, keys = self._sample(key)
    ids_host = np.asarray(ids)
    k, size = self._k, self.plan.chunk_size
    results = []
    for start, (chunk_ids, chunk_keys) in zip(range(0, len(ids_host), size),
                                              self._split(ids, keys)):
      cstates, carry, data = self._begin(self.data, server, client_states, chunk_ids,
                                         chunk_keys)
      steps = self.schedule.num_steps(self.counts[ids_host[start:start + size]])
      for block in range(-(-int(steps.max()) // k)):  # unmasked while every client is active
        run = self._full_block if (block + 1) * k <= steps.min() else self._block
        carry = run(server, carry, data, self._t0[block])
      results.append(self._end(server, cstates, carry, data))
    uploads, new_states, metrics = (_concat(list(r)) for r in zip(*results))
    return self._finish(self.data, server, client_states, ids, uploads, new_states, metrics)

  # --- the server's second computation (pFedGPA) -------------------------------------
  def _server_post(self, server, client_states, ids):
    server, sampled = self.alg.server_post(server, _take(client_states, ids))
    return server, _put(client_states, ids, sampled)

  # --- adaptation without aggregation (fine-tuning, newcomers) ------------------------
  def _adapt_clients(self, population, server, client_states, ids, key, *, adaptation,
                     steps):
    def one_client(args):
      cid, cstate = args
      return adapt_client(adaptation, self.schedule, server, cstate, key, cid,
                          _client_data(population, cid), steps)

    return jax.lax.map(one_client, (ids, _take(client_states, ids)),
                       batch_size=self.plan.chunk_size)

  def adapt(self, adaptation, server, client_states, ids, key, steps: int) -> PyTree:
    """Params after `steps` local steps of `adaptation` for clients `ids` (stacked)."""
    ids = jnp.asarray(ids, jnp.int32)
    return self._adapt(self.data, server, client_states, ids, key, adaptation=adaptation,
                       steps=steps)

  # --- public --------------------------------------------------------------------------
  def round(self, server, client_states, key, next_key=None
            ) -> tuple[PyTree, PyTree, RoundMetrics]:
    """One federated round. `client_states` is consumed (its buffers are donated).
    `next_key` (the next round's key, which `StreamedSimulation` prefetches for) is not
    needed here: the population is on the device already."""
    del next_key
    t0 = time.perf_counter()
    if self.plan.fused:
      data = self.data
      server, client_states, metrics = self._round_fused(data, self._train_ids, server,
                                                          client_states, key)
    else:
      server, client_states, metrics = self._host_round(server, client_states, key)
    if self._post is None:
      return server, client_states, metrics
    if self.time_split:
      jax.block_until_ready((server, client_states))
    t1 = time.perf_counter()
    server, client_states = self._post(server, client_states, metrics.client_ids)
    if self.time_split:
      jax.block_until_ready((server, client_states))
      self.last_timing = {"client_s": t1 - t0, "server_s": time.perf_counter() - t1}
    return server, client_states, metrics
