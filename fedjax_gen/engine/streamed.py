"""The federated round over a population kept on the host (`data.store.PopulationStore`).

`Simulation` keeps the whole population on the device, padded to its largest client:
memory = clients x largest client. `StreamedSimulation` keeps it on the host, unpadded, and
moves only the clients a round trains:

1. the round's ids come from `sample_clients`, the computation `Simulation` runs (jitted
   on its own here; the same ids and per-client keys for the same key);
2. their examples are gathered on the host (`PopulationStore.gather_flat`: back to back,
   no padding between clients) and moved with ONE explicit `jax.device_put` a round (with
   the sampled clients' states, for algorithms that have any);
3. one jitted computation trains them, the per-client code of `Simulation`'s fused round
   (`train_client`, `vmap`ped in chunks of `plan.chunk_size`), and aggregates
   (`server_step`); the new states of the sampled clients come back and are written into
   the host population of states.

**Prefetch.** `round(..., next_key=k)` announces the next round's key: its ids are sampled
at once (dispatched before this round's computation, so on an accelerator they do not
wait for it) and a background thread gathers its examples (and moves them, for algorithms
without client states) while this round computes: two rounds' data live at once (double
buffering). A round whose key was not announced gathers its own data first. The time a
round waits for its data is in `data_stats`.

**Shapes, and why these.** Each client is read through a view of the round's flat array
that looks like a client padded to `pad_to` examples (`x[idx]` is row `start + idx` while
`idx < count`, zeros past it; exactly what padding holds). `pad_to` is fixed for the run:
the population's largest client, the length `Simulation` pads to. It costs no memory (no
client is materialised at that length), only the per-step sort of `pad_to` keys that
`Simulation` pays too, and it gives every client the batches it gets under `Simulation`
(`engine.local`'s orders do not depend on the padded length anyway). The flat array's
length is the one shape that changes between rounds: the round's examples rounded up to
the next power of two, and at least the population's largest client (one client's worth
of rows, so rounds of a few small clients share one shape). It wastes at most half, and a
compilation comes only when a round's total crosses a power of two. Reasoning: with client
sizes of mean mu and standard deviation sigma, a round of m clients holds m mu +- 2
sqrt(m) sigma examples, within a factor of two of itself, so a run compiles the round two
or three times. Power-law clients (median 20, largest 2,000; mu 62, sigma 190): 100 a round
hold 6,200 +- 3,800 examples, buckets 4,096 / 8,192 / 16,384 in 11% / 73% / 16% of 300
drawn rounds; 1,000 a round hold 62,000 +- 12,000, buckets 65,536 / 131,072 in 72% / 28%.
`experiments/benchmarks/population.py` records the buckets each run met. Bucketing by the
round's largest client instead (`[m, bucket, ...]`) would move m x 2,048 examples whenever
a client of 2,000 is sampled (at m = 1,000, nearly every round): 30x the round's examples.

Only the fused plan (one jitted round) runs here, on one device: a host-loop plan or a
sharding is refused.

**Client states** (SCAFFOLD's control variates, personal models) live on the host, and only
for the clients that have trained: a million SCAFFOLD clients of a 200k-parameter MLP would
take 800 GB stacked, but a run touches `clients_per_round` of them a round. The states are
`{"slot": [C] int32, "rows": [K, P], "init": [P]}`: a client's state flattened to P numbers
(`ravel_pytree`) in row `slot[c]`, or `init` while `slot[c] == -1`. Rows are only
ever appended (a client that trains again gets a new row, and the dead ones are dropped when
they outnumber the live), so an array `round` returned is never written again: a checkpoint
saved from it asynchronously stays whole. Memory grows with the clients that have trained,
never with the population. `states_of(client_states, ids)` gives them back as pytrees.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fedjax_gen.engine.local import LocalSchedule
from fedjax_gen.engine.simulation import (ExecutionPlan, RoundMetrics, adapt_client,
                                          sample_clients, server_step, train_client)
from fedjax_gen.types import ClientData, FederatedAlgorithm, PyTree


def bucket(n: int, floor: int = 1) -> int:
  """The flat array's length for `n` examples: the next power of two >= max(n, floor)."""
  return 1 << max(int(max(n, floor)) - 1, 0).bit_length()


class _Rows:
  """Rows `start .. start + count - 1` of a round's flat array, read as one client padded to
  `length`: `view[idx]` is row `start + idx` where `idx < count` and zeros past it (what
  `stack_clients` pads with), so `engine.local` selects batches as from padded data."""

  def __init__(self, flat: jax.Array, start, count, length: int):
    self.flat, self.start, self.count = flat, start, count
    self.shape = (length, *flat.shape[1:])

  def __getitem__(self, idx):
    rows = self.flat[jnp.clip(self.start + jnp.minimum(idx, self.count - 1), 0,
                              self.flat.shape[0] - 1)]
    keep = (idx < self.count).reshape(idx.shape + (1,) * (rows.ndim - idx.ndim))
    return jnp.where(keep, rows, jnp.zeros((), rows.dtype))


def client_view(flat, start, count, length: int) -> ClientData:
  """One client of a round's `FlatClients` (device arrays) as `ClientData` padded to
  `length` (views: nothing is copied)."""
  return ClientData(_Rows(flat.x, start, count, length), _Rows(flat.y, start, count, length),
                    count)


class _Batch(NamedTuple):
  """A round's clients: sampled ids and keys (device), their data on the host and, when
  moved ahead of the round, on the device."""
  ids: jax.Array
  keys: jax.Array
  ids_host: np.ndarray
  host: object          # FlatClients (NumPy)
  device: object        # FlatClients (device) or None
  gather_s: float
  put_s: float


def _key_bits(key) -> np.ndarray:
  key = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  return np.asarray(jax.device_get(key))


class StreamedSimulation:
  """A federated population in a host store and the round that trains it.

  The public interface of `Simulation` (`init`, `round`, `adapt`; `alg`, `plan`,
  `sharding`, `train_ids`, `num_clients`, `clients_per_round`, `last_timing`,
  `max_steps`, `counts`, `schedule`), without `data`: see the module docstring.

  Args:
    alg: the algorithm.
    store: the population (`data.store.PopulationStore`, or anything with its
      `num_clients`, `sizes`, `max_size` and `gather_flat`).
    schedule: batch size and local epochs/steps.
    clients_per_round: clients sampled uniformly without replacement each round.
    plan: a fused `ExecutionPlan` (`steps_per_call == 0`); `None`: all sampled clients
      in one chunk.
    sharding: must be None (one device).
    train_ids: the clients that may be sampled (default all).
    time_split: as `Simulation`'s (algorithms with a `server_post`).
  """

  def __init__(self, alg: FederatedAlgorithm, store, schedule: LocalSchedule, *,
               clients_per_round: int, plan: ExecutionPlan | None = None, sharding=None,
               train_ids=None, time_split: bool = False):
    if sharding is not None:
      raise ValueError("A population in a store (data.layout=store) trains on one device; "
                       "sharding its clients over several is not supported: use "
                       "data.layout=device or run.num_devices=1.")
    plan = plan or ExecutionPlan(chunk_size=clients_per_round, steps_per_call=0)
    if not plan.fused:
      raise ValueError(f"A population in a store (data.layout=store) runs the fused round "
                       f"only; got the host loop (steps_per_call={plan.steps_per_call}): "
                       "use run.steps_per_call=0 or -1, or data.layout=device.")
    self.alg, self.store, self.schedule, self.plan = alg, store, schedule, plan
    self.sharding, self.time_split, self.last_timing = None, time_split, None
    self.num_clients = int(store.num_clients)
    self.counts = np.asarray(store.sizes, np.int32)
    self.train_ids = (np.arange(self.num_clients) if train_ids is None
                      else np.asarray(train_ids).reshape(-1))
    if len(self.train_ids) and (self.train_ids.min() < 0
                                or self.train_ids.max() >= self.num_clients):
      raise ValueError(f"train_ids must lie in [0, {self.num_clients}), the store's clients.")
    if not 1 <= clients_per_round <= len(self.train_ids):
      raise ValueError(f"clients_per_round={clients_per_round} must be in [1, "
                       f"{len(self.train_ids)}] (the clients that train).")
    self.clients_per_round = clients_per_round
    self.max_steps = int(schedule.num_steps(self.counts).max())
    self.pad_to = max(int(self.counts.max()), 1)  # each client's padded length (a view)
    self._train_ids = jax.device_put(self.train_ids.astype(np.int32))  # once, not per round
    self._sample = jax.jit(functools.partial(sample_clients,
                                             clients_per_round=clients_per_round))
    self._round = jax.jit(self._round_fn)
    self._adapt = jax.jit(self._adapt_fn, static_argnames=("adaptation", "steps"))
    self._post = (None if alg.server_post is None
                  else jax.jit(self._post_fn, static_argnums=(2,)))
    self._pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="fedjax-gen-prefetch")
    self._next = None          # (announced key, future of its _Batch)
    self._shapes = {}          # each bucket's round arguments, as shapes (`round_memory`)
    self.data_stats = {"rounds": 0, "prefetched": 0, "wait_s": 0.0, "gather_s": 0.0,
                       "put_s": 0.0, "buckets": []}

  def host_data(self):
    raise ValueError("A population in a store (data.layout=store) is not stacked with other "
                     "runs' padded populations; run it alone (sweep.vmap=false) or use "
                     "data.layout=device.")

  # --- state -----------------------------------------------------------------------------
  def init(self, params) -> tuple[PyTree, PyTree]:
    """Server state (on the device) and the population's client states: `{}` for an
    algorithm without any, else no client's yet (see the module docstring)."""
    server = self.alg.server_init(params)
    flat, self._unravel = ravel_pytree(jax.device_get(self.alg.client_state_init(params)))
    self._state_size = int(flat.size)
    return server, self.fresh_states(params)

  def fresh_states(self, params) -> PyTree:
    """Client states of a population none of whose clients has trained, each holding
    `client_state_init(params)`."""
    init = np.asarray(ravel_pytree(jax.device_get(self.alg.client_state_init(params)))[0])
    if not init.size:
      return {}
    return {"slot": np.full(self.num_clients, -1, np.int32),
            "rows": np.zeros((0, init.size), init.dtype), "init": init}

  @property
  def stateful(self) -> bool:
    return bool(self._state_size)

  def _rows(self, client_states, ids: np.ndarray) -> np.ndarray:
    """Clients `ids`' flattened states `[m, P]` (their initial state where untouched)."""
    init = np.asarray(client_states["init"])
    out = np.broadcast_to(init, (len(ids), init.size)).copy()
    slot = np.asarray(client_states["slot"])[ids]
    have = slot >= 0
    out[have] = np.asarray(client_states["rows"])[slot[have]]
    return out

  def _written(self, client_states, ids: np.ndarray, rows: np.ndarray) -> dict:
    """New client states with clients `ids` now holding `rows`: appended, never written
    over (see the module docstring); compacted when dead rows outnumber the live."""
    slot = np.array(client_states["slot"])  # a copy: the caller's arrays stay as they were
    old = np.asarray(client_states["rows"])
    live = np.flatnonzero(slot >= 0)
    if len(old) > 2 * max(len(live), 1):
      keep = slot[live]
      old = old[keep]
      slot[live] = np.arange(len(live), dtype=np.int32)
    slot[ids] = np.arange(len(old), len(old) + len(ids), dtype=np.int32)
    return {"slot": slot, "rows": np.concatenate([old, rows.astype(old.dtype)]),
            "init": client_states["init"]}

  def states_of(self, client_states, ids) -> PyTree:
    """Clients `ids`' states, stacked pytrees (the algorithm's structure)."""
    ids = np.asarray(jax.device_get(ids), np.int64).reshape(-1)
    rows = self._rows(client_states, ids) if self.stateful else np.zeros((len(ids), 0))
    return jax.vmap(self._unravel)(jnp.asarray(rows))

  # --- the round's data ---------------------------------------------------------------------
  def _total(self, ids: np.ndarray) -> int:
    """The flat array's rows for clients `ids`: their examples, bucketed (`bucket`), at
    least the population's largest client (rounds without it share one shape)."""
    return bucket(int(self.counts[ids].sum()), self.pad_to)

  def _load(self, ids, keys, put: bool) -> _Batch:
    """Gathers the clients `ids` (sampled on the device) on the host; moves them when
    `put`. Runs on the prefetch thread, or on the caller's for an unannounced key."""
    t0 = time.perf_counter()
    ids_host = np.asarray(jax.device_get(ids)).astype(np.int64)
    host = self.store.gather_flat(ids_host, self._total(ids_host))
    t1 = time.perf_counter()
    device = None
    if put:
      device = jax.device_put(host)
      jax.block_until_ready(device)
    return _Batch(ids, keys, ids_host, host, device, t1 - t0, time.perf_counter() - t1)

  def _announce(self, key, put: bool) -> None:
    ids, keys = self._sample(self._train_ids, key)  # dispatched now: ahead of this round
    self._next = (key, self._pool.submit(self._load, ids, keys, put))

  def _claim(self, key):
    """The prefetched batch of `key`, or None (not announced: a different key)."""
    if self._next is None:
      return None
    announced, future = self._next
    self._next = None
    if announced is key or np.array_equal(_key_bits(announced), _key_bits(key)):
      return future
    return None

  def _device_args(self, batch: _Batch, client_states):
    """The round's data and the sampled clients' states on the device: one transfer (or
    none, the data having moved on the prefetch thread and no state to move)."""
    if not self.stateful and batch.device is not None:
      return batch.device, None, 0.0
    t = time.perf_counter()
    rows = self._rows(client_states, batch.ids_host) if self.stateful else None
    data, rows = jax.device_put((batch.host if batch.device is None else batch.device, rows))
    return data, rows, time.perf_counter() - t

  # --- the jitted computations -------------------------------------------------------------
  def _states(self, rows, m: int):
    """Flattened states `[m, P]` (None: stateless) as the algorithm's stacked pytrees."""
    return jax.vmap(self._unravel)(jnp.zeros((m, 0)) if rows is None else rows)

  def _round_fn(self, server, data, ids, keys, rows):
    sampled = self._states(rows, ids.shape[0])

    def one_client(args):
      start, count, cstate, ckey = args
      return train_client(self.alg, self.schedule, server, cstate, ckey,
                          client_view(data, start, count, self.pad_to), self.max_steps)

    uploads, new_states, metrics = jax.lax.map(
        one_client, (data.start, data.count, sampled, keys), batch_size=self.plan.chunk_size)
    server, round_metrics = server_step(self.alg, data.count, server, ids, uploads, metrics)
    return server, self._flat(new_states, rows), round_metrics

  @staticmethod
  def _flat(states, rows):
    return None if rows is None else jax.vmap(lambda st: ravel_pytree(st)[0])(states)

  def _post_fn(self, server, rows, m: int):
    server, states = self.alg.server_post(server, self._states(rows, m))
    return server, self._flat(states, rows)

  def _adapt_fn(self, server, data, ids, rows, key, *, adaptation, steps):
    states = self._states(rows, ids.shape[0])

    def one_client(args):
      cid, start, count, cstate = args
      return adapt_client(adaptation, self.schedule, server, cstate, key, cid,
                          client_view(data, start, count, self.pad_to), steps)

    return jax.lax.map(one_client, (ids, data.start, data.count, states),
                       batch_size=self.plan.chunk_size)

  # --- public ------------------------------------------------------------------------------
  def round(self, server, client_states, key, next_key=None
            ) -> tuple[PyTree, PyTree, RoundMetrics]:
    """One federated round. Returns new `client_states` (the given ones are left as they
    were). `next_key`: the next round's key, whose data is then gathered while this
    round computes (pass the same key object to the next call: another object holding the
    same key is recognised too, at the price of reading both keys back)."""
    t0 = time.perf_counter()
    pending = self._claim(key)
    if pending is None:
      ids, keys = self._sample(self._train_ids, key)
      if next_key is not None:
        self._announce(next_key, put=not self.stateful)
      batch = self._load(ids, keys, put=not self.stateful)
    else:
      if next_key is not None:
        self._announce(next_key, put=not self.stateful)
      batch = pending.result()
    data, rows, put_s = self._device_args(batch, client_states)
    s = self.data_stats
    s["rounds"] += 1
    s["prefetched"] += pending is not None
    s["wait_s"] += time.perf_counter() - t0
    s["gather_s"] += batch.gather_s
    s["put_s"] += batch.put_s + put_s
    total = int(batch.host.x.shape[0])
    if total not in s["buckets"]:
      s["buckets"].append(total)
    self._shapes[total] = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                       (server, data, batch.ids, batch.keys, rows))
    t1 = time.perf_counter()
    server, new_rows, metrics = self._round(server, data, batch.ids, batch.keys, rows)
    if self._post is not None:
      if self.time_split:
        jax.block_until_ready((server, new_rows))
      t2 = time.perf_counter()
      server, new_rows = self._post(server, new_rows, len(batch.ids_host))
      if self.time_split:
        jax.block_until_ready((server, new_rows))
        self.last_timing = {"client_s": t2 - t1, "server_s": time.perf_counter() - t2}
    if self.stateful:  # the new rows back to the host (waits for the round)
      client_states = self._written(client_states, batch.ids_host,
                                    np.asarray(jax.device_get(new_rows)))
    return server, client_states, metrics

  def adapt(self, adaptation, server, client_states, ids, key, steps: int) -> PyTree:
    """Params after `steps` local steps of `adaptation` for clients `ids` (stacked, on the
    device), as `Simulation.adapt`: in groups of `clients_per_round` clients."""
    ids = np.asarray(jax.device_get(ids), np.int64).reshape(-1)
    group, outs = self.clients_per_round, []
    for s in range(0, len(ids), group):
      g = ids[s:s + group]
      full = np.concatenate([g, np.repeat(g[-1:], group - len(g))])  # one shape: one compile
      flat = self.store.gather_flat(full, self._total(full))
      rows = self._rows(client_states, full) if self.stateful else None
      data, rows, dev_ids = jax.device_put((flat, rows, full.astype(np.int32)))
      out = self._adapt(server, data, dev_ids, rows, key, adaptation=adaptation,
                        steps=steps)
      outs.append(jax.tree.map(lambda a: a[:len(g)], out))
    return outs[0] if len(outs) == 1 else jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)

  def round_memory(self) -> dict[int, dict]:
    """The compiled round's memory (`memory_analysis()`, bytes: arguments, outputs,
    temporaries) for each bucket of the round's flat data met so far."""
    out = {}
    for total, shapes in sorted(self._shapes.items()):
      m = self._round.lower(*shapes).compile().memory_analysis()
      if m is not None:
        out[total] = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in
                      ("argument", "output", "temp", "alias", "generated_code")}
    return out

  def close(self) -> None:
    """Stops the prefetch thread (a pending gather finishes first)."""
    self._next = None
    self._pool.shutdown(wait=True)
