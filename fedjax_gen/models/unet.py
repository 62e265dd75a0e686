"""A small class-conditional UNet noise predictor for 28x28 / 32x32 images (1 or 3 channels).

The DDPM UNet of Ho et al. (2020) scaled down for a CPU: per resolution level
`num_res_blocks` residual blocks (GroupNorm, SiLU, 3x3 convs) that add a projection of the
timestep + class embedding; stride-2 convolutions down, nearest-neighbour resize + conv up,
skip connections between the two paths, optional self-attention at chosen levels.
Class label `num_classes` is the "null" class of classifier-free guidance.

    unet = UNet(num_classes=10, channels=(32, 64, 64))
    eps = unet.apply({"params": p}, x_t, t, y)   # x_t [B, 28, 28, 1], t [B] int, y [B] int

Inputs need H and W divisible by 2 ** (len(channels) - 1). Like every model here it has
no mutable collections, so parameters can be stacked and vmapped over clients.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from fedjax_gen.models.conv import conv_fn


def timestep_embedding(t: jnp.ndarray, dim: int, max_period: float = 10000.0) -> jnp.ndarray:
  """Sinusoidal embedding `[B, dim]` of (integer or real) timesteps `[B]`."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def _groups(channels: int) -> int:
  return math.gcd(channels, 8)


class ResBlock(nn.Module):
  channels: int
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x, emb):
    conv = lambda c, name: nn.Conv(c, (3, 3), padding="SAME", name=name,
                                   conv_general_dilated=conv_fn(self.conv_impl))
    h = conv(self.channels, "conv1")(nn.silu(nn.GroupNorm(_groups(x.shape[-1]))(x)))
    h = h + nn.Dense(self.channels, name="emb")(nn.silu(emb))[:, None, None, :]
    h = nn.silu(nn.GroupNorm(_groups(self.channels))(h))
    h = nn.Conv(self.channels, (3, 3), padding="SAME", name="conv2",
                kernel_init=nn.initializers.zeros,
                conv_general_dilated=conv_fn(self.conv_impl))(h)
    if x.shape[-1] != self.channels:
      x = nn.Dense(self.channels, name="skip")(x)
    return x + h


class Attention(nn.Module):
  """Single-head self-attention over the spatial positions, residual."""

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = nn.GroupNorm(_groups(c))(x).reshape(b, h * w, c)
    y = nn.MultiHeadDotProductAttention(num_heads=1, qkv_features=c,
                                        out_kernel_init=nn.initializers.zeros)(y)
    return x + y.reshape(b, h, w, c)


class UNet(nn.Module):
  num_classes: int
  channels: tuple[int, ...] = (32, 64, 64)
  num_res_blocks: int = 1
  attention_levels: tuple[int, ...] = ()
  emb_dim: int = 128
  out_channels: int | None = None  # default: the input's channels
  conv_impl: str = "xla"           # "xla" | "im2col" (see models/conv.py)

  @nn.compact
  def __call__(self, x, t, y):
    conv = lambda c, name, **kw: nn.Conv(c, (3, 3), padding="SAME", name=name,
                                         conv_general_dilated=conv_fn(self.conv_impl), **kw)
    emb = nn.Dense(self.emb_dim)(timestep_embedding(t, self.channels[0]))
    emb = nn.Dense(self.emb_dim)(nn.silu(emb))
    emb = emb + nn.Embed(self.num_classes + 1, self.emb_dim, name="class_emb")(y)
    h = conv(self.channels[0], "stem")(x)
    skips = [h]
    for level, ch in enumerate(self.channels):
      for _ in range(self.num_res_blocks):
        h = ResBlock(ch, self.conv_impl)(h, emb)
        if level in self.attention_levels:
          h = Attention()(h)
        skips.append(h)
      if level < len(self.channels) - 1:
        h = conv(ch, f"down{level}", strides=(2, 2))(h)
        skips.append(h)
    h = ResBlock(self.channels[-1], self.conv_impl)(h, emb)
    h = Attention()(h)
    h = ResBlock(self.channels[-1], self.conv_impl)(h, emb)
    for level in reversed(range(len(self.channels))):
      for _ in range(self.num_res_blocks + 1):
        h = ResBlock(self.channels[level], self.conv_impl)(
            jnp.concatenate([h, skips.pop()], axis=-1), emb)
        if level in self.attention_levels:
          h = Attention()(h)
      if level > 0:
        b, hh, ww, c = h.shape
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
        h = conv(c, f"up{level}")(h)
    h = nn.silu(nn.GroupNorm(_groups(h.shape[-1]))(h))
    return conv(self.out_channels or x.shape[-1], "out", kernel_init=nn.initializers.zeros)(h)


def check_image_size(height: int, width: int, channels: tuple[int, ...]) -> None:
  """Raises unless the UNet with these levels can take (and produce) `height x width`."""
  m = 2 ** (len(channels) - 1)
  if height % m or width % m:
    raise ValueError(f"A UNet with {len(channels)} resolution levels needs H and W divisible "
                     f"by {m}; got {height}x{width}. Use fewer levels (unet_channels) or "
                     "another image size.")
