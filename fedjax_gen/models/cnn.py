"""Small convolutional classifiers.

* ``SimpleCNN``: the "SimpleCNN" of NIID-Bench -- Li, Diao, Chen & He,
  "Federated Learning on Non-IID Data Silos: An Experimental Study"
  (ICDE 2022, arXiv 2102.02079), github.com/Xtra-Computing/NIID-Bench
  ``model.py`` (``SimpleCNN`` / ``SimpleCNNMNIST``): a LeNet-5 style network,
  conv(6, 5x5) -> relu -> maxpool2 -> conv(16, 5x5) -> relu -> maxpool2 ->
  fc 120 -> relu -> fc 84 -> relu -> fc num_classes.
* ``CNN4``: PFLlib's ``FedAvgCNN`` -- Zhang et al., "PFLlib: Personalized
  Federated Learning Algorithm Library" (arXiv 2312.04992),
  github.com/TsingZ0/PFLlib ``system/flcore/trainmodel/models.py``; itself the
  CNN of McMahan et al. (arXiv 1602.05629): conv(32, 5x5) -> relu -> maxpool2 ->
  conv(64, 5x5) -> relu -> maxpool2 -> fc 512 -> relu -> fc num_classes.

Both use VALID (unpadded) convolutions as in the sources, so they need inputs of
at least 16x16 pixels. NHWC layout; flax default initialisers.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from fedjax_gen.models.conv import conv_fn


def _conv_pool(x: jnp.ndarray, features: int, name: str, conv_impl: str) -> jnp.ndarray:
  x = nn.Conv(features, (5, 5), padding="VALID", name=name,
              conv_general_dilated=conv_fn(conv_impl))(x)
  return max_pool2(nn.relu(x))


def max_pool2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 stride-2 VALID max-pool of an NHWC batch, as a reshape and a max.

  Same values as ``nn.max_pool(x, (2, 2), strides=(2, 2))`` (an odd last row or
  column is dropped), without ``reduce_window`` and its ``select_and_scatter``
  gradient. Measured on the 2-core CPU (cnn4 SGD step, batch 32, one core while the
  other was busy, the two pools interleaved in one process): 4-15% faster with XLA's
  native convolution, no difference with the im2col one. Gradients differ from
  ``nn.max_pool`` only on ties inside a window, which split the gradient instead of
  picking one.
  """
  n, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2, :]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def conv_pool_output_hw(size: int, num_blocks: int = 2) -> int:
  """Spatial size after ``num_blocks`` [VALID 5x5 conv, 2x2/2 max-pool] blocks.

  Returns a value <= 0 if the input is too small.
  """
  for _ in range(num_blocks):
    size = size - 4  # VALID 5x5 conv
    if size < 2:
      return 0
    size = size // 2  # VALID 2x2 stride-2 pool
  return size


class SimpleCNN(nn.Module):
  """NIID-Bench SimpleCNN (layers ``conv1, conv2, fc1, fc2, head``).

  28x28x1 -> 4*4*16 = 256 flat features; 32x32x3 -> 5*5*16 = 400.
  """

  num_classes: int
  conv_impl: str = "xla"  # "xla" | "im2col" (see models/conv.py)

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = _conv_pool(x, 6, "conv1", self.conv_impl)
    x = _conv_pool(x, 16, "conv2", self.conv_impl)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(120, name="fc1")(x))
    x = nn.relu(nn.Dense(84, name="fc2")(x))
    return nn.Dense(self.num_classes, name="head")(x)


class CNN4(nn.Module):
  """PFLlib FedAvgCNN (layers ``conv1, conv2, fc1, head``).

  28x28x1 -> 4*4*64 = 1024 flat features (582,026 params with 10 classes);
  32x32x3 -> 5*5*64 = 1600.
  """

  num_classes: int
  conv_impl: str = "xla"  # "xla" | "im2col" (see models/conv.py)

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = _conv_pool(x, 32, "conv1", self.conv_impl)
    x = _conv_pool(x, 64, "conv2", self.conv_impl)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(512, name="fc1")(x))
    return nn.Dense(self.num_classes, name="head")(x)
