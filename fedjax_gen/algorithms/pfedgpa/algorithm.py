"""pFedGPA: personalized FL by generative parameter aggregation with a diffusion model.

Reference: Lai, Li, Ji, Yang, Song, "pFedGPA: Diffusion-based Generative Parameter
Aggregation for Personalized Federated Learning", AAAI 2025 (arXiv 2409.05701). No public
code exists; this is our implementation of the paper's description .

A round:
1. Each sampled client starts from its personalized parameters (its persistent state; the
   shared initial model before its first round), runs local SGD, and uploads its local
   parameters theta_i.
2. `server_update` (inside the engine's jitted round): the uploads enter a fixed-size
   ring buffer `[buffer, D]` of recent uploads; the global model is their data-weighted
   mean (what `global_accuracy` and newcomers start from).
3. `server_post` (the engine's second jitted computation, timed on its own): per-layer
   normalisation stats are fitted on the buffer; the denoiser (a small transformer over
   parameter tokens, `denoiser.py`) takes `train_steps` Adam steps of the DDPM loss on the
   buffer (online training: it is never reset); then every sampled upload is DDIM-inverted
   to step s and denoised back to step 0 with the learned model, all clients in one
   batched computation: theta_hat_i becomes client i's personalized parameters, which it
   evaluates with and starts its next local update from.

New clients (`newcomer`, `newcomer_steps` local steps in all): from the global model, I
(`init_rounds`) initialisation rounds, each a share of the local steps followed by guided
denoising: invert to step s and DDIM down with `eps(x_t) - (1 + omega) * d`.

Our choices where the paper leaves details open (config `pfedgpa.*`; defaults here):
* what is diffused: all parameters (`layers`; named top-level layers instead diffuse
  only those, the rest being plainly averaged); tokens of `token_size=256` scalars, one
  zero-padded tail (`token_pad`); per-layer normalisation fitted on the buffer (`norm`).
* no autoencoder: the denoiser works on the normalised tokens directly (p-diff's latent
  autoencoder is left out). `denoiser="lowrank"` is the nearest thing: an x0-predicting
  model through a `width`-dimensional bottleneck over the whole flattened model
  (`denoiser.py`), trained with Min-SNR-5 weighting.
* diffusion: `timesteps` T=100, linear schedule; inversion depth `s=20` (abar_s ~ 0.69),
  visiting every timestep up to s (`ddim_steps=0`); plain DDIM inversion (the denoiser
  evaluated at the lower timestep, `fixed_point_iters=0`): with a learned model the
  round trip is not the identity, and that difference is the aggregation. Measured, that
  difference is small: deterministic inversion and denoising with one model nearly
  undo each other. `inversion="noise"` instead draws x_s ~ q(x_s | x_0) (SDEdit's start;
  keys `fold_in(fold_in(key(seed), 2), round)`, a newcomer's from its evaluation key), so
  the detail below the noise level of s is the denoiser's to fill in.
* online training: `buffer=40` uploads (two rounds of 20), `train_steps=50` per round,
  batches of `batch=16` drawn with replacement, Adam `lr=1e-3` with global-norm clipping
  at 1; keys `fold_in(key(seed), round)`.
* newcomers: `init_rounds=2`, `omega=0.5`. The guidance sign: the paper writes
  `eps(theta_l) - (1 + omega) * (theta_{l-1} - theta_l)`. Under DDIM,
  x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar), so that term moves the denoised
  parameters by +(1 + omega) sqrt((1 - abar) / abar) (theta_{l-1} - theta_l): AGAINST
  the local update, undoing it. We read that as a sign slip and default to
  `guidance="update"`, d = theta_l - theta_{l-1} (the denoising continues the local
  update, amplified by omega); `guidance="as_written"` keeps the literal formula.
  theta_{l-1} is where the init round started, theta_l its local result (normalised).
* `aggregation`: "diffusion" (pFedGPA); ablations "mean" (plain averaging: every client
  restarts from the weighted mean, i.e. FedAvg) and "identity" (no aggregation: every
  client keeps its own upload, i.e. local training).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_gen.algorithms import base
from fedjax_gen.algorithms.finetune import finetune
from fedjax_gen.diffusion import core
from fedjax_gen.algorithms.pfedgpa import aggregate, denoiser as denoiser_lib, tokenize
from fedjax_gen.types import Option, options_of

AGGREGATIONS = ("diffusion", "mean", "identity")
GUIDANCE = ("update", "as_written")


class PFedGPAOptions(NamedTuple):
  """pFedGPA's hyperparameters (config family `pfedgpa.*`); see the module docstring."""
  layers: tuple[str, ...] = ()   # top-level layers diffused; () = all
  token_size: int = 256
  token_pad: str = "end"         # end | layer | none
  norm: str = "layer"            # layer | element
  denoiser: str = "transformer"  # transformer | mlp
  width: int = 64
  depth: int = 2
  heads: int = 4
  timesteps: int = 100           # T of the noise schedule
  schedule: str = "linear"       # linear | cosine
  s: int = 20                    # inversion depth, in [1, T]
  ddim_steps: int = 0            # DDIM steps to reach s; 0 = all s
  inversion: str = "ddim"        # ddim (deterministic) | noise (q(x_s | x_0), SDEdit-like)
  fixed_point_iters: int = 0     # refinement of each inversion step
  buffer: int = 40               # uploads kept for online training (>= clients per round)
  train_steps: int = 50          # denoiser steps per round
  batch: int = 16
  lr: float = 1e-3
  aggregation: str = "diffusion"  # diffusion | mean | identity
  omega: float = 0.5             # newcomers' guidance weight
  init_rounds: int = 2           # newcomers' initialisation rounds I
  guidance: str = "update"       # update | as_written
  seed: int = 0


def check_options(o: PFedGPAOptions, clients_per_round: int | None = None) -> None:
  """Cheap checks (no model needed); raises ValueError naming the key and the fix."""
  def choice(key, value, valid):
    if value not in valid:
      raise ValueError(f"Unknown pfedgpa.{key} {value!r}; valid: {', '.join(valid)}.")

  choice("token_pad", o.token_pad, tokenize.PAD_RULES)
  choice("norm", o.norm, tokenize.NORMS)
  choice("denoiser", o.denoiser, denoiser_lib.DENOISERS)
  choice("schedule", o.schedule, core.SCHEDULES)
  choice("aggregation", o.aggregation, AGGREGATIONS)
  choice("guidance", o.guidance, GUIDANCE)
  choice("inversion", o.inversion, aggregate.INVERSIONS)
  for key in ("token_size", "width", "depth", "heads", "timesteps", "buffer", "batch"):
    if getattr(o, key) < 1:
      raise ValueError(f"pfedgpa.{key} must be >= 1, got {getattr(o, key)}.")
  for key in ("ddim_steps", "fixed_point_iters", "train_steps", "init_rounds"):
    if getattr(o, key) < 0:
      raise ValueError(f"pfedgpa.{key} must be >= 0, got {getattr(o, key)}.")
  if not 1 <= o.s <= o.timesteps:
    raise ValueError(f"pfedgpa.s={o.s} (the inversion depth) must lie in [1, T] with "
                     f"T=pfedgpa.timesteps={o.timesteps}.")
  if not o.lr > 0:
    raise ValueError(f"pfedgpa.lr must be > 0, got {o.lr}.")
  if o.denoiser == "transformer" and o.width % o.heads:
    raise ValueError(f"pfedgpa.width={o.width} must be divisible by pfedgpa.heads={o.heads}.")
  if clients_per_round is not None and o.buffer < clients_per_round:
    raise ValueError(f"pfedgpa.buffer={o.buffer} is smaller than one round's uploads "
                     f"(clients_per_round={clients_per_round}); keep at least one round: "
                     f"pfedgpa.buffer >= {clients_per_round}.")


class PFedGPAServerState(NamedTuple):
  params: base.Params      # global model: weighted mean of the last uploads, no client axis
  den_params: Any          # denoiser parameters
  den_opt_state: Any       # its optax state (online training continues across rounds)
  buffer: jax.Array        # [buffer, D] f32: recent uploads, flattened (raw, not normalised)
  buffer_count: jax.Array  # int32 []: valid rows (the first ones)
  buffer_next: jax.Array   # int32 []: the ring's next write position
  stats: tokenize.Stats    # normalisation of the last server_post ([D] mean, std)
  round: jax.Array         # int32 []: server updates done
  diffusion_loss: jax.Array  # f32 []: mean DDPM loss of the last online training


class PFedGPAClientState(NamedTuple):
  params: base.Params      # personalized parameters (the server's denoised upload)


class NewcomerCarry(NamedTuple):
  local: base.LocalState
  anchor: base.Params      # theta_{l-1}: where the current initialisation round started
  key: jax.Array           # the newcomer's noise (inversion="noise"), folded with the step


def pfedgpa(loss_fn: base.LossFn, client_opt: optax.GradientTransformation, params,
            options: PFedGPAOptions = PFedGPAOptions(), *,
            clients_per_round: int | None = None) -> base.FederatedAlgorithm:
  """pFedGPA (module docstring) for a model with initial `params` (one client's tree).

  Raises ValueError before any training for bad options, layer names the model lacks, a
  token size that does not divide with `token_pad="none"`, or a buffer smaller than
  `clients_per_round`.
  """
  o = options
  check_options(o, clients_per_round)
  layout = tokenize.make_layout(params, layers=o.layers, token_size=o.token_size,
                                pad=o.token_pad)
  schedule = core.make_schedule(o.schedule, o.timesteps)
  ts = aggregate.inversion_timesteps(schedule, o.s, o.ddim_steps)
  model = denoiser_lib.make_denoiser(o.denoiser, num_tokens=layout.num_tokens,
                                     token_size=layout.token_size, width=o.width,
                                     depth=o.depth, heads=o.heads)
  den_opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(o.lr))
  base_key = jax.random.key(o.seed)
  eps_of = lambda p: denoiser_lib.eps_fn_of(model, p, schedule)
  flat = lambda p: tokenize.flatten(layout, p)

  def server_init(params):
    den = denoiser_lib.init_denoiser(model, jax.random.fold_in(base_key, 1))
    return PFedGPAServerState(
        params, den, den_opt.init(den), jnp.zeros((o.buffer, layout.dim), jnp.float32),
        jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), tokenize.identity_stats(layout),
        jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32))

  def client_init(server, state, key):
    del server, key
    return base.local_init(client_opt, state.params)

  def client_step(server, carry, batch):
    del server
    return base.local_step(loss_fn, client_opt, carry, batch)

  def client_final(server, state, carry):
    del server, state
    return carry.params, PFedGPAClientState(carry.params)

  def server_update(server, uploads, weights):
    m = weights.shape[0]
    rows = (server.buffer_next + jnp.arange(m)) % o.buffer
    return server._replace(
        params=base.weighted_mean(uploads, weights),
        buffer=server.buffer.at[rows].set(jax.vmap(flat)(uploads)),
        buffer_count=jnp.minimum(server.buffer_count + m, o.buffer),
        buffer_next=(server.buffer_next + m) % o.buffer, round=server.round + 1)

  def server_post(server, sampled):
    if o.aggregation == "identity":
      return server, sampled
    m = jax.tree.leaves(sampled)[0].shape[0]
    if o.aggregation == "mean":
      return server, PFedGPAClientState(jax.tree.map(
          lambda g: jnp.broadcast_to(g, (m, *g.shape)), server.params))
    valid = jnp.arange(o.buffer) < server.buffer_count
    stats = tokenize.fit_stats(layout, server.buffer, valid, norm=o.norm)
    data = jax.vmap(lambda f: tokenize.to_tokens(layout, tokenize.normalize(stats, f)))(
        server.buffer)
    den, den_opt_state, loss = aggregate.train_denoiser(
        eps_of, den_opt, server.den_params, server.den_opt_state, schedule, data,
        server.buffer_count, jax.random.fold_in(base_key, server.round),
        steps=o.train_steps, batch_size=o.batch,
        snr_gamma=denoiser_lib.snr_gamma(model))
    x0 = jax.vmap(lambda p: tokenize.encode(layout, stats, p))(sampled.params)
    x0_hat = aggregate.invert_denoise(
        eps_of(den), schedule, x0, ts, inversion=o.inversion,
        key=jax.random.fold_in(jax.random.fold_in(base_key, 2), server.round),
        fixed_point_iters=o.fixed_point_iters)
    personal = jax.vmap(lambda x, own: tokenize.decode(layout, stats, x, own),
                        in_axes=(0, None))(x0_hat, server.params)
    return (server._replace(den_params=den, den_opt_state=den_opt_state, stats=stats,
                            diffusion_loss=loss),
            PFedGPAClientState(personal))

  # --- newcomers: I initialisation rounds of local steps, each then guided denoising ---
  def guided(server, theta, anchor, key):
    enc = lambda p: tokenize.encode(layout, server.stats, p)
    x, a = enc(theta), enc(anchor)
    d = x - a if o.guidance == "update" else a - x
    out = aggregate.guided_denoise(eps_of(server.den_params), schedule, x[None], d[None],
                                   o.omega, ts, inversion=o.inversion, key=key,
                                   fixed_point_iters=o.fixed_point_iters)[0]
    return tokenize.decode(layout, server.stats, out, theta)

  def newcomer_init(server, state, key):
    del state
    return NewcomerCarry(base.local_init(client_opt, server.params), server.params, key)

  def newcomer_step(server, carry, batch):
    local, loss = base.local_step(loss_fn, client_opt, carry.local, batch)
    t, n = jnp.asarray(batch.step), jnp.maximum(jnp.asarray(batch.num_steps), 1)
    boundary = (t + 1) * o.init_rounds // n > t * o.init_rounds // n

    def denoise(args):
      local, _ = args
      theta = guided(server, local.params, carry.anchor, jax.random.fold_in(carry.key, t))
      return base.local_init(client_opt, theta)._replace(steps=local.steps), theta

    local, anchor = jax.lax.cond(boundary, denoise, lambda args: args, (local, carry.anchor))
    return NewcomerCarry(local, anchor, carry.key), loss

  if o.aggregation == "diffusion" and o.init_rounds > 0:
    newcomer = base.Adaptation(newcomer_init, newcomer_step,
                               lambda server, state, carry: carry.local.params)
  else:  # no denoiser to guide: fine-tune the global model
    newcomer = finetune(loss_fn, client_opt)

  return base.FederatedAlgorithm(
      server_init, PFedGPAClientState, client_init, client_step, client_final,
      server_update, eval_params=lambda server, state: state.params, newcomer=newcomer,
      server_post=server_post)


OPTIONS = tuple(o._replace(algorithms=("pfedgpa",)) for o in (  # read by pFedGPA only
    Option("layers", "", "comma-separated top-level layers diffused (\"\" = all)"),
    Option("token_size", 256, "parameters per token"),
    Option("token_pad", "end", "end (zero tail) | layer (pad each layer) | none (must divide)"),
    Option("norm", "layer", "layer | element: normalisation stats fitted on the buffer"),
    Option("denoiser", "transformer", "transformer | mlp (per token) | lowrank (x0, whole "
           "model)"),
    Option("width", 64, "denoiser width"),
    Option("depth", 2, "denoiser depth"),
    Option("heads", 4, "denoiser attention heads"),
    Option("timesteps", 100, "T of the noise schedule"),
    Option("schedule", "linear", "linear | cosine"),
    Option("s", 20, "inversion depth, in [1, T]"),
    Option("ddim_steps", 0, "DDIM steps to reach s (0 = all s)"),
    Option("inversion", "ddim", "ddim (the paper's) | noise (x_s ~ q(x_s | x_0), SDEdit-like)"),
    Option("fixed_point_iters", 0, "refinement of each inversion step (0 = plain DDIM)"),
    Option("buffer", 40, "recent uploads kept for online training (>= clients_per_round)"),
    Option("train_steps", 50, "denoiser Adam steps per round"),
    Option("batch", 16, "denoiser batch (uploads)"),
    Option("lr", 1e-3, "denoiser Adam learning rate"),
    Option("aggregation", "diffusion", "diffusion | mean (plain averaging) | identity (none)"),
    Option("omega", 0.5, "newcomers' guidance weight", "eval"),
    Option("init_rounds", 2, "newcomers' initialisation rounds I (within newcomer_steps)",
           "eval"),
    Option("guidance", "update", "update | as_written (sign of the guidance; see "
           "algorithm.py)", "eval"),
))


def options_from_config(config) -> PFedGPAOptions:
  """`PFedGPAOptions` from a run config's `pfedgpa` family (and its seed)."""
  fields = vars(options_of(OPTIONS, config.pfedgpa))
  fields["layers"] = tuple(n.strip() for n in str(fields["layers"]).split(",") if n.strip())
  fields["seed"] = config.seed
  return PFedGPAOptions(**fields)
