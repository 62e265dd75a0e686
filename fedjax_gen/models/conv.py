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
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "xla", "im2col")


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


def resolve_conv_impl(conv_impl: str) -> str:
  """"auto" -> "im2col" on CPU (measured: experiments/benchmarks/conv_cpu.py), else "xla"."""
  if conv_impl == "auto":
    import jax
    return "im2col" if jax.default_backend() == "cpu" else "xla"
  return conv_impl


def conv_fn(conv_impl: str):
  """The convolution function for a model's `nn.Conv` layers."""
  if conv_impl == "im2col":
    return im2col_conv
  if conv_impl == "xla":
    return lax.conv_general_dilated
  if conv_impl == "auto":
    return conv_fn(resolve_conv_impl(conv_impl))
  raise ValueError(f"Unknown conv_impl {conv_impl!r}; valid: xla, im2col (or auto).")
