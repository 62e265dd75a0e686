"""The class-conditional image DDPM: its training loss (for the FL engine or a central loop),
its generator (the `Generator` interface) and its save/load format.

Images enter the DDPM scaled from the dataset's [0, 1] to [-1, 1]. Labels are dropped to
the null class `num_classes` with probability `cond_drop_prob` during training, so that one
network serves classifier-free guidance at sampling time.

A saved generator is a folder: `generator.json` (the UNet's and the sampler's settings) and
`params/` (orbax). `DDPMGenerator.load(folder)` restores it, so later experiments
(Gen-FedSD, GenFL) point at a trained DDPM by its folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from fedjax_gen.diffusion import core
from fedjax_gen.models.unet import UNet, check_image_size
from fedjax_gen.outputs import atomic_write
from fedjax_gen.types import Batch


@dataclasses.dataclass(frozen=True)
class DDPMSpec:
  """Everything but the weights that defines what a trained DDPM generates."""
  image_shape: tuple[int, int, int]
  num_classes: int
  channels: tuple[int, ...] = (32, 64, 64)
  num_res_blocks: int = 1
  diffusion_steps: int = 1000
  noise_schedule: str = "linear"

  def __post_init__(self):
    object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))
    object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
    check_image_size(self.image_shape[0], self.image_shape[1], self.channels)

  def unet(self, conv_impl: str = "xla") -> UNet:
    return UNet(self.num_classes, self.channels, self.num_res_blocks, conv_impl=conv_impl)

  def schedule(self) -> core.Schedule:
    return core.make_schedule(self.noise_schedule, self.diffusion_steps)

  def init_params(self, key: jax.Array):
    x = jnp.zeros((1, *self.image_shape))
    return jax.jit(self.unet().init)(key, x, jnp.zeros((1,), jnp.int32),
                                     jnp.zeros((1,), jnp.int32))["params"]


def eps_fn_of(unet: UNet, params) -> core.EpsFn:
  return lambda x, t, y: unet.apply({"params": params}, x, t, y)


def training_loss(spec: DDPMSpec, *, cond_drop_prob: float = 0.1, conv_impl: str = "xla"):
  """`loss_fn(params, batch)` for the engine: the DDPM loss on the batch's images, with the
  step's own key (`batch.key`) drawing timesteps, noise and label dropout."""
  unet, schedule = spec.unet(conv_impl), spec.schedule()

  def loss_fn(params, batch: Batch):
    k_drop, k_loss = jax.random.split(batch.key)
    y = core.drop_condition(k_drop, batch.y, spec.num_classes, cond_drop_prob)
    return core.ddpm_loss(eps_fn_of(unet, params), schedule, batch.x * 2.0 - 1.0, k_loss,
                          cond=y, mask=batch.mask)
  return loss_fn


def params_fingerprint(params) -> str:
  """A short hash of the weights, so caches tell two trainings of one spec apart."""
  h = hashlib.sha1()
  for leaf in jax.tree.leaves(params):
    h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
  return h.hexdigest()[:16]


class DDPMGenerator:
  """A trained DDPM behind the `Generator` interface: DDIM (`sampler="ddim"`, `sample_steps`
  steps) or ancestral DDPM sampling (all T steps), with classifier-free guidance."""

  def __init__(self, spec: DDPMSpec, params, *, sample_steps: int = 50,
               guidance_scale: float = 2.0, sampler: str = "ddim", batch_size: int = 250,
               source: str = ""):
    if guidance_scale < 0:
      raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}.")
    if sampler not in ("ddim", "ddpm"):
      raise ValueError(f"Unknown sampler {sampler!r}; valid: ddim, ddpm.")
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    self.spec, self.params = spec, params
    self.image_shape, self.num_classes = spec.image_shape, spec.num_classes
    self.sample_steps, self.guidance_scale = int(sample_steps), float(guidance_scale)
    self.sampler, self.batch_size, self.source = sampler, int(batch_size), source
    schedule = spec.schedule()
    timesteps = core.ddim_timesteps(schedule, self.sample_steps)

    def sample(params, labels, key):
      eps_fn = core.guided(eps_fn_of(spec.unet(), params), self.guidance_scale,
                           spec.num_classes)
      shape = (labels.shape[0], *spec.image_shape)
      if sampler == "ddpm":
        x = core.ddpm_sample(eps_fn, schedule, key, shape, cond=labels, clip_x0=1.0)
      else:
        x = core.ddim_sample(eps_fn, schedule, jax.random.normal(key, shape), timesteps,
                             cond=labels, clip_x0=1.0)
      return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)
    self._sample = jax.jit(sample)
    self._fingerprint = params_fingerprint(params)

  privacy = None  # the DP guarantee it was trained under (`load` reads it)
  quality = None  # how it was judged after training: CAS, Frechet distance (`load` reads it)

  def metadata(self) -> dict:
    return {"kind": "ddpm", "spec": dataclasses.asdict(self.spec),
            "params_sha1": self._fingerprint, "source": self.source,
            "sampler": self.sampler, "sample_steps": self.sample_steps,
            "guidance_scale": self.guidance_scale, "batch_size": self.batch_size,
            **({"privacy": self.privacy} if self.privacy else {})}

  def generate(self, labels, key) -> np.ndarray:
    labels = np.asarray(labels, np.int32)
    out = []
    for i, start in enumerate(range(0, len(labels), self.batch_size)):
      chunk = labels[start:start + self.batch_size]
      padded = np.pad(chunk, (0, self.batch_size - len(chunk)))  # one compiled shape
      images = self._sample(self.params, padded, jax.random.fold_in(key, i))
      out.append(np.asarray(images)[:len(chunk)])
    if not out:
      return np.zeros((0, *self.image_shape), np.float32)
    return np.concatenate(out).astype(np.float32)

  # --- save / load ---------------------------------------------------------------------
  def save(self, folder: str) -> None:
    save_ddpm(folder, self.spec, self.params)

  @classmethod
  def load(cls, folder: str, **sampler_kwargs) -> "DDPMGenerator":
    spec, params = load_ddpm(folder)
    gen = cls(spec, params, source=os.path.abspath(folder), **sampler_kwargs)
    with open(os.path.join(folder, "generator.json")) as f:
      saved = json.load(f)
    gen.privacy, gen.quality = saved.get("privacy"), saved.get("quality")
    return gen


def save_ddpm(folder: str, spec: DDPMSpec, params, *, privacy: dict | None = None) -> None:
  """Writes `folder/generator.json` and `folder/params` (orbax; replaced atomically).
  `privacy`: the DP guarantee it was trained under, which every run using it reports."""
  folder = os.path.abspath(folder)
  os.makedirs(folder, exist_ok=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(folder, "params"), jax.device_get(params), force=True)
  atomic_write(os.path.join(folder, "generator.json"),
               json.dumps({"kind": "ddpm", "spec": dataclasses.asdict(spec),
                           "params_sha1": params_fingerprint(params),
                           **({"privacy": privacy} if privacy else {})}, indent=2) + "\n")


def record_quality(folder: str, quality: dict) -> None:
  """Adds how the saved DDPM in `folder` was judged (CAS, Frechet distance and the sampler
  settings they were measured with) to its `generator.json`, where runs that use it read
  it (`trainer.generation.guard`). Not part of the generator's identity (`metadata`)."""
  path = os.path.join(folder, "generator.json")
  with open(path) as f:
    saved = json.load(f)
  atomic_write(path, json.dumps({**saved, "quality": quality}, indent=2) + "\n")


def load_ddpm(folder: str) -> tuple[DDPMSpec, dict]:
  path = os.path.join(folder, "generator.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{folder!r} holds no trained DDPM (no generator.json); point at "
                            "the `generator` folder a ddpm_fmnist run writes in its workdir.")
  with open(path) as f:
    saved = json.load(f)
  spec = DDPMSpec(**saved["spec"])
  abstract = jax.eval_shape(spec.init_params, jax.random.key(0))
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(os.path.join(os.path.abspath(folder), "params"), abstract)
  return spec, params
