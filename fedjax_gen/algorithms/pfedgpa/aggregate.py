"""pFedGPA's server computations over normalised parameter tokens, as pure functions of a
denoiser `eps_fn(x, t, cond)` (the diffusion core's convention): online DDPM training on a
buffer, inversion + denoising of uploads, and the newcomers' guided denoising.

All take batched tokens `[B, num_tokens, token_size]`: every sampled client is inverted
and denoised in one batched call (one jitted computation in the trainer).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_gen.diffusion import core


def inversion_timesteps(schedule: core.Schedule, s: int, ddim_steps: int = 0) -> np.ndarray:
  """The DDIM timesteps from 0 up to step s (1-based: s = T is pure noise), `ddim_steps`
  of them (0: all s)."""
  T = schedule.num_steps
  if not 1 <= int(s) <= T:
    raise ValueError(f"pfedgpa.s={s} (the inversion depth) must lie in [1, T={T}] "
                     f"(pfedgpa.timesteps).")
  n = int(s) if not ddim_steps else min(int(ddim_steps), int(s))
  return core.ddim_timesteps(schedule, n, last=int(s) - 1)


INVERSIONS = ("ddim", "noise")


def invert(eps_fn: core.EpsFn, schedule: core.Schedule, x0: jax.Array, timesteps, *,
           inversion: str = "ddim", key: jax.Array | None = None,
           fixed_point_iters: int = 0) -> jax.Array:
  """`x0 [B, ...]` to step `timesteps[-1]`: "ddim", deterministic DDIM inversion (the
  paper's); "noise", a draw of q(x_s | x0) with fresh noise from `key` (SDEdit's start),
  which forgets the detail of `x0` below the noise level of step s."""
  if inversion == "ddim":
    return core.ddim_invert(eps_fn, schedule, x0, timesteps,
                            fixed_point_iters=fixed_point_iters)
  if inversion != "noise":
    raise ValueError(f"Unknown pfedgpa.inversion {inversion!r}; valid: {', '.join(INVERSIONS)}.")
  if key is None:
    raise ValueError('inversion="noise" draws noise: pass `key`.')
  t = jnp.full(x0.shape[:1], int(timesteps[-1]), jnp.int32)
  return core.add_noise(schedule, x0, t, jax.random.normal(key, x0.shape, x0.dtype))


def invert_denoise(eps_fn: core.EpsFn, schedule: core.Schedule, x0: jax.Array, timesteps, *,
                   inversion: str = "ddim", key: jax.Array | None = None,
                   fixed_point_iters: int = 0) -> jax.Array:
  """Inverts `x0` to `timesteps[-1]` (`invert`) and DDIM-denoises it back to step 0 with
  the same model: pFedGPA's aggregation of each upload. With DDIM inversion and the exact
  noise of a point mass at `x0` (or any denoiser, with enough `fixed_point_iters`) it
  returns `x0`; otherwise the round trip moves `x0` toward what the model learned of all
  clients."""
  x_s = invert(eps_fn, schedule, x0, timesteps, inversion=inversion, key=key,
               fixed_point_iters=fixed_point_iters)
  return core.ddim_sample(eps_fn, schedule, x_s, timesteps)


def guided_denoise(eps_fn: core.EpsFn, schedule: core.Schedule, x: jax.Array,
                   direction: jax.Array, omega: float, timesteps, *,
                   inversion: str = "ddim", key: jax.Array | None = None,
                   fixed_point_iters: int = 0) -> jax.Array:
  """A newcomer's guided denoising: invert `x` to step s (`invert`), then DDIM down with
  the noise prediction `eps(x_t, t) - (1 + omega) * direction` (`direction` like x)."""
  x_s = invert(eps_fn, schedule, x, timesteps, inversion=inversion, key=key,
               fixed_point_iters=fixed_point_iters)
  guided = lambda xt, t, cond: eps_fn(xt, t, cond) - (1.0 + omega) * direction
  return core.ddim_sample(guided, schedule, x_s, timesteps)


def train_denoiser(loss_eps: Callable, opt: optax.GradientTransformation, params, opt_state,
                   schedule: core.Schedule, data: jax.Array, count: jax.Array, key: jax.Array,
                   *, steps: int, batch_size: int, snr_gamma: float | None = None):
  """`steps` Adam (or `opt`) steps of the DDPM loss on rows of `data [K, ...]` drawn
  uniformly with replacement from the first `count` (the valid part of a ring buffer).

  `loss_eps(params)` returns the denoiser's `eps_fn`; `snr_gamma` as in `core.ddpm_loss`.
  Returns `(params, opt_state, mean loss)`. Step i uses `fold_in(key, i)`.
  """
  if steps == 0:
    return params, opt_state, jnp.zeros(())

  def body(i, carry):
    p, o, total = carry
    k_idx, k_loss = jax.random.split(jax.random.fold_in(key, i))
    idx = jax.random.randint(k_idx, (batch_size,), 0, jnp.maximum(count, 1))
    loss, g = jax.value_and_grad(
        lambda q: core.ddpm_loss(loss_eps(q), schedule, data[idx], k_loss,
                                 snr_gamma=snr_gamma))(p)
    updates, o = opt.update(g, o, p)
    return optax.apply_updates(p, updates), o, total + loss

  params, opt_state, total = jax.lax.fori_loop(0, steps, body,
                                               (params, opt_state, jnp.zeros(())))
  return params, opt_state, total / steps
