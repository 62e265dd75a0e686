"""Tiny generators for the generative-augmentation tests."""

import numpy as np


class ConstantGenerator:
  """Class c is the constant image (c + 1) / (num_classes + 1); counts its calls."""

  def __init__(self, image_shape=(2, 2, 1), num_classes=3, tag="const"):
    self.image_shape, self.num_classes, self.tag = tuple(image_shape), num_classes, tag
    self.calls = []

  def metadata(self):
    return {"kind": self.tag, "image_shape": list(self.image_shape),
            "num_classes": self.num_classes}

  def generate(self, labels, key):
    del key
    labels = np.asarray(labels)
    self.calls.append(labels.copy())
    value = (labels + 1.0) / (self.num_classes + 1.0)
    return np.broadcast_to(value[:, None, None, None].astype(np.float32),
                           (len(labels), *self.image_shape)).copy()


class RaisingGenerator(ConstantGenerator):
  """A generator that must never be asked for images."""

  def generate(self, labels, key):
    raise AssertionError("generate() was called: compatibility must be checked first")
