"""Local training of one client over its padded data: batch selection and masked steps.

A client's data is `[max_n, ...]` padded, with `count` real examples. Local work is either
`local_epochs` passes (ceil(count / batch_size) steps each, a fresh permutation per epoch,
the last batch of an epoch partial) or a fixed `local_steps` (each a batch drawn without
replacement). A client's active steps are a prefix [0, num_steps(count)); the engine runs
the population's maximum and every step past a client's own count is a masked no-op, so
one `vmap` covers clients of unequal size.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_gen.types import Batch, ClientData, FederatedAlgorithm, PyTree


class LocalSchedule(NamedTuple):
  batch_size: int
  local_epochs: int   # used when local_steps == 0
  local_steps: int    # > 0: a fixed number of steps per round, whatever the client's size

  def num_steps(self, count):
    """Active local steps of a client with `count` examples (NumPy or JAX)."""
    xp = jnp if isinstance(count, jax.Array) else np
    if self.local_steps:
      return xp.where(count > 0, self.local_steps, 0)
    return self.local_epochs * (-(-count // self.batch_size))


class EngineCarry(NamedTuple):
  alg: PyTree          # the algorithm's own carry
  loss_sum: jax.Array  # [] f32, summed over active steps
  key: jax.Array       # this client's key for the round (batch order)


def _valid_first_permutation(key, count, n):
  """A random order of positions [0, n) with the `count` real examples first."""
  u = jax.random.uniform(key, (n,))
  return jnp.argsort(jnp.where(jnp.arange(n) < count, u, 2.0))


def select_batch(data: ClientData, key: jax.Array, t: jax.Array,
                 schedule: LocalSchedule) -> Batch:
  """The batch of local step `t` (deterministic for `key`)."""
  n = data.y.shape[0]
  b = schedule.batch_size
  if schedule.local_steps:
    perm = _valid_first_permutation(jax.random.fold_in(key, t), data.count, n)
    pos = jnp.arange(b)
  else:
    per_epoch = jnp.maximum(-(-data.count // b), 1)
    epoch, step = jnp.divmod(t, per_epoch)
    perm = _valid_first_permutation(jax.random.fold_in(key, epoch), data.count, n)
    pos = step * b + jnp.arange(b)
  mask = pos < data.count
  idx = perm[jnp.minimum(pos, n - 1)]
  step_key = jax.random.fold_in(jax.random.fold_in(key, t), 0x5EED)
  return Batch(data.x[idx], data.y[idx], mask, t, schedule.num_steps(data.count), step_key)


def begin(init_fn: Callable, server, client_state, key) -> EngineCarry:
  """`init_fn(server, client_state, key)` is `client_init` (or an adaptation's init)."""
  k_alg, k_data = jax.random.split(key)
  return EngineCarry(init_fn(server, client_state, k_alg), jnp.zeros(()), k_data)


def run_steps(step_fn: Callable, schedule: LocalSchedule, server, carry: EngineCarry,
              data: ClientData, t0, num: int, *, loop: str, masked: bool = True
              ) -> EngineCarry:
  """Local steps t0 .. t0+num-1 of one client; steps past its own count are no-ops.

  Args:
    step_fn: `step_fn(server, carry, batch) -> (carry, loss)`, e.g. `client_step`.
    loop: "unroll" (a Python loop, traced `num` times) or "scan" (`lax.fori_loop`).
    masked: False where the caller knows every step is active (the host loop's full
      blocks): no select, the same result, a faster CNN4 round (BENCHMARKS.md).

  Inactive steps are masked with a select, not skipped with `lax.cond`: on XLA:CPU a
  convolution inside a conditional runs several times slower, and under
  `vmap` a cond becomes a select anyway. The host loop skips whole blocks instead.
  """
  active_steps = schedule.num_steps(data.count)

  def step(t, c: EngineCarry) -> EngineCarry:
    def active(c):
      new, loss = step_fn(server, c.alg, select_batch(data, c.key, t, schedule))
      return c._replace(alg=new, loss_sum=c.loss_sum + loss)
    if not masked:
      return active(c)
    is_active = t < active_steps
    return jax.tree.map(lambda a, b: jnp.where(is_active, a, b), active(c), c)

  if loop == "scan":
    # A trip count bounded by the client's own steps: without vmap (chunks of one client)
    # padded steps cost nothing; under vmap the loop runs to the chunk's longest client.
    return jax.lax.fori_loop(t0, jnp.minimum(t0 + num, active_steps), step, carry)
  for j in range(num):
    carry = step(t0 + j, carry)
  return carry


def end(alg: FederatedAlgorithm, schedule: LocalSchedule, server, client_state,
        carry: EngineCarry, data: ClientData):
  upload, client_state = alg.client_final(server, client_state, carry.alg)
  steps = schedule.num_steps(data.count)
  loss = carry.loss_sum / jnp.maximum(steps, 1)
  return upload, client_state, {"train_loss": loss, "local_steps": steps}
