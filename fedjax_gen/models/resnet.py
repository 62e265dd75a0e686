"""ResNet-18 for small (CIFAR-sized) images, with GroupNorm.

Architecture: He et al., "Deep Residual Learning for Image Recognition"
(CVPR 2016, arXiv 1512.03385), in the common CIFAR variant (as in
github.com/kuangliu/pytorch-cifar ``models/resnet.py``): 3x3 stride-1 stem
convolution and no max-pool, four stages of two BasicBlocks with widths
64/128/256/512 (strides 1/2/2/2), 1x1 projection shortcut when the shape
changes, global average pooling, linear classifier.

BatchNorm is replaced by GroupNorm (default 2 groups), following Hsieh et al.,
"The Non-IID Data Quagmire of Decentralized Machine Learning" (ICML 2020,
arXiv 1910.00189), so the model has no mutable state (pure ``apply``).
Convolutions are bias-free (each is followed by a normalisation layer), so
with 10 classes and ``width=1.0`` there are 11,173,962 parameters, the same as
the BatchNorm reference. SAME padding, so any input size >= 1x1 works
(32x32 -> 4x4 and 28x28 -> 4x4 before pooling).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from fedjax_gen.models.conv import conv_fn


class BasicBlock(nn.Module):
  """Two 3x3 convs with GroupNorm and an identity/projection shortcut."""

  features: int
  strides: int = 1
  num_groups: int = 2
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    s = (self.strides, self.strides)
    conv = lambda *a, **k: nn.Conv(*a, use_bias=False,
                                   conv_general_dilated=conv_fn(self.conv_impl), **k)
    y = conv(self.features, (3, 3), s, padding="SAME", name="conv1")(x)
    y = nn.relu(nn.GroupNorm(num_groups=self.num_groups, name="norm1")(y))
    y = conv(self.features, (3, 3), padding="SAME", name="conv2")(y)
    y = nn.GroupNorm(num_groups=self.num_groups, name="norm2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = conv(self.features, (1, 1), s, name="shortcut_conv")(x)
      x = nn.GroupNorm(num_groups=self.num_groups, name="shortcut_norm")(x)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """CIFAR ResNet-18 with GroupNorm.

  Top-level parameter names: ``conv1, norm1, layer1_0, layer1_1, ...,
  layer4_1, head``. ``width`` scales every stage width (64 * width, ...).
  """

  num_classes: int
  num_groups: int = 2
  width: float = 1.0
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  conv_impl: str = "xla"  # "xla" | "im2col" (see models/conv.py)

  def widths(self) -> tuple[int, ...]:
    return tuple(int(round(w * self.width)) for w in (64, 128, 256, 512))

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    widths = self.widths()
    for w in widths:
      if w < 1 or w % self.num_groups:
        raise ValueError(
            f"ResNet18 stage width {w} (width={self.width}) must be a positive "
            f"multiple of num_groups={self.num_groups}")
    x = nn.Conv(widths[0], (3, 3), padding="SAME", use_bias=False, name="conv1",
                conv_general_dilated=conv_fn(self.conv_impl))(x)
    x = nn.relu(nn.GroupNorm(num_groups=self.num_groups, name="norm1")(x))
    for i, (w, n) in enumerate(zip(widths, self.stage_sizes)):
      for j in range(n):
        strides = 2 if (i > 0 and j == 0) else 1
        x = BasicBlock(w, strides, self.num_groups, self.conv_impl,
                       name=f"layer{i + 1}_{j}")(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(x)
