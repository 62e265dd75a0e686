"""Model zoo for fedjax-gen: flax.linen classifiers with a top-level ``head``.

All models map ``[batch, H, W, C]`` float32 to ``[batch, num_classes]`` logits
and have no mutable collections, so ``model.apply({"params": p}, x)`` is pure
and can be vmapped over a leading client axis of ``p``.
"""

from fedjax_gen.models.cnn import CNN4, SimpleCNN
from fedjax_gen.models.mlp import MLP
from fedjax_gen.models.registry import (MODELS, Params, count_params,
                                        get_model, init_params,
                                        supported_models)
from fedjax_gen.models.resnet import BasicBlock, ResNet18
from fedjax_gen.models.unet import UNet

__all__ = [
    "MODELS",
    "Params",
    "get_model",
    "init_params",
    "count_params",
    "supported_models",
    "MLP",
    "SimpleCNN",
    "CNN4",
    "ResNet18",
    "BasicBlock",
    "UNet",
]
