"""Model parameters as the data of a diffusion model: select, flatten, normalise, tokenise.

A `TokenLayout` is built once from a parameter pytree (one client, no client axis): which
leaves take part (`layers`: top-level layer names; empty = all), their order (the pytree's
leaf order), and where each scalar goes in a `[num_tokens, token_size]` token array. All
maps are gathers with precomputed NumPy indices, so

    tokens = to_tokens(layout, flatten(layout, params))
    params == unflatten(layout, from_tokens(layout, tokens), params)   # exactly

and everything is traceable (`jit`, `vmap` over a client axis).

Padding rules (`pad`) when the selected scalars D do not fill whole tokens:
  "end"    one zero-padded tail after all layers (the default; fewest tokens);
  "layer"  each layer (leaf) padded on its own, so no token mixes two layers;
  "none"   no padding: D must be a multiple of token_size, else a ValueError before any
           training.

Normalisation (`fit_stats`, `normalize`, `denormalize`): `x_norm = (x - mean) / std` with
per-scalar `mean`, `std` vectors `[D]`, fitted on a buffer of flattened uploads:
  "layer"    one mean and std per leaf (a layer's kernel, its bias), over all its scalars
             and all buffered clients (the paper's "normalised per layer"; the default);
  "element"  a mean and std per scalar over the buffered clients.
`std` is floored at `min_std` so constant leaves stay finite; the map is invertible for any
fixed stats, which the server keeps beside the denoiser.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PAD_RULES = ("end", "layer", "none")
NORMS = ("layer", "element")


def _names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


class TokenLayout(NamedTuple):
  """Static description of how a parameter pytree maps to tokens (see module docstring)."""
  treedef: Any
  selected: tuple[bool, ...]         # per leaf of the params, in leaf order
  paths: tuple[str, ...]             # per leaf, "conv1/kernel"
  shapes: tuple[tuple[int, ...], ...]
  dim: int                           # D: selected scalars
  token_size: int
  num_tokens: int
  gather: np.ndarray                 # int32 [num_tokens * token_size], D = a zero slot
  scatter: np.ndarray                # int32 [D], each scalar's slot in the flat tokens
  segment: np.ndarray                # int32 [D], index of the selected leaf of each scalar
  num_segments: int


def make_layout(params, *, layers: Sequence[str] = (), token_size: int = 256,
                pad: str = "end") -> TokenLayout:
  """The layout of `params` (one client's pytree of arrays or ShapeDtypeStructs).

  Raises:
    ValueError: unknown layer names (the model's top-level layers are listed), a
      non-positive token size, an unknown padding rule, or pad="none" with D not a
      multiple of token_size.
  """
  if pad not in PAD_RULES:
    raise ValueError(f"Unknown pfedgpa.token_pad {pad!r}; valid rules: {', '.join(PAD_RULES)}.")
  if int(token_size) < 1:
    raise ValueError(f"pfedgpa.token_size must be >= 1, got {token_size}.")
  token_size = int(token_size)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  paths = tuple("/".join(_names(p)) for p, _ in leaves)
  tops = sorted({_names(p)[0] for p, _ in leaves})
  layers = [name for name in layers if name]
  missing = [name for name in layers if name not in tops]
  if missing:
    raise ValueError(f"pfedgpa.layers names {missing}, which the model lacks; its top-level "
                     f"layers are {tops} (leave pfedgpa.layers empty to diffuse them all).")
  selected = tuple(not layers or _names(p)[0] in layers for p, _ in leaves)
  shapes = tuple(tuple(int(d) for d in np.shape(x)) for _, x in leaves)
  sizes = [int(np.prod(s)) for s, on in zip(shapes, selected) if on]
  dim = int(sum(sizes))
  if dim == 0:
    raise ValueError("pfedgpa.layers selects no parameters.")
  if pad == "none" and dim % token_size:
    raise ValueError(f"pfedgpa.token_size={token_size} does not divide the {dim} selected "
                     f"parameters and pfedgpa.token_pad=none forbids padding; pick a "
                     f"divisor of {dim} or pfedgpa.token_pad=end (zero tail) or layer.")
  # Slots: a list of flat indices in token order, -1 for padding.
  if pad == "layer":
    parts, start = [], 0
    for size in sizes:
      idx = np.arange(start, start + size)
      parts += [idx, np.full((-size) % token_size, -1)]
      start += size
    slots = np.concatenate(parts)
  else:
    slots = np.concatenate([np.arange(dim), np.full((-dim) % token_size, -1)])
  gather = np.where(slots >= 0, slots, dim).astype(np.int32)
  scatter = np.zeros(dim, np.int32)
  scatter[slots[slots >= 0]] = np.nonzero(slots >= 0)[0]
  segment = np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)
  return TokenLayout(treedef, selected, paths, shapes, dim, token_size,
                     len(slots) // token_size, gather, scatter, segment, len(sizes))


def flatten(layout: TokenLayout, params) -> jax.Array:
  """The selected leaves of one client's params, raveled and concatenated: `[D]` f32."""
  leaves = jax.tree.leaves(params)
  return jnp.concatenate([jnp.ravel(x).astype(jnp.float32)
                          for x, on in zip(leaves, layout.selected) if on])


def unflatten(layout: TokenLayout, flat: jax.Array, template):
  """`template` with its selected leaves replaced by the scalars of `flat` `[D]`."""
  leaves = jax.tree.leaves(template)
  out, start = [], 0
  for x, on, shape in zip(leaves, layout.selected, layout.shapes):
    if on:
      size = int(np.prod(shape))
      out.append(flat[start:start + size].reshape(shape).astype(x.dtype))
      start += size
    else:
      out.append(x)
  return jax.tree.unflatten(layout.treedef, out)


def to_tokens(layout: TokenLayout, flat: jax.Array) -> jax.Array:
  """`[D]` -> `[num_tokens, token_size]` (padding slots are 0)."""
  padded = jnp.concatenate([flat, jnp.zeros((1,), flat.dtype)])
  return padded[layout.gather].reshape(layout.num_tokens, layout.token_size)


def from_tokens(layout: TokenLayout, tokens: jax.Array) -> jax.Array:
  """`[num_tokens, token_size]` -> `[D]` (padding slots are dropped)."""
  return tokens.reshape(-1)[layout.scatter]


class Stats(NamedTuple):
  mean: jax.Array  # [D] f32
  std: jax.Array   # [D] f32, >= min_std


def identity_stats(layout: TokenLayout) -> Stats:
  return Stats(jnp.zeros((layout.dim,), jnp.float32), jnp.ones((layout.dim,), jnp.float32))


def fit_stats(layout: TokenLayout, flats: jax.Array, valid: jax.Array, *, norm: str = "layer",
              min_std: float = 1e-6) -> Stats:
  """Normalisation stats from the rows `flats [K, D]` where `valid [K]` (module docstring)."""
  if norm not in NORMS:
    raise ValueError(f"Unknown pfedgpa.norm {norm!r}; valid: {', '.join(NORMS)}.")
  w = valid.astype(jnp.float32)
  n = jnp.maximum(w.sum(), 1.0)
  mean_el = jnp.tensordot(w, flats, axes=1) / n              # [D]
  sq_el = jnp.tensordot(w, jnp.square(flats), axes=1) / n    # [D]
  if norm == "element":
    mean, sq = mean_el, sq_el
  else:
    seg = jnp.asarray(layout.segment)
    count = jax.ops.segment_sum(jnp.ones_like(mean_el), seg, layout.num_segments)
    mean = (jax.ops.segment_sum(mean_el, seg, layout.num_segments) / count)[seg]
    sq = (jax.ops.segment_sum(sq_el, seg, layout.num_segments) / count)[seg]
  std = jnp.sqrt(jnp.maximum(sq - jnp.square(mean), 0.0))
  return Stats(mean, jnp.maximum(std, min_std))


def normalize(stats: Stats, flat: jax.Array) -> jax.Array:
  return (flat - stats.mean) / stats.std


def denormalize(stats: Stats, flat: jax.Array) -> jax.Array:
  return flat * stats.std + stats.mean


def encode(layout: TokenLayout, stats: Stats, params) -> jax.Array:
  """One client's params -> normalised tokens `[num_tokens, token_size]`."""
  return to_tokens(layout, normalize(stats, flatten(layout, params)))


def decode(layout: TokenLayout, stats: Stats, tokens: jax.Array, template):
  """Normalised tokens -> params (unselected leaves taken from `template`)."""
  return unflatten(layout, denormalize(stats, from_tokens(layout, tokens)), template)
