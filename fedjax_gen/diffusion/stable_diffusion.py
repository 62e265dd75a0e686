"""Stable Diffusion as a :class:`~fedjax_gen.diffusion.generator.Generator`.

Text-to-image with a pretrained latent diffusion model (Rombach et al., 2022), prompted
with the dataset's class names ("a photo of a {}"). It implements the same interface as the
class-conditional DDPM, so Gen-FedSD, GenFL and the quality metrics use it unchanged:

    from fedjax_gen.diffusion.stable_diffusion import StableDiffusionGenerator

    generator = StableDiffusionGenerator.from_pretrained(
        "CompVis/stable-diffusion-v1-4", revision="flax", dtype="bfloat16",
        class_names=["airplane", "automobile", ...], image_shape=(32, 32, 3),
        num_steps=50, guidance_scale=7.5, batch_size=8)
    images = generator.generate(labels, jax.random.PRNGKey(0))  # [N, 32, 32, 3] in [0, 1]

The weights are diffusers' / transformers' Flax classes (`FlaxUNet2DConditionModel`,
`FlaxAutoencoderKL`, `FlaxCLIPTextModel`, `CLIPTokenizer`, and `FlaxDDIMScheduler` built
from the model's scheduler config). Install them with ``pip install -e .[sd]``
(diffusers < 0.40 still ships the Flax classes; transformers < 5 still ships Flax CLIP).
`model` is a Hugging Face Hub id (downloaded once into the Hub cache; pick a revision
that holds Flax weights, e.g. ``revision="flax"`` or ``"bf16"`` for v1-4) or a local
folder laid out like a diffusers pipeline (``unet/ vae/ text_encoder/ tokenizer/
scheduler/``), e.g. one written by ``FlaxStableDiffusionPipeline.save_pretrained`` on a
machine that is online. Load the components once with :func:`load_components` and pass
them to several generators (other guidance scales, image shapes) to share the weights and
the compiled sampler.

Sampling is our own jitted DDIM loop with classifier-free guidance over fixed-size
batches (the last one padded), so it compiles once per (steps, size, batch size). Images
are decoded at the model's resolution (`height`, `width`, by default the UNet's
``sample_size`` times the VAE's scale factor) and resized / converted to `image_shape`
with :func:`~fedjax_gen.diffusion.generator.to_dataset_format`.

The tests build a tiny randomly initialised pipeline in the same layout
(`tests/tiny_sd.py`), so this loading code runs without the Hub.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_gen.diffusion.generator import to_dataset_format

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
DEFAULT_SUBFOLDERS: Mapping[str, str] = {c: c for c in COMPONENTS}


class _Modules:
  """The parameter-free part of :class:`Components`: the static argument of the jitted
  sampler. Equal (hashed by class, config and dtype) when the architectures are, so
  pipelines loaded twice share compilations; loaded Flax modules hold lists from their
  JSON configs and are not hashable themselves."""

  def __init__(self, unet, vae, text_encoder, scheduler, dtype: str):
    self.unet, self.vae, self.text_encoder, self.scheduler = unet, vae, text_encoder, scheduler
    self.dtype = dtype
    configs = [unet.config, vae.config, text_encoder.config.to_dict(), scheduler.config]
    self._key = json.dumps([[type(m).__name__ for m in (unet, vae, text_encoder, scheduler)],
                            [dict(c) for c in configs], dtype], sort_keys=True, default=str)

  def __hash__(self) -> int:
    return hash(self._key)

  def __eq__(self, other) -> bool:
    return isinstance(other, _Modules) and self._key == other._key


@dataclasses.dataclass(frozen=True, eq=False)
class Components:
  """A loaded Stable Diffusion: Flax modules, their parameters, tokenizer and scheduler."""
  unet: Any  # diffusers.FlaxUNet2DConditionModel
  vae: Any  # diffusers.FlaxAutoencoderKL
  text_encoder: Any  # transformers.FlaxCLIPTextModel, without params (`_do_init=False`)
  tokenizer: Any  # transformers.CLIPTokenizer
  scheduler: Any  # diffusers.FlaxDDIMScheduler
  params: dict  # {"unet", "vae", "text_encoder", "scheduler" (the scheduler's state)}
  model: str  # hub id or absolute path
  revision: str | None = None
  dtype: str = "float32"

  @functools.cached_property
  def modules(self) -> _Modules:
    """The modules without parameters (the sampler's static jit argument)."""
    return _Modules(self.unet, self.vae, self.text_encoder, self.scheduler, self.dtype)

  @property
  def vae_scale_factor(self) -> int:
    return 2 ** (len(self.vae.config.block_out_channels) - 1)


def _is_local(model: str) -> bool:
  return (os.path.isdir(model) or os.path.isabs(model) or model.startswith((".", "~"))
          or model.count("/") > 1)


def check_folder(model: str, subfolders: Mapping[str, str] = DEFAULT_SUBFOLDERS) -> None:
  """Raises ValueError if the local folder `model` lacks one of the pipeline's parts."""
  if not os.path.isdir(model):
    raise ValueError(f"Stable Diffusion folder {model!r} does not exist; pass an existing "
                     "local folder or a Hugging Face Hub id such as "
                     "'CompVis/stable-diffusion-v1-4'.")
  missing = [c for c in COMPONENTS if not os.path.isdir(os.path.join(model, subfolders[c]))]
  if missing:
    names = ", ".join(repr(subfolders[c]) for c in missing)
    raise ValueError(f"Stable Diffusion folder {model!r} has no {names} folder"
                     f"{'s' if len(missing) > 1 else ''} (for the {', '.join(missing)}); a "
                     f"pipeline folder holds {', '.join(COMPONENTS)} subfolders, as written "
                     "by FlaxStableDiffusionPipeline.save_pretrained.")


def _load(model: str, component: str, fn, *args, **kwargs):
  """`fn(*args, **kwargs)`, turning a failed download into a clear OSError."""
  try:
    return fn(*args, **kwargs)
  except OSError as e:
    if _is_local(model):
      raise
    raise OSError(f"Could not download the {component!r} of {model!r} from the Hugging Face "
                  f"Hub, nor find it in the local Hub cache ({type(e).__name__}: {e}). "
                  "Check the id and revision; if this machine is offline, download "
                  "the pipeline elsewhere (e.g. FlaxStableDiffusionPipeline.save_pretrained) "
                  "and pass its local folder instead of the hub id.") from e


def _split(out):
  """Flax `from_pretrained` returns `(model, params)` or a model holding `.params`."""
  return out if isinstance(out, tuple) else (out, out.params)


def _cast(params, dtype):
  """Floating-point leaves to `dtype` (leaves already in `dtype` are not copied)."""
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
                      and x.dtype != dtype else x, params)


def load_configs(model: str, *, revision: str | None = None,
                 subfolders: Mapping[str, str] = DEFAULT_SUBFOLDERS,
                 local_files_only: bool = False) -> tuple[dict, dict]:
  """The UNet's and the VAE's configs (small JSON files), without loading weights."""
  from diffusers import FlaxAutoencoderKL, FlaxUNet2DConditionModel
  if _is_local(model):
    check_folder(model, subfolders)
  hub = dict(revision=revision, local_files_only=local_files_only)
  unet = _load(model, "unet", FlaxUNet2DConditionModel.load_config, model,
               subfolder=subfolders["unet"], **hub)
  vae = _load(model, "vae", FlaxAutoencoderKL.load_config, model,
              subfolder=subfolders["vae"], **hub)
  return dict(unet), dict(vae)


def load_components(model: str, *, revision: str | None = None, dtype: str = "float32",
                    subfolders: Mapping[str, str] = DEFAULT_SUBFOLDERS,
                    from_pt: bool = False, local_files_only: bool = False) -> Components:
  """Loads a Stable Diffusion pipeline's Flax parts from a hub id or a local folder.

  A local folder is checked for all parts before anything is loaded. Floating-point
  parameters are cast to `dtype` ("float32", "bfloat16" or "float16"), which is also
  the modules' computation dtype. The scheduler is DDIM, built from the model's scheduler
  config (whatever scheduler it names); `clip_sample` defaults to False, as latents are
  not confined to [-1, 1]. `from_pt` converts PyTorch weights (needs torch);
  `local_files_only` uses the Hub cache without network access.
  """
  from diffusers import FlaxAutoencoderKL, FlaxDDIMScheduler, FlaxUNet2DConditionModel
  from transformers import CLIPTokenizer, FlaxCLIPTextModel
  subfolders = {**DEFAULT_SUBFOLDERS, **subfolders}
  if _is_local(model):
    check_folder(model, subfolders)
    model = os.path.abspath(os.path.expanduser(model))
  jdtype = jnp.dtype(dtype)
  hub = dict(revision=revision, local_files_only=local_files_only)
  common = dict(hub, dtype=jdtype, from_pt=from_pt)
  unet, unet_params = _split(_load(model, "unet", FlaxUNet2DConditionModel.from_pretrained,
                                   model, subfolder=subfolders["unet"], **common))
  vae, vae_params = _split(_load(model, "vae", FlaxAutoencoderKL.from_pretrained, model,
                                 subfolder=subfolders["vae"], **common))
  text_encoder, text_params = _split(_load(
      model, "text_encoder", FlaxCLIPTextModel.from_pretrained, model,
      subfolder=subfolders["text_encoder"], _do_init=False, **common))
  tokenizer = _load(model, "tokenizer", CLIPTokenizer.from_pretrained, model,
                    subfolder=subfolders["tokenizer"], **hub)
  config = dict(_load(model, "scheduler", FlaxDDIMScheduler.load_config, model,
                      subfolder=subfolders["scheduler"], **hub))
  config.setdefault("clip_sample", False)
  config = {k: v for k, v in config.items() if not k.startswith("_")}
  scheduler = FlaxDDIMScheduler.from_config(config, dtype=jnp.float32)
  params = {"unet": _cast(unet_params, jdtype), "vae": _cast(vae_params, jdtype),
            "text_encoder": _cast(text_params, jdtype),
            "scheduler": scheduler.create_state()}
  return Components(unet, vae, text_encoder, tokenizer, scheduler, params, model, revision,
                    jdtype.name)


def check_classes(class_names: Sequence[str], num_classes: int) -> None:
  """Raises ValueError unless there is one class name per class."""
  if len(class_names) != num_classes:
    raise ValueError(f"Got {len(class_names)} class names for {num_classes} classes; "
                     "give exactly one name (prompt word) per class, in label order.")


def check_size(height: int, width: int, unet_config: Mapping, vae_config: Mapping) -> None:
  """Raises ValueError unless the UNet can denoise latents for `height` x `width` images."""
  vae_factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
  multiple = vae_factor * 2 ** (len(unet_config["down_block_types"]) - 1)
  if height < 1 or width < 1 or height % multiple or width % multiple:
    raise ValueError(f"This Stable Diffusion makes images whose height and width are "
                     f"multiples of {multiple} (VAE factor {vae_factor} times the UNet's "
                     f"downsampling); got {height}x{width}.")


def encode_text(components: Components | _Modules, params,
                input_ids: jax.Array) -> jax.Array:
  """CLIP text embeddings `[B, L, D]` (the last hidden state) of token ids `[B, L]`."""
  return components.text_encoder(input_ids, params=params["text_encoder"], train=False)[0]


def denoise(components: Components | _Modules, params, cond: jax.Array, uncond: jax.Array,
            key: jax.Array, guidance_scale, *, num_steps: int,
            latent_hw: tuple[int, int]) -> jax.Array:
  """DDIM with classifier-free guidance from N(0, sigma^2) latents; returns latents.

  `cond` `[B, L, D]` are the prompts' embeddings, `uncond` `[1, L, D]` the negative
  prompt's; the noise prediction is `eps_u + g * (eps_c - eps_u)`.
  """
  unet, scheduler = components.unet, components.scheduler
  dtype = jnp.dtype(components.dtype)
  state = scheduler.set_timesteps(params["scheduler"], num_steps)
  batch = cond.shape[0]
  context = jnp.concatenate([jnp.broadcast_to(uncond, cond.shape), cond]).astype(dtype)
  shape = (batch, unet.config.in_channels, *latent_hw)
  latents = jax.random.normal(key, shape, jnp.float32) * state.init_noise_sigma

  def body(i, latents):
    t = jnp.asarray(state.timesteps, jnp.int32)[i]
    x = scheduler.scale_model_input(state, jnp.concatenate([latents, latents]), t)
    eps = unet.apply({"params": params["unet"]}, x.astype(dtype),
                     jnp.broadcast_to(t, (2 * batch,)), encoder_hidden_states=context,
                     train=False).sample.astype(jnp.float32)
    eps_u, eps_c = jnp.split(eps, 2)
    eps = eps_u + guidance_scale * (eps_c - eps_u)
    return scheduler.step(state, eps, t, latents).prev_sample

  return jax.lax.fori_loop(0, num_steps, body, latents)


def decode(components: Components | _Modules, params, latents: jax.Array) -> jax.Array:
  """VAE decoding of latents `[B, c, h, w]` to images `[B, H, W, 3]` in [0, 1]."""
  vae = components.vae
  latents = (latents / vae.config.scaling_factor).astype(jnp.dtype(components.dtype))
  images = vae.apply({"params": params["vae"]}, latents, method=vae.decode).sample
  return jnp.clip(images.astype(jnp.float32) / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)


@functools.partial(jax.jit, static_argnames=("modules", "num_steps", "latent_hw"))
def _sample(params, cond_ids, uncond_ids, key, guidance_scale, *, modules: _Modules,
            num_steps: int, latent_hw: tuple[int, int]) -> jax.Array:
  """Prompt token ids `[B, L]` and negative prompt ids `[1, L]` -> images in [0, 1]."""
  cond = encode_text(modules, params, cond_ids)
  uncond = encode_text(modules, params, uncond_ids)
  latents = denoise(modules, params, cond, uncond, key, guidance_scale,
                    num_steps=num_steps, latent_hw=latent_hw)
  return decode(modules, params, latents)


def _tokenize(tokenizer, prompts: Sequence[str]) -> np.ndarray:
  return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                   truncation=True, return_tensors="np").input_ids.astype(np.int32)


class StableDiffusionGenerator:
  """Class-conditional images from Stable Diffusion prompted with class names.

  Args:
    components: loaded :class:`Components`, or a hub id / local folder to load.
    class_names: one prompt word per class, in label order; `num_classes` is its length.
    image_shape: (H, W, C) of the dataset; generated images are resized and converted.
    num_classes: if given, checked against `len(class_names)`.
    prompt_template: prompt for a class, formatted with its name.
    num_steps: DDIM steps. guidance_scale: classifier-free guidance weight (0 =
      unconditional, 1 = no guidance). height, width: decoding resolution (default: the
      model's native one). batch_size: images per compiled sampler call.
    negative_prompt: the unconditional prompt of classifier-free guidance.
    revision, dtype, subfolders, local_files_only: passed to :func:`load_components`
      when `components` is a hub id or folder.
  """

  def __init__(self, components: Components | str, class_names: Sequence[str],
               image_shape: Sequence[int], *, num_classes: int | None = None,
               prompt_template: str = "a photo of a {}", num_steps: int = 50,
               guidance_scale: float = 7.5, height: int | None = None,
               width: int | None = None, batch_size: int = 8, negative_prompt: str = "",
               revision: str | None = None, dtype: str = "float32",
               subfolders: Mapping[str, str] = DEFAULT_SUBFOLDERS,
               local_files_only: bool = False):
    class_names = [str(c) for c in class_names]
    if not class_names:
      raise ValueError("class_names is empty; give one name per class.")
    if num_classes is not None:
      check_classes(class_names, num_classes)
    if len(image_shape) != 3 or image_shape[2] not in (1, 3) or min(image_shape) < 1:
      raise ValueError(f"image_shape must be (H, W, C) with C 1 or 3; got {image_shape}.")
    if num_steps < 1:
      raise ValueError(f"num_steps must be at least 1; got {num_steps}.")
    if guidance_scale < 0:
      raise ValueError(f"guidance_scale must be >= 0 (0: unconditional, 1: no guidance); "
                       f"got {guidance_scale}.")
    if batch_size < 1:
      raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    if "{}" not in prompt_template:
      raise ValueError(f"prompt_template needs a '{{}}' for the class name; got "
                       f"{prompt_template!r}.")
    subfolders = {**DEFAULT_SUBFOLDERS, **subfolders}
    if isinstance(components, Components):
      unet_config, vae_config = components.unet.config, components.vae.config
    else:
      unet_config, vae_config = load_configs(components, revision=revision,
                                             subfolders=subfolders,
                                             local_files_only=local_files_only)
    factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    native = unet_config["sample_size"] * factor
    height = int(native if height is None else height)
    width = int(native if width is None else width)
    check_size(height, width, unet_config, vae_config)
    if not isinstance(components, Components):
      components = load_components(components, revision=revision, dtype=dtype,
                                   subfolders=subfolders, local_files_only=local_files_only)
    self.components = components
    self.class_names = class_names
    self.num_classes = len(class_names)
    self.image_shape = tuple(int(s) for s in image_shape)
    self.prompt_template = prompt_template
    self.num_steps = int(num_steps)
    self.guidance_scale = float(guidance_scale)
    self.height, self.width = height, width
    self.batch_size = int(batch_size)
    self.negative_prompt = negative_prompt
    self._class_ids = _tokenize(components.tokenizer,
                                [prompt_template.format(c) for c in class_names])
    self._uncond_ids = _tokenize(components.tokenizer, [negative_prompt])

  @classmethod
  def from_pretrained(cls, model: str, *, class_names: Sequence[str],
                      image_shape: Sequence[int], revision: str | None = None,
                      dtype: str = "float32", **kwargs) -> "StableDiffusionGenerator":
    """A generator for the hub id or local folder `model` (see the module docstring)."""
    return cls(model, class_names, image_shape, revision=revision, dtype=dtype, **kwargs)

  def metadata(self) -> dict:
    c = self.components
    return {"kind": "stable_diffusion", "model": c.model, "revision": c.revision,
            "dtype": c.dtype, "prompt_template": self.prompt_template,
            "negative_prompt": self.negative_prompt, "class_names": list(self.class_names),
            "num_steps": self.num_steps, "guidance_scale": self.guidance_scale,
            "batch_size": self.batch_size,  # batch i draws its noise from fold_in(key, i)
            "height": self.height, "width": self.width,
            "image_shape": list(self.image_shape)}

  def generate(self, labels: np.ndarray, key: jax.Array) -> np.ndarray:
    """Images `[len(labels), H, W, C]` float32 in [0, 1]; batch `i` uses
    `fold_in(key, i)`, so images depend on `batch_size` but not on the other batches."""
    labels = np.asarray(labels, np.int32).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
      raise ValueError(f"Labels must lie in [0, {self.num_classes}); got "
                       f"[{labels.min()}, {labels.max()}].")
    c, b = self.components, self.batch_size
    f = c.vae_scale_factor
    out = []
    for i, start in enumerate(range(0, labels.size, b)):
      chunk = labels[start:start + b]
      ids = self._class_ids[np.pad(chunk, (0, b - chunk.size))]  # static batch shape
      images = _sample(c.params, ids, self._uncond_ids, jax.random.fold_in(key, i),
                       jnp.float32(self.guidance_scale), modules=c.modules,
                       num_steps=self.num_steps, latent_hw=(self.height // f, self.width // f))
      out.append(to_dataset_format(images[:chunk.size], self.image_shape))
    if not out:
      return np.zeros((0, *self.image_shape), np.float32)
    return np.concatenate(out)
