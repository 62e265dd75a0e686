"""Model registry: names -> constructors, input-shape checks, param helpers."""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_gen.models.cnn import CNN4, SimpleCNN, conv_pool_output_hw
from fedjax_gen.models.fedpac_cnn import FedPACCNN
from fedjax_gen.models.mlp import MLP
from fedjax_gen.models.resnet import ResNet18
from fedjax_gen.types import Params


MODELS = ("mlp", "simple_cnn", "cnn4", "resnet18", "fedpac_cnn")

_CONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "simple_cnn": SimpleCNN,
    "cnn4": CNN4,
    "fedpac_cnn": FedPACCNN,
    "resnet18": ResNet18,
}


def _supports(name: str, input_shape: tuple[int, ...]) -> bool:
  """Whether model ``name`` can take one example of shape (H, W, C)."""
  h, w, _ = input_shape
  if name in ("simple_cnn", "cnn4", "fedpac_cnn"):  # two VALID 5x5 conv + 2x2 pool blocks
    return conv_pool_output_hw(h) >= 1 and conv_pool_output_hw(w) >= 1
  return True  # mlp: any; resnet18: SAME padding, any size


def supported_models(input_shape: tuple[int, ...]) -> tuple[str, ...]:
  """The names in MODELS that accept inputs of shape ``input_shape`` (H, W, C)."""
  input_shape = _check_shape(input_shape)
  return tuple(m for m in MODELS if _supports(m, input_shape))


def _check_shape(input_shape) -> tuple[int, int, int]:
  shape = tuple(int(d) for d in input_shape)
  if len(shape) != 3 or any(d < 1 for d in shape):
    raise ValueError(
        f"input_shape must be one example's (H, W, C) with positive sizes, "
        f"got {tuple(input_shape)}")
  return shape


def get_model(name: str, *, num_classes: int, input_shape: tuple[int, ...],
              **kwargs) -> nn.Module:
  """Builds model ``name`` (one of MODELS) for ``num_classes`` classes.

  ``input_shape`` is one example's (H, W, C); a ValueError is raised if the
  model cannot take it. Extra ``kwargs`` are passed to the module constructor
  (e.g. ``hidden=(100,)`` for mlp, ``width=0.5, num_groups=4`` for resnet18,
  ``conv_impl="im2col"`` for the convnets: see ``models/conv.py``; which one suits a
  backend is `fedjax_gen.trainer.plan.choose`'s decision).
  """
  if name not in _CONSTRUCTORS:
    raise ValueError(f"Unknown model {name!r}; available models: {MODELS}")
  if int(num_classes) < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  shape = _check_shape(input_shape)
  if not _supports(name, shape):
    ok = tuple(m for m in MODELS if _supports(m, shape))
    raise ValueError(
        f"Model {name!r} cannot take inputs of shape {shape} (its two VALID 5x5 "
        f"conv + 2x2 max-pool blocks need H, W >= 16); models that can: {ok}")
  if name == "mlp":
    kwargs.pop("conv_impl", None)  # no convolutions to implement
  return _CONSTRUCTORS[name](num_classes=int(num_classes), **kwargs)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_params_jit(model: nn.Module, input_shape: tuple[int, ...],
                     key: jax.Array) -> Params:
  return model.init(key, jnp.zeros((1, *input_shape), jnp.float32))["params"]


def init_params(model: nn.Module, input_shape: tuple[int, ...],
                key: jax.Array) -> Params:
  """``model.init(key, zeros((1, *input_shape)))["params"]``.

  Jitted and cached per (model, input_shape): one XLA compile is cheaper on CPU
  than dispatching every initialiser op eagerly, and repeated calls (e.g. one
  per client) reuse it. Works under an outer transform too, e.g.
  ``jax.vmap(lambda k: init_params(model, shape, k))(keys)``.
  """
  shape = tuple(int(d) for d in input_shape)
  try:
    hash(model)
  except TypeError:  # unhashable field (e.g. a list): plain eager init
    return model.init(key, jnp.zeros((1, *shape), jnp.float32))["params"]
  return _init_params_jit(model, shape, key)


def count_params(params: Params) -> int:
  """Total number of scalars in a parameter pytree (all leaves, incl. any stacked axes)."""
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
