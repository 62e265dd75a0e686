"""One interface for every image generator, and an on-disk cache of generated sets.

A generator turns class labels and a PRNG key into images in the dataset's own format
(``[N, H, W, C]`` float32 in ``[0, 1]``, like :class:`fedjax_gen.data.Dataset`):

    images = generator.generate(labels, key)

Both the class-conditional DDPM (`fedjax_gen.diffusion.ddpm_generator`) and Stable Diffusion
(`fedjax_gen.diffusion.stable_diffusion`) implement it; Gen-FedSD, GenFL and the quality
metrics only see this interface. `metadata()` names the generator, its checkpoint and its
settings: `generate_cached` stores it beside each generated set and refuses a cache folder
made by another generator instead of silently mixing the two.
"""

from __future__ import annotations

import json
import os
import time
from typing import Protocol, runtime_checkable

import jax
import numpy as np

from fedjax_gen.outputs import atomic_save, atomic_write


@runtime_checkable
class Generator(Protocol):
  image_shape: tuple[int, int, int]  # (H, W, C) of the dataset it generates for
  num_classes: int

  def metadata(self) -> dict:
    """JSON-able description that identifies what this generator produces (kind,
    checkpoint or model id, sampler settings). Two generators with equal metadata must
    produce the same images for the same labels and key."""

  def generate(self, labels: np.ndarray, key: jax.Array) -> np.ndarray:
    """Images `[len(labels), H, W, C]` float32 in [0, 1], one per (int) label."""


def check_compatible(generator: Generator, image_shape, num_classes: int) -> None:
  """Raises before generation if `generator` cannot produce data for this dataset."""
  if tuple(generator.image_shape) != tuple(image_shape):
    raise ValueError(f"The generator makes images of shape {tuple(generator.image_shape)} "
                     f"but the dataset's are {tuple(image_shape)}; configure the generator "
                     "with the dataset's image size and channels.")
  if generator.num_classes != num_classes:
    raise ValueError(f"The generator knows {generator.num_classes} classes but the dataset "
                     f"has {num_classes}; use a generator trained (or prompted) for this "
                     "dataset's classes.")


def to_dataset_format(images, image_shape) -> np.ndarray:
  """Resizes `[N, h, w, c]` images in [0, 1] to `image_shape` (H, W, C) and converts
  channels (RGB -> grey by luminance, grey -> RGB by repetition)."""
  images = jax.numpy.asarray(images, jax.numpy.float32)
  h, w, c = image_shape
  if images.shape[-1] != c:
    if images.shape[-1] == 3 and c == 1:
      images = images @ jax.numpy.array([0.299, 0.587, 0.114])[:, None]
    elif images.shape[-1] == 1:
      images = jax.numpy.repeat(images, c, axis=-1)
    else:
      raise ValueError(f"Cannot convert {images.shape[-1]}-channel images to {c} channels.")
  if images.shape[1:3] != (h, w):
    images = jax.image.resize(images, (images.shape[0], h, w, c), "linear", antialias=True)
  return np.asarray(jax.numpy.clip(images, 0.0, 1.0), np.float32)


def _labels_key(labels: np.ndarray) -> str:
  counts = np.bincount(labels, minlength=1)
  return "-".join(map(str, counts))


def generate_cached(generator: Generator, labels, seed: int, cache_dir: str | None, *,
                    name: str = "generated") -> np.ndarray:
  """`generator.generate(labels, PRNGKey(seed))`, stored in `cache_dir` and reused.

  The cache holds `NAME.npz` (images, labels) and `NAME.json` (the generator's metadata,
  the seed and the per-class counts). A re-run with the same generator, seed and labels
  loads it; a folder whose `generator.json` names another generator raises instead of
  mixing their images. `cache_dir=None` generates without caching.
  """
  labels = np.asarray(labels, np.int32)
  if labels.size and (labels.min() < 0 or labels.max() >= generator.num_classes):
    raise ValueError(f"Labels must lie in [0, {generator.num_classes}); got "
                     f"[{labels.min()}, {labels.max()}].")
  if cache_dir is None:
    return generator.generate(labels, jax.random.PRNGKey(seed))
  meta = json.loads(json.dumps(generator.metadata()))
  os.makedirs(cache_dir, exist_ok=True)
  owner = os.path.join(cache_dir, "generator.json")
  if os.path.exists(owner):
    with open(owner) as f:
      saved = json.load(f)
    if saved != meta:
      raise ValueError(
          f"Cache folder {cache_dir!r} holds images of another generator ({saved}), not of "
          f"{meta}. Point the cache at a new folder, or delete this one.")
  else:
    atomic_write(owner, json.dumps(meta, indent=2, sort_keys=True) + "\n")
  record = {"generator": meta, "seed": int(seed), "counts": _labels_key(labels)}
  data_path = os.path.join(cache_dir, f"{name}.npz")
  meta_path = os.path.join(cache_dir, f"{name}.json")
  if os.path.exists(data_path) and os.path.exists(meta_path):
    with open(meta_path) as f:
      saved = json.load(f)
    saved.pop("generation_s", None)
    if saved == record:
      with np.load(data_path) as z:
        if np.array_equal(z["labels"], labels):
          return z["images"]
  start = time.perf_counter()
  images = generator.generate(labels, jax.random.PRNGKey(seed))
  record["generation_s"] = time.perf_counter() - start
  atomic_save(data_path, lambda f: np.savez(f, images=images, labels=labels), suffix=".npz")
  atomic_write(meta_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
  return images


def cached_generation_s(cache_dir: str, names) -> float:
  """Seconds the generator took to make the cached sets `names` of `cache_dir` (what a
  re-run that loads them did not pay again); sets not in the cache count 0."""
  total = 0.0
  for name in names:
    path = os.path.join(cache_dir, f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        total += float(json.load(f).get("generation_s", 0.0))
  return total
