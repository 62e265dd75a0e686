"""What pFedGPA's inversion + denoising does to parameters, measured on a run's checkpoint.

Two probes, both on the last checkpoint of a `fedjax-gen run pfedgpa_fmnist ...` work folder
(nothing is written there):

* the run's own aggregation: distance of each training client's personalized (denoised)
  parameters to its upload of the last round and to the mean of those uploads, against
  the uploads' spread (|upload - mean|). A ratio |personal - upload| / spread near 0 means
  the round trip left the uploads as they were (local training);
* `--train DENOISER`: a fresh denoiser trained offline on the checkpoint's upload buffer,
  `--steps` Adam steps of the DDPM loss (Min-SNR-5 for the x0-predicting `lowrank`), with
  its DDPM loss on the buffer under fresh noise (eps = 0 scores 1.0) and the same distances after a round trip
  with DDIM inversion and with noised inversion (`pfedgpa.inversion`), every 10%.

    python experiments/pfedgpa_probe.py --workdir W
    python experiments/pfedgpa_probe.py --workdir W --train lowrank --norm element --lr 3e-3 --steps 1000

Distances are in the normalised units the denoiser sees (`--norm`); the run's own
aggregation is measured in raw parameter units.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_gen.trainer import train as run
from fedjax_gen.diffusion import core
from fedjax_gen.algorithms.pfedgpa import aggregate, denoiser as den, options_from_config, tokenize


def distances(x, ref, mean):
  """Mean over rows of |x - nearest ref row|, |x - mean| (rows flattened)."""
  x, ref = x.reshape(x.shape[0], -1), ref.reshape(ref.shape[0], -1)
  near = jnp.linalg.norm(x[:, None] - ref[None], axis=-1).min(1).mean()
  return float(near), float(jnp.linalg.norm(x - mean.reshape(-1), axis=-1).mean())


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--train", choices=den.DENOISERS, help="train this denoiser offline")
  ap.add_argument("--norm", default="layer", choices=tokenize.NORMS)
  ap.add_argument("--lr", type=float, default=1e-3)
  ap.add_argument("--steps", type=int, default=500)
  ap.add_argument("--width", type=int, default=64)
  args = ap.parse_args(argv)
  if args.train and args.steps < 50:
    raise SystemExit(f"--steps {args.steps}: train at least 50 steps (one chunk).")
  config = run.read_run_config(args.workdir)
  if config.algorithm != "pfedgpa":
    raise SystemExit(f"{args.workdir!r} holds a {config.algorithm!r} run; pass a pfedgpa run.")
  s, server, states, _ = run.restore_run(config, args.workdir)
  o = options_from_config(config)
  layout = tokenize.make_layout(s.params, layers=o.layers, token_size=o.token_size,
                                pad=o.token_pad)
  m = len(s.train_ids)
  if config.clients_per_round != m:
    raise SystemExit(f"The probe pairs each training client with its upload of the last "
                     f"round, so it needs every training client in every round; this run "
                     f"samples {config.clients_per_round} of {m}.")
  rows = (int(server.buffer_next) - m + np.arange(m)) % o.buffer
  uploads = server.buffer[rows]
  personal = jax.vmap(lambda p: tokenize.flatten(layout, p))(
      jax.tree.map(lambda a: a[np.asarray(s.train_ids)], states.params))
  mean = uploads.mean(0)
  spread = float(jnp.linalg.norm(uploads - mean, axis=-1).mean())
  near, to_mean = distances(personal, uploads, mean)
  print(f"{args.workdir}: D={layout.dim}; the run's aggregation (raw units): "
        f"|personal - upload| {near:.4g}, |personal - mean| {to_mean:.4g}, spread "
        f"|upload - mean| {spread:.4g}, ratio {near / spread:.3f}")
  if not args.train:
    return

  valid = jnp.arange(o.buffer) < server.buffer_count
  stats = tokenize.fit_stats(layout, server.buffer, valid, norm=args.norm)
  data = jax.vmap(lambda f: tokenize.to_tokens(layout, tokenize.normalize(stats, f)))(
      server.buffer)[: int(server.buffer_count)]
  x = jax.vmap(lambda f: tokenize.to_tokens(layout, tokenize.normalize(stats, f)))(uploads)
  x_mean = data.mean(0)
  schedule = core.make_schedule(o.schedule, o.timesteps)
  model = den.make_denoiser(args.train, num_tokens=layout.num_tokens,
                            token_size=layout.token_size, width=args.width, depth=o.depth,
                            heads=o.heads)
  params = den.init_denoiser(model, jax.random.key(1))
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
  eps_of = lambda p: den.eps_fn_of(model, p, schedule)
  train = jax.jit(lambda p, st, k: aggregate.train_denoiser(
      eps_of, opt, p, st, schedule, data, jnp.asarray(data.shape[0]), k, steps=50,
      batch_size=o.batch, snr_gamma=den.snr_gamma(model)))
  ts = aggregate.inversion_timesteps(schedule, o.s, o.ddim_steps)
  trip = jax.jit(lambda p, inv: aggregate.invert_denoise(
      eps_of(p), schedule, x, ts, inversion=inv, key=jax.random.key(7)), static_argnums=1)
  fresh_loss = jax.jit(lambda p: jnp.mean(jnp.stack([
      core.ddpm_loss(eps_of(p), schedule, data, jax.random.key(1000 + i)) for i in range(4)])))
  spread_n = float(jnp.linalg.norm((x - x_mean).reshape(m, -1), axis=-1).mean())
  print(f"training {args.train} on {data.shape[0]} uploads ({args.norm} norm, lr {args.lr}); "
        f"normalised spread |upload - mean| {spread_n:.4g}; round trips to s={o.s}")
  opt_state, chunks = opt.init(params), args.steps // 50
  for c in range(chunks):
    t0 = time.perf_counter()
    params, opt_state, loss = train(params, opt_state, jax.random.key(100 + c))
    loss.block_until_ready()
    if (c + 1) % max(1, chunks // 10) and c + 1 != chunks:
      continue
    cols = []
    for inv in aggregate.INVERSIONS:
      near, to_mean = distances(trip(params, inv), x, x_mean)
      cols.append(f"{inv}: |out - upload| {near:.4g}, |out - mean| {to_mean:.4g}")
    print(f"  step {50 * (c + 1)}: train loss {float(loss):.3f}, DDPM loss (fresh noise) "
          f"{float(fresh_loss(params)):.3f}, {time.perf_counter() - t0:.1f} s/50 steps; "
          + "; ".join(cols), flush=True)


if __name__ == "__main__":
  main()
