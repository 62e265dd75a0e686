"""A 2-D convolution computed as patches @ kernel (im2col), and the list of a model's
native convolutions.

`im2col_conv` is a drop-in for `lax.conv_general_dilated` in
`flax.linen.Conv(conv_general_dilated=...)` (NHWC inputs, HWIO kernels, any strides and
padding, no dilation or groups): kh*kw strided slices contracted with one matmul, so its
gradient is slices, pads and matmuls, no convolution. XLA:CPU runs native convolutions
several times slower inside scanned or vmapped loops; this form keeps such loops fast for
narrow windows (BENCHMARKS.md, "Findings on this CPU"). Which form a run uses is decided by
`fedjax_gen.trainer.plan`; on GPU/TPU keep the native convolution.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax import lax

CONV_FORMS = ("xla", "im2col")


def im2col_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` for NHWC x HWIO -> NHWC, computed by im2col."""
  del dimension_numbers  # flax passes the NHWC/HWIO layout this function assumes
  if (any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ()))
      or feature_group_count != 1 or batch_group_count != 1 or lhs.ndim != 4):
    raise NotImplementedError("im2col_conv supports 2-D convolutions without dilation or "
                              "groups; use conv_impl='xla' (run.conv_impl=xla) for this model.")
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
  raise ValueError(f"Unknown conv_impl {conv_impl!r}; valid: xla, im2col (the trainer "
                   "resolves 'auto': fedjax_gen.trainer.plan).")
