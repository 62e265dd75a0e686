"""A tiny randomly initialised Flax Stable Diffusion pipeline, written to a folder in the
layout `fedjax_gen.diffusion.stable_diffusion` loads: the test fixture that lets the real
loading and sampling code run without the Hub (also used by the sampling benchmark)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np


def _tiny_tokenizer_files(path: str) -> None:
  """A byte-level BPE vocabulary (every byte, as a word piece and as a word end) with a
  few merges, in CLIP's vocab.json / merges.txt format."""
  from transformers.models.clip.tokenization_clip import bytes_to_unicode
  chars = list(bytes_to_unicode().values())
  merges = [("t", "h"), ("th", "e</w>"), ("p", "h"), ("o", "t"), ("ph", "ot"),
            ("phot", "o</w>"), ("o", "f</w>")]
  tokens = chars + [ch + "</w>" for ch in chars] + [a + b for a, b in merges]
  tokens += ["<|startoftext|>", "<|endoftext|>"]
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "vocab.json"), "w") as f:
    json.dump({t: i for i, t in enumerate(tokens)}, f, ensure_ascii=False)
  with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def _random_params(init_fn, seed: int):
  """Parameters shaped like `init_fn(key)`'s, drawn with NumPy: fan-in scaled normal
  kernels, 0.02-scaled embeddings, zero biases, unit norm scales. Only traces `init_fn`
  (jitting a module's init on CPU takes tens of seconds for compiling its RNG calls)."""
  rng = np.random.default_rng(seed)

  def init(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "bias":
      return np.zeros(leaf.shape, leaf.dtype)
    if name == "scale":
      return np.ones(leaf.shape, leaf.dtype)
    std = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if name == "kernel" else 0.02
    return (rng.standard_normal(leaf.shape) * std).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(init, jax.eval_shape(init_fn, jax.random.PRNGKey(0)))


def save_tiny_pipeline(path: str, seed: int = 0) -> str:
  """Writes a tiny randomly initialised Flax Stable Diffusion pipeline to `path`.

  Same layout and classes as a real one (UNet with a cross-attention block, 2-level VAE,
  2-layer CLIP text encoder, byte-level CLIP tokenizer, DDIM scheduler config), with
  16x16 images from 8x8x4 latents; for tests and offline demos. Returns `path`.
  """
  from diffusers import FlaxAutoencoderKL, FlaxDDIMScheduler, FlaxUNet2DConditionModel
  from transformers import CLIPTextConfig, CLIPTokenizer, FlaxCLIPTextModel
  _tiny_tokenizer_files(os.path.join(path, "tokenizer"))
  tokenizer = CLIPTokenizer(os.path.join(path, "tokenizer", "vocab.json"),
                            os.path.join(path, "tokenizer", "merges.txt"),
                            model_max_length=77)
  tokenizer.save_pretrained(os.path.join(path, "tokenizer"))
  unet = FlaxUNet2DConditionModel(
      sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
      block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
      up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
      attention_head_dim=4)
  unet.save_pretrained(os.path.join(path, "unet"),
                       params=_random_params(unet.init_weights, seed))
  vae = FlaxAutoencoderKL(
      in_channels=3, out_channels=3, block_out_channels=(32, 64), latent_channels=4,
      down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
      layers_per_block=1, sample_size=16)
  vae.save_pretrained(os.path.join(path, "vae"),
                      params=_random_params(vae.init_weights, seed + 1))
  config = CLIPTextConfig(
      vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
      pad_token_id=tokenizer.pad_token_id)
  text = FlaxCLIPTextModel(config, _do_init=False)
  text.save_pretrained(os.path.join(path, "text_encoder"), params=_random_params(
      lambda key: text.init_weights(key, (1, config.max_position_embeddings)), seed + 2))
  FlaxDDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    clip_sample=False, set_alpha_to_one=False,
                    steps_offset=1).save_pretrained(os.path.join(path, "scheduler"))
  index = {"_class_name": "FlaxStableDiffusionPipeline",
           "unet": ["diffusers", "FlaxUNet2DConditionModel"],
           "vae": ["diffusers", "FlaxAutoencoderKL"],
           "text_encoder": ["transformers", "FlaxCLIPTextModel"],
           "tokenizer": ["transformers", "CLIPTokenizer"],
           "scheduler": ["diffusers", "FlaxDDIMScheduler"],
           "safety_checker": [None, None], "feature_extractor": [None, None]}
  with open(os.path.join(path, "model_index.json"), "w") as f:
    json.dump(index, f, indent=2)
  return path
