"""im2col convolution == lax.conv_general_dilated (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fedjax_gen.models import get_model, init_params
from fedjax_gen.models.conv import (IM2COL_MAX_PATCH, im2col_conv, max_conv_patch,
                                    resolve_conv_impl)

DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("kernel, strides, padding", [
    ((5, 5), (1, 1), "VALID"), ((3, 3), (1, 1), "SAME"), ((3, 3), (2, 2), "SAME"),
    ((1, 1), (2, 2), "VALID"), ((3, 3), (2, 2), ((1, 2), (0, 1)))])
def test_im2col_matches_xla(kernel, strides, padding):
  k1, k2 = jax.random.split(jax.random.key(0))
  x = jax.random.normal(k1, (2, 9, 8, 3))
  w = jax.random.normal(k2, (*kernel, 3, 4))
  ref = lambda x, w: lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN)
  ours = lambda x, w: im2col_conv(x, w, strides, padding)
  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-4, atol=1e-4)
  g_ref = jax.grad(lambda x, w: jnp.sum(jnp.sin(ref(x, w))), argnums=(0, 1))(x, w)
  g_ours = jax.grad(lambda x, w: jnp.sum(jnp.sin(ours(x, w))), argnums=(0, 1))(x, w)
  for a, b in zip(g_ours, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["simple_cnn", "cnn4"])
def test_models_agree_across_conv_impls(name):
  shape = (28, 28, 1)
  xla = get_model(name, num_classes=10, input_shape=shape, conv_impl="xla")
  ours = get_model(name, num_classes=10, input_shape=shape, conv_impl="im2col")
  params = init_params(xla, shape, jax.random.key(1))
  x = jax.random.uniform(jax.random.key(2), (3, *shape))
  np.testing.assert_allclose(ours.apply({"params": params}, x),
                             xla.apply({"params": params}, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, patch, auto_on_cpu", [
    ("mlp", 0, None), ("simple_cnn", 5 * 5 * 6, "im2col"), ("fedpac_cnn", 5 * 5 * 16, "im2col"),
    ("cnn4", 5 * 5 * 32, "xla")])
def test_auto_conv_impl_follows_the_largest_patch(name, patch, auto_on_cpu):
  shape = (28, 28, 1)
  model = get_model(name, num_classes=10, input_shape=shape, conv_impl="xla")
  params = jax.eval_shape(lambda: init_params(model, shape, jax.random.key(0)))
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  assert max_conv_patch(apply_fn, params, shape) == patch
  auto = get_model(name, num_classes=10, input_shape=shape, conv_impl="auto")
  assert getattr(auto, "conv_impl", None) == auto_on_cpu  # tests run on CPU
  assert resolve_conv_impl("auto", IM2COL_MAX_PATCH) == "im2col"
  assert resolve_conv_impl("auto", IM2COL_MAX_PATCH + 1) == "xla"
  assert resolve_conv_impl("im2col", 10**6) == "im2col"  # an explicit choice stays
