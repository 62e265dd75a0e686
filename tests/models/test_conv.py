"""im2col convolution == lax.conv_general_dilated (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fedjax_gen.models import get_model, init_params
from fedjax_gen.models.conv import conv_windows, im2col_conv
from fedjax_gen.trainer.plan import (IM2COL_MAX_PATCH, IM2COL_MAX_WINDOW, choose,
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


@pytest.mark.parametrize("name, shape, windows, auto_on_cpu", [
    ("mlp", (28, 28, 1), [], None),
    ("simple_cnn", (28, 28, 1), [(25, 1), (25, 6)], "im2col"),
    ("fedpac_cnn", (28, 28, 1), [(25, 1), (25, 16)], "im2col"),
    ("cnn4", (28, 28, 1), [(25, 1), (25, 32)], "xla"),  # a 5x5 window over 32 channels
    ("resnet18", (8, 8, 3), None, "im2col")])  # 3x3 windows, however many channels
def test_auto_conv_impl_follows_the_windows(name, shape, windows, auto_on_cpu):
  model = get_model(name, num_classes=10, input_shape=shape, conv_impl="xla")
  params = jax.eval_shape(lambda: init_params(model, shape, jax.random.key(0)))
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  found = conv_windows(apply_fn, params, shape)
  if windows is not None:
    assert found == windows
  else:  # ResNet-18: 3x3 convs up to 512 channels, 1x1 projection shortcuts
    assert {taps for taps, _ in found} == {9, 1} and max(cin for _, cin in found) == 512
  auto = choose(lambda impl: get_model(name, num_classes=10, input_shape=shape,
                                       conv_impl=impl), shape, clients_per_round=2)
  assert auto.conv_impl == (auto_on_cpu or "none")  # tests run on CPU
  assert getattr(auto.model, "conv_impl", None) == auto_on_cpu
  assert auto.plan.steps_per_call == (10 if auto_on_cpu == "xla" else 0)  # the host loop
  #   only for native convolutions


def test_resolve_conv_impl_rule():
  assert resolve_conv_impl("auto", [(25, IM2COL_MAX_PATCH // 25)]) == "im2col"
  assert resolve_conv_impl("auto", [(25, IM2COL_MAX_PATCH // 25 + 1)]) == "xla"
  assert resolve_conv_impl("auto", [(IM2COL_MAX_WINDOW, 4096)]) == "im2col"
  assert resolve_conv_impl("auto", [(9, 1), (25, 64)]) == "xla"  # one wide conv decides
  assert resolve_conv_impl("auto", [(25, 64)], scanned=True) == "im2col"
  assert resolve_conv_impl("auto") == "im2col"  # windows unknown
  assert resolve_conv_impl("im2col", [(25, 10**6)]) == "im2col"  # an explicit choice stays
