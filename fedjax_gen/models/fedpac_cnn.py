"""The small CNN of the FedPAC code base, which pFedGPA's authors build on.

conv(16, 5x5) -> relu -> maxpool2 -> conv(32, 5x5) -> relu -> maxpool2 -> fc 128 -> relu ->
fc num_classes (layers ``conv1, conv2, fc1, head``): Xu, Tong, Huang, "Personalized
Federated Learning with Feature Alignment and Classifier Collaboration" (FedPAC, ICLR 2023,
arXiv 2306.11867), github.com/JianXu95/FedPAC ``models/cnn.py``. 28x28x1 -> 4*4*32 = 512
flat features (80,202 parameters with 10 classes); 32x32x3 -> 5*5*32 = 800 (117,866).
VALID convolutions, NHWC, flax default initialisers, like the other CNNs in ``cnn.py``.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from fedjax_gen.models.cnn import _conv_pool


class FedPACCNN(nn.Module):
  num_classes: int
  conv_impl: str = "xla"  # "xla" | "im2col" (see models/conv.py)

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = _conv_pool(x, 16, "conv1", self.conv_impl)
    x = _conv_pool(x, 32, "conv2", self.conv_impl)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128, name="fc1")(x))
    return nn.Dense(self.num_classes, name="head")(x)
