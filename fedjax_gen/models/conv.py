"""A 2-D convolution computed as patches @ kernel (im2col), for XLA:CPU.

Drop-in for `lax.conv_general_dilated` in `flax.linen.Conv(conv_general_dilated=...)`
(NHWC inputs, HWIO kernels, any strides and padding, no dilation or groups). It builds the
patches from kh*kw strided slices and contracts them with one matmul, so its gradient is
slices, pads and matmuls -- no convolution at all. Why: on XLA:CPU (jax 0.10.2, 2 cores,
NIID-Bench simple-CNN, batch 64; `experiments/benchmarks/conv_cpu.py` re-measures it) the
native convolution's training step ran 4.5x slower inside a `lax.scan` than unrolled, and
vmapped over clients it becomes a slow grouped convolution; this form ran 4.5x faster than
the native one under `scan`, and under `vmap` + `scan` ~4x faster; a fused round with it
ran 1.07-1.4x faster than the best plan with native convolutions (a host loop of unrolled
steps). On GPU/TPU keep the native convolution.

The gain is the fused (scanned) round that im2col makes fast; with its steps unrolled the
native convolution is as fast or faster for wide 5x5 windows, whose patches matrix costs
more than the scan saves. One FedAvg round on one core (jax 0.10.2, 10 clients x 10 steps of
batch 32, the second command in `experiments/benchmarks/conv_cpu.py`, all plans timed
interleaved, the other core busy), examples/s of im2col in the fused round over the native
convolution in the host loop: simple-CNN 0.98x (largest patch kh*kw*cin 5*5*6 = 150),
FedPAC CNN 0.95x (400), PFLlib CNN4 0.82x (800); an earlier sequential run gave 1.10x, 1.03x
and 0.85x. ResNet-18's 3x3 windows go the other way although their patches are wider (up to
3*3*512): the native convolution's kernel gradient took 0.67 s for one 64-channel layer
(batch 32, one core), a round of 10 steps in the host loop 41.0 s against 18.5 s with
im2col in the fused round (`experiments/benchmarks/round_bench.py`), and with 3 steps
(`conv_cpu.py`'s ResNet command, interleaved) im2col fused ran 1.17x native host. So "auto" on
CPU keeps im2col while every convolution has a patch of at most `IM2COL_MAX_PATCH` or a
window of at most `IM2COL_MAX_WINDOW` taps, and takes the native convolution, run in the
host loop, otherwise (wide 5x5 ones, as CNN4's).
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax import lax

CONV_IMPLS = ("auto", "xla", "im2col")
IM2COL_MAX_PATCH = 512  # "auto" on CPU: im2col up to this kh*kw*cin (measured, see above)
IM2COL_MAX_WINDOW = 9   # ... or up to this kh*kw whatever cin (ResNet's 3x3, see above)


def im2col_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` for NHWC x HWIO -> NHWC, computed by im2col."""
  del dimension_numbers  # flax passes the NHWC/HWIO layout this function assumes
  if (any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ()))
      or feature_group_count != 1 or batch_group_count != 1 or lhs.ndim != 4):
    raise NotImplementedError("im2col_conv supports 2-D convolutions without dilation or "
                              "groups; use conv_impl='xla' for this model.")
  kh, kw, cin, cout = rhs.shape
  sh, sw = window_strides
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
  lhs = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  oh = (lhs.shape[1] - kh) // sh + 1
  ow = (lhs.shape[2] - kw) // sw + 1
  cols = jnp.concatenate(
      [lhs[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
       for i in range(kh) for j in range(kw)], axis=-1)  # [b, oh, ow, kh*kw*cin]
  return jnp.einsum("bhwk,ko->bhwo", cols, rhs.reshape(kh * kw * cin, cout),
                    precision=precision, preferred_element_type=preferred_element_type)


def resolve_conv_impl(conv_impl: str, windows=(), *, scanned: bool = False) -> str:
  """"auto" -> "im2col" on CPU when every convolution in `windows` ((kh*kw, cin) each, as
  `conv_windows` lists them; empty: unknown) has a patch kh*kw*cin of at most
  `IM2COL_MAX_PATCH` or a window of at most `IM2COL_MAX_WINDOW` taps, or whatever their
  size if `scanned` (the training steps run in a `scan`/`fori_loop`, where XLA:CPU's native
  convolution is ~10x slower), else "xla" (see module docstring).
  """
  if conv_impl == "auto":
    cpu = jax.default_backend() == "cpu"
    narrow = all(taps * cin <= IM2COL_MAX_PATCH or taps <= IM2COL_MAX_WINDOW
                 for taps, cin in windows)
    return "im2col" if cpu and (scanned or narrow) else "xla"
  return conv_impl


def conv_windows(apply_fn, params, example_shape) -> list[tuple[int, int]]:
  """(taps = kh*kw, cin) of every native convolution `apply_fn(params, x)` runs, in order.

  `params` may be abstract (`jax.eval_shape` output): only the trace is needed.
  """
  jaxpr = jax.make_jaxpr(apply_fn)(params, jnp.zeros((1, *example_shape)))
  windows = []

  def visit(jx):
    for eqn in jx.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        _, in_dim, *spatial = eqn.params["dimension_numbers"].rhs_spec
        windows.append((int(np.prod([rhs[d] for d in spatial])), int(rhs[in_dim])))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)
  visit(jaxpr.jaxpr)
  return windows


def conv_fn(conv_impl: str):
  """The convolution function for a model's `nn.Conv` layers."""
  if conv_impl == "im2col":
    return im2col_conv
  if conv_impl == "xla":
    return lax.conv_general_dilated
  if conv_impl == "auto":
    return conv_fn(resolve_conv_impl(conv_impl))
  raise ValueError(f"Unknown conv_impl {conv_impl!r}; valid: xla, im2col (or auto).")
