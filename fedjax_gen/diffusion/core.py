"""The diffusion core: noise schedules, the DDPM loss, DDPM/DDIM samplers, DDIM inversion
and classifier-free guidance -- for any denoiser over arrays of any shape.

A denoiser is a function `eps_fn(x, t, cond) -> eps`: `x` is a batch `[B, ...]` (images,
or flattened parameter vectors for pFedGPA), `t` an int32 `[B]` of timesteps in
`[0, T)`, `cond` any batched pytree (class labels, or None) and `eps` the predicted noise,
shaped like `x`. Everything here is a pure function of arrays, traceable under `jit` and
`vmap`; the samplers loop with `lax.scan`, so `jax.jit(functools.partial(ddim_sample,
eps_fn, schedule))` compiles a whole sampling run once.

References: Ho et al., "Denoising Diffusion Probabilistic Models" (2020); Nichol & Dhariwal,
"Improved DDPM" (2021, the cosine schedule); Song et al., "Denoising Diffusion Implicit
Models" (2021, DDIM and its inversion); Ho & Salimans, "Classifier-Free Diffusion Guidance"
(2022).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

EpsFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
SCHEDULES = ("linear", "cosine")


class Schedule(NamedTuple):
  """A discrete noise schedule of T steps: `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`."""
  betas: jax.Array           # [T] float32
  alphas_cumprod: jax.Array  # [T] float32, abar_t

  @property
  def num_steps(self) -> int:
    return self.betas.shape[0]


def make_schedule(name: str = "linear", num_steps: int = 1000, *, beta_start: float = 1e-4,
                  beta_end: float = 0.02, cosine_s: float = 0.008) -> Schedule:
  """The linear schedule of DDPM (betas from `beta_start` to `beta_end`, for T=1000; scaled
  by 1000/T otherwise) or the cosine schedule of Improved DDPM (betas capped at 0.999)."""
  if name not in SCHEDULES:
    raise ValueError(f"Unknown noise schedule {name!r}; valid: {', '.join(SCHEDULES)}.")
  if int(num_steps) < 1:
    raise ValueError(f"The number of diffusion steps must be >= 1, got {num_steps}.")
  t = np.arange(num_steps, dtype=np.float64)
  if name == "linear":
    scale = 1000.0 / num_steps
    betas = np.linspace(scale * beta_start, min(scale * beta_end, 0.999), num_steps)
  else:
    f = lambda u: np.cos((u / num_steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
    betas = np.minimum(1 - f(t + 1) / f(t), 0.999)
  abar = np.cumprod(1 - betas)
  return Schedule(jnp.asarray(betas, jnp.float32), jnp.asarray(abar, jnp.float32))


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """A per-example `[B]` (or scalar) value shaped to broadcast against `x` `[B, ...]`."""
  v = jnp.asarray(v, x.dtype)
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def _abar(schedule: Schedule, t: jax.Array) -> jax.Array:
  """abar_t, with abar_{-1} = 1 (the clean data) so that loops can end at x_0."""
  return jnp.where(t >= 0, schedule.alphas_cumprod[jnp.maximum(t, 0)], 1.0)


def add_noise(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """q(x_t | x_0): `sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise`, t per example."""
  abar = _bcast(_abar(schedule, t), x0)
  return jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * noise


def predict_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
  abar = _bcast(_abar(schedule, t), x_t)
  return (x_t - jnp.sqrt(1 - abar) * eps) / jnp.sqrt(abar)


def eps_from_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
  """The noise implied by a predicted x_0 (the inverse of `predict_x0`)."""
  abar = _bcast(_abar(schedule, t), x_t)
  return (x_t - jnp.sqrt(abar) * x0) / jnp.sqrt(1 - abar)


def ddpm_loss(eps_fn: EpsFn, schedule: Schedule, x0: jax.Array, key: jax.Array, *,
              cond: Any = None, mask: jax.Array | None = None,
              snr_gamma: float | None = None) -> jax.Array:
  """The noise-prediction loss `|eps - eps_fn(x_t, t, cond)|^2` (simple loss of DDPM),
  t uniform in [0, T); mean over each example's elements, then a (masked) batch mean.

  `snr_gamma` weights each example by min(SNR_t, gamma) / SNR_t (Min-SNR, Hang et al.
  2023): for x_0-predicting models, whose eps error at small t is their x_0 error times
  sqrt(SNR_t), it caps that amplification at gamma."""
  k_t, k_eps = jax.random.split(key)
  t = jax.random.randint(k_t, x0.shape[:1], 0, schedule.num_steps)
  noise = jax.random.normal(k_eps, x0.shape, x0.dtype)
  err = jnp.square(eps_fn(add_noise(schedule, x0, t, noise), t, cond) - noise)
  per_example = err.reshape(x0.shape[0], -1).mean(axis=1)
  if snr_gamma is not None:
    abar = _abar(schedule, t)
    snr = abar / (1 - abar)
    per_example = per_example * jnp.minimum(snr, snr_gamma) / snr
  if mask is None:
    return per_example.mean()
  mask = mask.astype(per_example.dtype)
  return (per_example * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def drop_condition(key: jax.Array, cond: jax.Array, null_cond, prob: float) -> jax.Array:
  """Replaces each example's condition by `null_cond` with probability `prob` (training a
  denoiser for classifier-free guidance: one network, conditional and unconditional)."""
  drop = jax.random.bernoulli(key, prob, cond.shape[:1])
  return jnp.where(_bcast(drop, cond), jnp.asarray(null_cond, cond.dtype), cond)


def guided(eps_fn: EpsFn, scale: float, null_cond) -> EpsFn:
  """Classifier-free guidance: `eps_u + scale * (eps_c - eps_u)` with `eps_u` the prediction
  under `null_cond`. scale 1 is the plain conditional model, 0 the unconditional one. The
  two predictions are one batched call of `eps_fn`."""
  if scale < 0:
    raise ValueError(f"The guidance scale must be >= 0, got {scale}.")

  def fn(x, t, cond):
    if scale == 1.0:
      return eps_fn(x, t, cond)
    null = jax.tree.map(lambda c, n: jnp.broadcast_to(jnp.asarray(n, c.dtype), c.shape),
                        cond, null_cond)
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), cond, null)
    eps_c, eps_u = jnp.split(eps_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both), 2)
    return eps_u + scale * (eps_c - eps_u)
  return fn


def ddim_timesteps(schedule: Schedule, num_steps: int, *, last: int | None = None) -> np.ndarray:
  """`num_steps` increasing timesteps evenly spread over [0, last] (default T - 1): the
  sub-sequence a DDIM sampler visits (it walks it downwards; inversion walks it upwards)."""
  last = schedule.num_steps - 1 if last is None else int(last)
  if not 0 <= last < schedule.num_steps:
    raise ValueError(f"The last timestep must lie in [0, {schedule.num_steps - 1}], got {last}.")
  if not 1 <= int(num_steps) <= last + 1:
    raise ValueError(f"DDIM needs between 1 and {last + 1} steps to reach t={last}, got "
                     f"{num_steps}.")
  return np.unique(np.round(np.linspace(0, last, int(num_steps))).astype(np.int32))


def _clipped(schedule, x, t, eps, clip):
  """Predicted x_0 clipped to [-clip, clip], and the noise that agrees with it (as guided
  diffusion's DDIM does): keeping the raw eps beside a clipped x_0 lets a large guided eps
  push samples out of range."""
  x0 = predict_x0(schedule, x, t, eps)
  if clip is None:
    return x0, eps
  x0 = jnp.clip(x0, -clip, clip)
  abar = _bcast(_abar(schedule, t), x)
  return x0, (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1 - abar)


def _ddim_move(schedule, x, eps, t_from, t_to, clip):
  """Deterministic DDIM update from timestep t_from to t_to (either direction)."""
  x0, eps = _clipped(schedule, x, t_from, eps, clip)
  abar_to = _bcast(_abar(schedule, t_to), x)
  return jnp.sqrt(abar_to) * x0 + jnp.sqrt(1 - abar_to) * eps


def ddim_sample(eps_fn: EpsFn, schedule: Schedule, x_t: jax.Array, timesteps, *,
                cond: Any = None, eta: float = 0.0, key: jax.Array | None = None,
                clip_x0: float | None = None) -> jax.Array:
  """DDIM from `x_t` at `timesteps[-1]` down to x_0, visiting `timesteps` (increasing).

  `eta` = 0 is the deterministic sampler (the inverse of `ddim_invert`); eta = 1 adds
  DDPM-like noise (needs `key`). `clip_x0` clips predicted x_0 to [-c, c] (images).
  """
  ts = jnp.asarray(timesteps, jnp.int32)
  pairs = jnp.stack([ts[::-1], jnp.concatenate([ts[::-1][1:], jnp.array([-1], jnp.int32)])], 1)
  if eta and key is None:
    raise ValueError("ddim_sample with eta > 0 draws noise: pass `key`.")
  key = jax.random.PRNGKey(0) if key is None else key

  def step(x, pair_i):
    (t, t_prev), i = pair_i
    tb = jnp.full(x.shape[:1], t, jnp.int32)
    eps = eps_fn(x, tb, cond)
    if not eta:
      return _ddim_move(schedule, x, eps, t, t_prev, clip_x0), None
    abar, abar_prev = _abar(schedule, t), _abar(schedule, t_prev)
    sigma = eta * jnp.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
    x0, eps = _clipped(schedule, x, t, eps, clip_x0)
    noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
    x = (jnp.sqrt(abar_prev) * x0 + jnp.sqrt(jnp.maximum(1 - abar_prev - sigma**2, 0)) * eps
         + sigma * noise)
    return x, None

  x, _ = jax.lax.scan(step, x_t, (pairs, jnp.arange(pairs.shape[0])))
  return x


def ddim_invert(eps_fn: EpsFn, schedule: Schedule, x0: jax.Array, timesteps, *,
                cond: Any = None, fixed_point_iters: int = 0) -> jax.Array:
  """Deterministic DDIM inversion: x_0 up to x at `timesteps[-1]` (Song et al. 2021).

  Each step from t_prev to t reuses the DDIM update backwards. The plain form evaluates the
  denoiser at the lower timestep (an approximation, exact as steps shrink);
  `fixed_point_iters` > 0 refines each step by solving `x_t = move(x_prev, eps(x_t, t))`
  by fixed-point iteration, so that `ddim_sample` undoes it to numerical precision.
  """
  ts = jnp.asarray(timesteps, jnp.int32)
  pairs = jnp.stack([jnp.concatenate([jnp.array([-1], jnp.int32), ts[:-1]]), ts], 1)

  def step(x, pair):
    t_prev, t = pair
    eps = eps_fn(x, jnp.full(x.shape[:1], jnp.maximum(t_prev, 0), jnp.int32), cond)
    x_t = _ddim_move(schedule, x, eps, t_prev, t, None)
    for _ in range(fixed_point_iters):
      eps = eps_fn(x_t, jnp.full(x.shape[:1], t, jnp.int32), cond)
      x_t = _ddim_move(schedule, x, eps, t_prev, t, None)
    return x_t, None

  x, _ = jax.lax.scan(step, x0, pairs)
  return x


def ddpm_sample(eps_fn: EpsFn, schedule: Schedule, key: jax.Array, shape, *,
                cond: Any = None, clip_x0: float | None = None) -> jax.Array:
  """Ancestral DDPM sampling over all T steps from x_T ~ N(0, I) (posterior variance)."""
  k0, key = jax.random.split(key)
  x = jax.random.normal(k0, shape)

  def step(x, t):
    abar, abar_prev = _abar(schedule, t), _abar(schedule, t - 1)
    beta = schedule.betas[t]
    eps = eps_fn(x, jnp.full(shape[:1], t, jnp.int32), cond)
    x0 = predict_x0(schedule, x, t, eps)
    if clip_x0 is not None:
      x0 = jnp.clip(x0, -clip_x0, clip_x0)
    # Posterior mean of q(x_{t-1} | x_t, x_0) and its variance.
    mean = (jnp.sqrt(abar_prev) * beta / (1 - abar) * x0
            + jnp.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar) * x)
    var = beta * (1 - abar_prev) / (1 - abar)
    noise = jax.random.normal(jax.random.fold_in(key, t), shape)
    return mean + jnp.where(t > 0, jnp.sqrt(var), 0.0) * noise, None

  x, _ = jax.lax.scan(step, x, jnp.arange(schedule.num_steps - 1, -1, -1))
  return x
