"""Multi-layer perceptron classifier.

Architecture: the 2-hidden-layer MLP with 200 ReLU units per layer used for
MNIST in McMahan et al., "Communication-Efficient Learning of Deep Networks
from Decentralized Data" (AISTATS 2017, arXiv 1602.05629), the "2NN" model.
The hidden sizes are configurable.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """flatten -> [Dense(h) -> relu]* -> head.

  Layers are named ``fc1``, ``fc2``, ... and the classifier ``head``.
  Input ``[batch, H, W, C]`` (any trailing shape), output ``[batch, num_classes]``.
  """

  num_classes: int
  hidden: Sequence[int] = (200, 200)

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"fc{i + 1}")(x))
    return nn.Dense(self.num_classes, name="head")(x)
