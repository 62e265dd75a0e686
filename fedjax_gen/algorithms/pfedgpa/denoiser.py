"""Noise predictors over parameter tokens `[B, num_tokens, token_size]`.

* `TokenTransformer` (the default, `pfedgpa.denoiser=transformer`): each token is
  projected to `width`, a learned position embedding (which token of the model it is) and
  an embedding of the timestep are added, then `depth` pre-LayerNorm blocks of
  multi-head self-attention and a GELU MLP, a final LayerNorm and a projection back to
  `token_size` (zero-initialised: the untrained model predicts eps = 0). Tokens attend to
  each other, so a layer's noise estimate can use the rest of the model.
* `TokenMLP` (`pfedgpa.denoiser=mlp`): the same embedding and output with the attention
  removed: a per-token residual MLP that still knows its token's position and the step.
* `LowRankX0` (`pfedgpa.denoiser=lowrank`): predicts the clean parameters, not the noise,
  through a `width`-dimensional bottleneck over the whole flattened model:
  x0_hat = b + W_out mlp(W_in x_t + emb(t)), and eps = (x_t - sqrt(abar_t) x0_hat) /
  sqrt(1 - abar_t). Its x0_hat always lies in a learned `width`-dimensional affine
  subspace, the shape a buffer of a few dozen uploads can span; the token models above
  see one token at a time through a `width`-wide projection and cannot represent a
  per-parameter mean, so on real uploads their DDPM loss stalls near 0.8, where
  predicting eps = 0 scores 1.0 (measured in experiments/RESULTS.md).

Our choices (the paper gives no architecture): sizes `width=64, depth=2, heads=4,
mlp_ratio=2`, small enough that the server's online training costs less than the clients'
local training on a CPU (measured in experiments/RESULTS.md).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_gen.diffusion import core
from fedjax_gen.models.unet import timestep_embedding

DENOISERS = ("transformer", "mlp", "lowrank")


class _Embed(nn.Module):
  num_tokens: int
  width: int

  @nn.compact
  def __call__(self, x, t):
    h = nn.Dense(self.width, name="in_proj")(x)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.num_tokens, self.width))
    temb = timestep_embedding(t, self.width)
    temb = nn.Dense(self.width, name="t_mlp2")(nn.silu(nn.Dense(self.width, name="t_mlp1")(temb)))
    return h + pos[None] + temb[:, None, :]


class _MLP(nn.Module):
  width: int
  ratio: int

  @nn.compact
  def __call__(self, h):
    y = nn.gelu(nn.Dense(self.width * self.ratio)(nn.LayerNorm()(h)))
    return h + nn.Dense(self.width)(y)


class TokenTransformer(nn.Module):
  """eps prediction `[B, N, P]` from noisy tokens `x [B, N, P]` and timesteps `t [B]`."""
  num_tokens: int
  token_size: int
  width: int = 64
  depth: int = 2
  heads: int = 4
  mlp_ratio: int = 2
  attention: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    h = _Embed(self.num_tokens, self.width, name="embed")(x, t)
    for i in range(self.depth):
      if self.attention:
        a = nn.LayerNorm(name=f"ln_attn{i}")(h)
        h = h + nn.MultiHeadDotProductAttention(num_heads=self.heads, name=f"attn{i}")(a, a)
      h = _MLP(self.width, self.mlp_ratio, name=f"mlp{i}")(h)
    h = nn.LayerNorm(name="ln_out")(h)
    return nn.Dense(self.token_size, kernel_init=nn.initializers.zeros, name="out")(h)


class LowRankX0(nn.Module):
  """x_0 prediction `[B, N, P]` from `x [B, N, P]` and `t [B]` through a `width`-wide
  bottleneck over all N * P scalars (module docstring); `eps_fn_of` turns it into eps."""
  num_tokens: int
  token_size: int
  width: int = 64
  depth: int = 2
  mlp_ratio: int = 2
  predicts = "x0"

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    flat = x.reshape(x.shape[0], -1)
    temb = timestep_embedding(t, self.width)
    temb = nn.Dense(self.width, name="t_mlp2")(nn.silu(nn.Dense(self.width, name="t_mlp1")(temb)))
    h = nn.Dense(self.width, name="in_proj")(flat) + temb
    for i in range(self.depth):
      h = _MLP(self.width, self.mlp_ratio, name=f"mlp{i}")(h)
    h = nn.LayerNorm(name="ln_out")(h)
    out = nn.Dense(flat.shape[-1], kernel_init=nn.initializers.zeros, name="out")(h)
    return out.reshape(x.shape)


def make_denoiser(name: str, *, num_tokens: int, token_size: int, width: int = 64,
                  depth: int = 2, heads: int = 4, mlp_ratio: int = 2) -> nn.Module:
  """`name` in DENOISERS; see the module docstring."""
  if name not in DENOISERS:
    raise ValueError(f"Unknown pfedgpa.denoiser {name!r}; valid: {', '.join(DENOISERS)}.")
  if name == "lowrank":
    return LowRankX0(num_tokens, token_size, width, depth, mlp_ratio)
  if name == "transformer" and width % heads:
    raise ValueError(f"pfedgpa.width={width} must be divisible by pfedgpa.heads={heads}.")
  return TokenTransformer(num_tokens, token_size, width, depth, heads, mlp_ratio,
                          attention=name == "transformer")


def init_denoiser(model: nn.Module, key: jax.Array):
  x = jnp.zeros((1, model.num_tokens, model.token_size), jnp.float32)
  return model.init(key, x, jnp.zeros((1,), jnp.int32))["params"]


def predicts_x0(model: nn.Module) -> bool:
  return getattr(model, "predicts", "eps") == "x0"


def snr_gamma(model: nn.Module) -> float | None:
  """The DDPM loss's Min-SNR gamma for `model`: 5 for x_0-predicting models, whose eps
  loss at small t would otherwise blow their x_0 error up by sqrt(SNR_t); None (the plain
  loss) for eps-predicting ones."""
  return 5.0 if predicts_x0(model) else None


def eps_fn_of(model: nn.Module, params, schedule: core.Schedule):
  """The diffusion core's `eps_fn(x, t, cond)` for denoiser `params` (an x_0-predicting
  model's output converted to eps under `schedule`)."""
  def eps_fn(x, t, cond):
    del cond
    out = model.apply({"params": params}, x, t)
    if predicts_x0(model):
      return core.eps_from_x0(schedule, x, t, out)
    return out
  return eps_fn
