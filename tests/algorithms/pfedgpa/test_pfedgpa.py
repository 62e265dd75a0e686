"""pFedGPA: tokenisation round trips, inversion + denoising with oracle denoisers, the
algorithm in the engine, and errors raised before training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_gen import config as config_lib
from fedjax_gen.algorithms import make_algorithm
from fedjax_gen.diffusion import core
from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation
from fedjax_gen.algorithms.pfedgpa import (PFedGPAOptions, aggregate, check_options, make_layout,
                                options_from_config, pfedgpa, tokenize)
from tests.diffusion.test_core import gaussian_oracle, point_mass_oracle
from tests.helpers import assert_trees_close, normnet_problem

SMALL = PFedGPAOptions(token_size=8, width=16, depth=1, heads=2, timesteps=20, s=5,
                       buffer=6, train_steps=3, batch=4, init_rounds=2)


def random_params(params, seed=0):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape) * (i + 1)
                                      for i, (k, x) in enumerate(zip(keys, leaves))])


# --- tokenisation ----------------------------------------------------------------------
@pytest.mark.parametrize("pad", ["end", "layer"])
@pytest.mark.parametrize("layers", [(), ("body", "head")])
def test_tokens_round_trip_the_params_exactly(pad, layers):
  _, _, params, _ = normnet_problem()
  params = random_params(params)
  layout = make_layout(params, layers=layers, token_size=7, pad=pad)
  flat = tokenize.flatten(layout, params)
  tokens = tokenize.to_tokens(layout, flat)
  assert tokens.shape == (layout.num_tokens, 7)
  back = tokenize.unflatten(layout, tokenize.from_tokens(layout, tokens), params)
  assert_trees_close(back, params, atol=0, rtol=0)
  # An unselected layer comes from the template, untouched.
  other = tokenize.unflatten(layout, tokenize.from_tokens(layout, tokens),
                             jax.tree.map(jnp.zeros_like, params))
  for name in params:
    want = params[name] if (not layers or name in layers) else jax.tree.map(
        jnp.zeros_like, params[name])
    assert_trees_close(other[name], want, atol=0, rtol=0)


def test_layer_padding_keeps_layers_in_their_own_tokens():
  _, _, params, _ = normnet_problem()  # body 4x5+5, norm 5+5, head 5x3+3
  layout = make_layout(params, token_size=4, pad="layer")
  sizes = [int(np.prod(s)) for s in layout.shapes]
  assert layout.num_tokens == sum(-(-n // 4) for n in sizes)
  slot_leaf = np.full(layout.num_tokens * 4, -1)
  slot_leaf[layout.scatter] = layout.segment
  for tok in slot_leaf.reshape(-1, 4):
    assert len(set(tok[tok >= 0])) == 1


def test_vmapped_tokens_and_normalisation_invert():
  _, _, params, _ = normnet_problem()
  stacked = jax.vmap(lambda k: random_params(params, k))(jnp.arange(5))
  layout = make_layout(params, token_size=16)
  flats = jax.vmap(lambda p: tokenize.flatten(layout, p))(stacked)
  for norm in ("layer", "element"):
    stats = tokenize.fit_stats(layout, flats, jnp.arange(5) < 4, norm=norm)
    z = jax.vmap(lambda f: tokenize.normalize(stats, f))(flats[:4])
    if norm == "element":
      np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
      np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
    tok = jax.vmap(lambda p: tokenize.encode(layout, stats, p))(stacked)
    back = jax.vmap(lambda t, p: tokenize.decode(layout, stats, t, p))(tok, stacked)
    assert_trees_close(back, stacked, atol=1e-5, rtol=1e-5)


# --- inversion + denoising with oracle denoisers -----------------------------------------
def test_inversion_then_denoising_with_true_noise_returns_each_upload():
  """The point-mass oracle of each upload (its exact noise): the round trip is exact,
  through tokenisation and per-layer normalisation, for all clients at once."""
  _, _, params, _ = normnet_problem()
  uploads = jax.vmap(lambda k: random_params(params, k))(jnp.arange(3))
  layout = make_layout(params, token_size=8)
  flats = jax.vmap(lambda p: tokenize.flatten(layout, p))(uploads)
  stats = tokenize.fit_stats(layout, flats, jnp.ones(3, bool))
  x0 = jax.vmap(lambda p: tokenize.encode(layout, stats, p))(uploads)
  schedule = core.make_schedule("linear", 100)
  for s, steps in ((20, 0), (100, 10), (1, 0)):
    ts = aggregate.inversion_timesteps(schedule, s, steps)
    out = aggregate.invert_denoise(point_mass_oracle(schedule, x0), schedule, x0, ts)
    back = jax.vmap(lambda t, p: tokenize.decode(layout, stats, t, p))(out, uploads)
    assert_trees_close(back, uploads, atol=2e-4, rtol=1e-4)


def test_inversion_then_denoising_with_gaussian_oracle_returns_input():
  schedule = core.make_schedule("linear", 100)
  mu = jnp.linspace(-1, 1, 24).reshape(3, 8)
  x0 = mu[None] + 0.3 * jax.random.normal(jax.random.key(0), (4, 3, 8))
  ts = aggregate.inversion_timesteps(schedule, 30)
  out = aggregate.invert_denoise(gaussian_oracle(schedule, mu, 0.3), schedule, x0, ts,
                                 fixed_point_iters=4)
  np.testing.assert_allclose(out, x0, atol=1e-4)


def test_noised_inversion_forgets_the_upload_and_the_true_noise_restores_it():
  """inversion="noise" draws x_s ~ q(x_s | x0): the point-mass oracle still denoises it to
  x0 exactly, while a Gaussian oracle's output depends on the draw (the detail below the
  noise level is the model's) and is pulled toward the learned mean."""
  schedule = core.make_schedule("linear", 100)
  mu = jnp.linspace(-1, 1, 24).reshape(3, 8)
  x0 = mu[None] + 2.0 * jax.random.normal(jax.random.key(0), (4, 3, 8))
  ts = aggregate.inversion_timesteps(schedule, 30)
  key = jax.random.key(5)
  out = aggregate.invert_denoise(point_mass_oracle(schedule, x0), schedule, x0, ts,
                                 inversion="noise", key=key)
  np.testing.assert_allclose(out, x0, atol=1e-4)
  gauss = gaussian_oracle(schedule, mu, 0.3)
  a, b = (aggregate.invert_denoise(gauss, schedule, x0, ts, inversion="noise", key=k)
          for k in (key, jax.random.key(6)))
  assert float(jnp.abs(a - b).max()) > 1e-2
  assert float(jnp.linalg.norm(a - mu)) < float(jnp.linalg.norm(x0 - mu))
  with pytest.raises(ValueError, match="pass `key`"):
    aggregate.invert_denoise(gauss, schedule, x0, ts, inversion="noise")
  with pytest.raises(ValueError, match="pfedgpa.inversion"):
    aggregate.invert_denoise(gauss, schedule, x0, ts, inversion="sde")


def test_guidance_moves_along_the_local_update():
  """With a denoiser that predicts a fixed noise e (data x0 + multiples of e lie on one
  DDIM path), inversion is exact and the guided run lands at x0 + (1 + omega)
  sqrt((1 - abar_s) / abar_s) d: along d = theta_l - theta_{l-1} for guidance=update.
  (An exact point-mass oracle would instead pull every deviation back to its point.)"""
  schedule = core.make_schedule("linear", 100)
  x = jax.random.normal(jax.random.key(1), (1, 4, 8))
  e = jax.random.normal(jax.random.key(3), x.shape)
  d = 0.01 * jax.random.normal(jax.random.key(2), x.shape)
  ts = aggregate.inversion_timesteps(schedule, 20)
  out = aggregate.guided_denoise(lambda xt, t, c: e, schedule, x, d, 0.5, ts)
  abar = schedule.alphas_cumprod[19]
  np.testing.assert_allclose(out - x, 1.5 * jnp.sqrt((1 - abar) / abar) * d, rtol=1e-2,
                             atol=2e-5)
  np.testing.assert_allclose(aggregate.guided_denoise(lambda xt, t, c: e, schedule, x, d,
                                                      -1.0, ts), x, atol=2e-5)


# --- denoisers ---------------------------------------------------------------------------
def test_lowrank_denoiser_learns_a_low_dimensional_set_the_token_model_cannot():
  """Uploads that share a per-parameter mean and differ along 2 directions: the x0-
  predicting low-rank model fits them (DDPM loss far below 1, the loss of eps = 0), the
  per-token transformer of the same width (narrower than a token, as by default: 64 <
  256) does not."""
  from fedjax_gen.algorithms.pfedgpa import denoiser as den
  schedule = core.make_schedule("linear", 100)
  k = jax.random.split(jax.random.key(0), 3)
  base, dirs = jax.random.normal(k[0], (8, 64)), jax.random.normal(k[1], (2, 8, 64))
  data = base + jnp.einsum("bk,kij->bij", jax.random.normal(k[2], (24, 2)), dirs)
  losses = {}
  for name in ("lowrank", "transformer"):
    model = den.make_denoiser(name, num_tokens=8, token_size=64, width=16, depth=1, heads=2)
    p = den.init_denoiser(model, jax.random.key(1))
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    eps_of = lambda q, m=model: den.eps_fn_of(m, q, schedule)
    p, _, _ = aggregate.train_denoiser(eps_of, opt, p, opt.init(p), schedule, data,
                                       jnp.asarray(24), jax.random.key(2), steps=300,
                                       batch_size=8, snr_gamma=den.snr_gamma(model))
    losses[name] = float(jnp.mean(jnp.stack([core.ddpm_loss(
        eps_of(p), schedule, data, jax.random.key(10 + i)) for i in range(4)])))
  assert losses["lowrank"] < 0.3 < 0.6 < losses["transformer"], losses


# --- the algorithm in the engine -------------------------------------------------------
def run_rounds(options, n=3, per_round=3):
  train, _, params, loss_fn = normnet_problem()
  alg = pfedgpa(loss_fn, optax.sgd(0.2), params, options, clients_per_round=per_round)
  sim = Simulation(alg, train, LocalSchedule(2, 1, 0), clients_per_round=per_round,
                   plan=ExecutionPlan(1, 0), time_split=True)
  server, states = sim.init(params)
  for r in range(n):
    server, states, _ = sim.round(server, states, jax.random.key(r))
  return sim, alg, params, server, states


def test_rounds_train_the_denoiser_and_personalize_each_client():
  sim, _, params, server, states = run_rounds(SMALL)
  assert int(server.round) == 3 and int(server.buffer_count) == 6
  assert float(server.diffusion_loss) > 0
  assert set(sim.last_timing) == {"client_s", "server_s"}
  personal = [jax.tree.map(lambda a: a[i], states.params) for i in range(3)]
  assert not np.allclose(personal[0]["head"]["kernel"], personal[1]["head"]["kernel"])
  assert np.isfinite(np.concatenate([np.ravel(x) for x in jax.tree.leaves(states)])).all()


def test_rounds_are_deterministic_from_the_seed():
  a = run_rounds(SMALL, n=2)[4]
  b = run_rounds(SMALL, n=2)[4]
  assert_trees_close(a, b, atol=0, rtol=0)


def test_noised_inversion_runs_deterministically_in_rounds_and_for_newcomers():
  noisy = SMALL._replace(inversion="noise")
  sim, alg, _, server, states = run_rounds(noisy, n=2)
  assert_trees_close(states, run_rounds(noisy, n=2)[4], atol=0, rtol=0)
  assert not np.allclose(states.params["head"]["kernel"],
                         run_rounds(SMALL, n=2)[4].params["head"]["kernel"])
  out = [sim.adapt(alg.newcomer, server, states, [0, 1], jax.random.key(k), steps=4)
         for k in (9, 9, 10)]
  assert_trees_close(out[0], out[1], atol=0, rtol=0)
  assert not np.allclose(out[0]["head"]["kernel"], out[2]["head"]["kernel"])


def test_ablations_mean_is_fedavg_and_identity_is_local():
  _, _, _, server, states = run_rounds(SMALL._replace(aggregation="mean"), n=2)
  for i in range(3):
    assert_trees_close(jax.tree.map(lambda a: a[i], states.params), server.params)
  _, _, params, server, states = run_rounds(SMALL._replace(aggregation="identity"), n=2)
  assert not np.allclose(states.params["head"]["kernel"][0], server.params["head"]["kernel"])


def test_newcomers_run_guided_initialisation_rounds():
  sim, alg, _, server, states = run_rounds(SMALL)
  fresh = jax.tree.map(lambda a: a, states)
  out = sim.adapt(alg.newcomer, server, fresh, [0, 1], jax.random.key(9), steps=4)
  ft = sim.adapt(make_algorithm("fedavg_ft", normnet_problem()[3], lr=0.2,
                                num_clients=3).newcomer, server, fresh, [0, 1],
                 jax.random.key(9), steps=4)
  assert jax.tree.structure(out) == jax.tree.structure(ft)
  assert np.isfinite(np.asarray(out["head"]["kernel"])).all()
  assert not np.allclose(out["head"]["kernel"], ft["head"]["kernel"])  # denoising acted


def test_make_algorithm_and_config_build_pfedgpa():
  config = config_lib.apply_overrides(config_lib.load_config("pfedgpa_fmnist"),
                                      ["pfedgpa.layers=fc1,head", "pfedgpa.s=7", "seed=3"])
  config_lib.validate(config)
  o = options_from_config(config)
  assert o.layers == ("fc1", "head") and o.s == 7 and o.seed == 3
  _, _, params, loss_fn = normnet_problem()
  alg = make_algorithm("pfedgpa", loss_fn, lr=0.1, num_clients=3, params=params)
  assert alg.server_post is not None


# --- bad input: clear errors before training --------------------------------------------
def test_bad_inputs_raise_before_training():
  _, _, params, loss_fn = normnet_problem()
  build = lambda **kw: pfedgpa(loss_fn, optax.sgd(0.1), params, SMALL._replace(**kw),
                               clients_per_round=3)
  with pytest.raises(ValueError, match=r"names \['conv9'\], which the model lacks; its "
                     r"top-level layers are \['body', 'head', 'norm'\]"):
    build(layers=("head", "conv9"))
  with pytest.raises(ValueError, match=r"pfedgpa.s=0 .* must lie in \[1, T\]"):
    build(s=0)
  with pytest.raises(ValueError, match=r"pfedgpa.s=21 .* must lie in \[1, T\]"):
    build(s=21)
  dim = sum(x.size for x in jax.tree.leaves(params))  # 53: prime, nothing divides it
  with pytest.raises(ValueError, match=rf"pfedgpa.token_size=8 does not divide the {dim} "
                     "selected parameters and pfedgpa.token_pad=none forbids padding"):
    build(token_pad="none")
  build(token_pad="none", token_size=dim)  # divides: fine
  with pytest.raises(ValueError, match=r"pfedgpa.buffer=2 is smaller than one round's "
                     r"uploads \(clients_per_round=3\)"):
    build(buffer=2)
  with pytest.raises(ValueError, match="Unknown pfedgpa.inversion 'sde'"):
    build(inversion="sde")
  with pytest.raises(ValueError, match="Unknown pfedgpa.token_pad 'middle'"):
    check_options(SMALL._replace(token_pad="middle"))


def test_config_validation_catches_pfedgpa_errors():
  config = config_lib.load_config("pfedgpa_fmnist")
  for override, message in (("pfedgpa.s=101", "must lie in"),
                            ("pfedgpa.buffer=5", "smaller than one round"),
                            ("pfedgpa.aggregation=median", "Unknown pfedgpa.aggregation"),
                            ("pfedgpa.inversion=sde", "Unknown pfedgpa.inversion 'sde'"),
                            ("pfedgpa.denoiser=unet", "Unknown pfedgpa.denoiser 'unet'")):
    with pytest.raises(ValueError, match=message):
      config_lib.validate(config_lib.apply_overrides(config, [override]))
