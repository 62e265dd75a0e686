"""The diffusion core on cases with known answers: oracle denoisers of point-mass and
Gaussian data, where the exact noise prediction is a closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_gen.diffusion import core


def point_mass_oracle(schedule, x_star):
  """The exact eps-prediction when all data equals `x_star`."""
  def eps_fn(x, t, cond):
    abar = schedule.alphas_cumprod[t].reshape((-1,) + (1,) * (x.ndim - 1))
    return (x - jnp.sqrt(abar) * x_star) / jnp.sqrt(1 - abar)
  return eps_fn


def gaussian_oracle(schedule, mu, s):
  """The exact E[eps | x_t] for data ~ N(mu, s^2 I)."""
  def eps_fn(x, t, cond):
    abar = schedule.alphas_cumprod[t].reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.sqrt(1 - abar) * (x - jnp.sqrt(abar) * mu) / (abar * s**2 + 1 - abar)
  return eps_fn


def smooth_net(dim, seed=0):
  """A fixed, nonlinear, time-dependent denoiser (a random 2-layer MLP)."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  w1 = jax.random.normal(k1, (dim + 1, 32)) / np.sqrt(dim)
  w2 = jax.random.normal(k2, (32, dim)) * 0.3 / np.sqrt(32)
  def eps_fn(x, t, cond):
    h = jnp.tanh(jnp.concatenate([x, t[:, None] / 1000.0], 1) @ w1)
    return 0.5 * x + h @ w2
  return eps_fn


@pytest.mark.parametrize("name", core.SCHEDULES)
def test_schedules_are_valid(name):
  s = core.make_schedule(name, 1000)
  betas, abar = np.asarray(s.betas), np.asarray(s.alphas_cumprod)
  assert s.num_steps == 1000
  assert np.all((betas > 0) & (betas < 1))
  assert np.all(np.diff(abar) < 0)
  assert abar[0] > 0.99 and abar[-1] < 0.01


def test_linear_schedule_matches_ddpm_paper():
  s = core.make_schedule("linear", 1000)
  np.testing.assert_allclose([s.betas[0], s.betas[-1]], [1e-4, 0.02], rtol=1e-6)
  np.testing.assert_allclose(s.alphas_cumprod[10], np.prod(1 - np.linspace(1e-4, 0.02, 1000)[:11]),
                             rtol=1e-5)


def test_add_noise_and_predict_x0_round_trip():
  s = core.make_schedule("cosine", 100)
  x0 = jax.random.normal(jax.random.key(0), (4, 3, 5))
  noise = jax.random.normal(jax.random.key(1), x0.shape)
  t = jnp.array([0, 10, 50, 99])
  xt = core.add_noise(s, x0, t, noise)
  np.testing.assert_allclose(core.predict_x0(s, xt, t, noise), x0, atol=2e-3)
  np.testing.assert_allclose(core.eps_from_x0(s, xt, t, x0), noise, atol=2e-3)


@pytest.mark.parametrize("fixed_point_iters", [0, 3])
def test_inversion_then_sampling_with_exact_denoiser_returns_input(fixed_point_iters):
  """With the true noise of each upload (a point mass at x*), DDIM inversion to step s
  and DDIM denoising back return x* (pFedGPA depends on this)."""
  s = core.make_schedule("linear", 1000)
  x_star = jax.random.normal(jax.random.key(0), (3, 7))
  eps_fn = point_mass_oracle(s, x_star)
  ts = core.ddim_timesteps(s, 20, last=600)
  x_s = core.ddim_invert(eps_fn, s, x_star, ts, fixed_point_iters=fixed_point_iters)
  abar = s.alphas_cumprod[ts[-1]]
  assert float(jnp.abs(x_s - jnp.sqrt(abar) * x_star).max()) > 0.01  # it moved
  np.testing.assert_allclose(core.ddim_sample(eps_fn, s, x_s, ts), x_star, atol=1e-4)


def test_inversion_with_fixed_point_iterations_is_inverted_by_sampling():
  """For a generic (learned-like) denoiser, fixed-point refined inversion is undone by the
  deterministic sampler much more exactly than the plain approximation."""
  s = core.make_schedule("linear", 1000)
  eps_fn = smooth_net(6)
  x0 = jax.random.normal(jax.random.key(3), (5, 6))
  ts = core.ddim_timesteps(s, 50, last=500)
  err = lambda k: float(jnp.abs(core.ddim_sample(
      eps_fn, s, core.ddim_invert(eps_fn, s, x0, ts, fixed_point_iters=k), ts) - x0).max())
  assert err(0) < 0.1
  assert err(8) < 1e-3
  assert err(8) < err(0) / 10


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_with_exact_denoiser_recover_gaussian_data(sampler):
  s = core.make_schedule("linear", 200)
  mu, std = 1.5, 0.5
  eps_fn = gaussian_oracle(s, mu, std)
  key = jax.random.key(0)
  if sampler == "ddpm":
    x = core.ddpm_sample(eps_fn, s, key, (4000, 2))
  else:
    x = core.ddim_sample(eps_fn, s, jax.random.normal(key, (4000, 2)),
                         core.ddim_timesteps(s, 50))
  assert abs(float(x.mean()) - mu) < 0.03
  assert abs(float(x.std()) - std) < 0.03


def test_ddim_clipping_keeps_the_noise_consistent_with_the_clipped_x0():
  # At t1 the denoiser points at data x* = 3, outside clip_x0 = 1; at t0 it predicts eps = 0
  # (so the output is x_t0 / sqrt(abar_t0), clipped). DDIM must step with the noise implied
  # by the clipped x_0 = 1, i.e. as if the data were 1: x_t0 = sqrt(a0) + sqrt(1-a0) e',
  # e' = (x_t1 - sqrt(a1)) / sqrt(1-a1). The raw eps of x* = 3 would land elsewhere.
  s = core.make_schedule("linear", 100)
  t0, t1 = 10, 50
  oracle = point_mass_oracle(s, 3.0)
  eps_fn = lambda x, t, c: jnp.where((t == t1)[:, None], oracle(x, t, c), 0.0)
  x_t1 = jnp.array([[-1.5], [-0.5]])
  a0, a1 = float(s.alphas_cumprod[t0]), float(s.alphas_cumprod[t1])
  e = (x_t1 - np.sqrt(a1)) / np.sqrt(1 - a1)
  expected = np.clip((np.sqrt(a0) + np.sqrt(1 - a0) * e) / np.sqrt(a0), -1, 1)
  assert np.all(np.abs(expected) < 1)  # the final clip is not what the test sees
  out = core.ddim_sample(eps_fn, s, x_t1, np.array([t0, t1]), clip_x0=1.0)
  np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_sampling_is_jittable_and_deterministic():
  s = core.make_schedule("cosine", 100)
  eps_fn = smooth_net(4)
  ts = core.ddim_timesteps(s, 10)
  run = jax.jit(lambda x: core.ddim_sample(eps_fn, s, x, ts))
  x = jax.random.normal(jax.random.key(0), (2, 4))
  np.testing.assert_array_equal(run(x), run(x))
  np.testing.assert_allclose(run(x), core.ddim_sample(eps_fn, s, x, ts), atol=1e-5)


def test_ddpm_loss_is_zero_for_the_exact_point_mass_denoiser_and_masks():
  s = core.make_schedule("linear", 1000)
  x_star = jnp.ones((6, 3))
  loss = core.ddpm_loss(point_mass_oracle(s, x_star), s, x_star, jax.random.key(0))
  assert float(loss) < 1e-6
  zero = lambda x, t, c: jnp.zeros_like(x)
  x0 = jnp.zeros((2, 5000))
  # predicting 0 costs E[eps^2] = 1; masked-out examples do not count.
  np.testing.assert_allclose(core.ddpm_loss(zero, s, x0, jax.random.key(1)), 1.0, atol=0.05)
  wrong = lambda x, t, c: jnp.where(jnp.arange(2)[:, None] == 1, 100.0, 0.0) * jnp.ones_like(x)
  masked = core.ddpm_loss(wrong, s, x0, jax.random.key(1), mask=jnp.array([True, False]))
  np.testing.assert_allclose(masked, 1.0, atol=0.1)


def test_min_snr_weighting_scales_each_timestep_by_min_snr_gamma_over_snr():
  s = core.make_schedule("linear", 100)
  zero = lambda x, t, c: jnp.zeros_like(x)
  snr = s.alphas_cumprod / (1 - s.alphas_cumprod)
  want = float(jnp.mean(jnp.minimum(snr, 5.0) / snr))  # E over uniform t of weight * 1
  got = core.ddpm_loss(zero, s, jnp.zeros((4000, 64)), jax.random.key(2), snr_gamma=5.0)
  np.testing.assert_allclose(got, want, rtol=0.05)


def test_classifier_free_guidance_combines_conditional_and_null_predictions():
  eps_fn = lambda x, t, c: x * c[:, None].astype(x.dtype)  # eps_c = c*x, eps_null = 0*x
  x, t, c = jnp.ones((3, 2)), jnp.zeros(3, jnp.int32), jnp.array([1, 2, 3])
  np.testing.assert_allclose(core.guided(eps_fn, 1.0, 0)(x, t, c), eps_fn(x, t, c))
  np.testing.assert_allclose(core.guided(eps_fn, 0.0, 0)(x, t, c), 0 * x)
  np.testing.assert_allclose(core.guided(eps_fn, 3.0, 0)(x, t, c), 3 * eps_fn(x, t, c))
  with pytest.raises(ValueError, match="guidance scale must be >= 0"):
    core.guided(eps_fn, -1.0, 0)


def test_drop_condition_drops_about_the_requested_share():
  c = jnp.arange(10000) % 7
  dropped = core.drop_condition(jax.random.key(0), c, 7, 0.2)
  share = float((dropped == 7).mean())
  assert 0.18 < share < 0.22
  np.testing.assert_array_equal(dropped[dropped != 7], c[dropped != 7])


def test_bad_schedule_and_timesteps_are_clear_errors():
  with pytest.raises(ValueError, match="Unknown noise schedule"):
    core.make_schedule("quadratic")
  s = core.make_schedule("linear", 100)
  with pytest.raises(ValueError, match="last timestep"):
    core.ddim_timesteps(s, 10, last=100)
  with pytest.raises(ValueError, match="DDIM needs"):
    core.ddim_timesteps(s, 0)
