"""Stable Diffusion generator on a tiny random pipeline saved to disk and loaded back."""

import os

import jax
import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from fedjax_gen.diffusion import stable_diffusion as sd  # noqa: E402
from tests.tiny_sd import save_tiny_pipeline  # noqa: E402
from fedjax_gen.diffusion.generator import Generator, check_compatible  # noqa: E402

CLASSES = ["t-shirt", "trouser", "pullover"]
FAST = dict(num_steps=2, batch_size=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return save_tiny_pipeline(str(tmp_path_factory.mktemp("tiny_sd")))


@pytest.fixture(scope="module")
def components(folder):
  return sd.load_components(folder)


@pytest.fixture(scope="module")
def fmnist(components):
  return sd.StableDiffusionGenerator(components, CLASSES, (28, 28, 1), **FAST)


def test_saved_pipeline_layout(folder, components):
  assert sorted(os.listdir(folder)) == ["model_index.json", "scheduler", "text_encoder",
                                        "tokenizer", "unet", "vae"]
  ids = components.tokenizer(["a photo of a t-shirt"]).input_ids[0]
  assert ids[0] == components.tokenizer.bos_token_id
  assert ids[-1] == components.tokenizer.eos_token_id
  assert components.vae_scale_factor == 2


def test_generates_in_the_dataset_format(fmnist, components):
  images = fmnist.generate(np.array([0, 1, 2, 0, 1]), jax.random.PRNGKey(0))
  assert images.shape == (5, 28, 28, 1) and images.dtype == np.float32
  assert images.min() >= 0 and images.max() <= 1 and images.std() > 0
  assert isinstance(fmnist, Generator)
  check_compatible(fmnist, (28, 28, 1), 3)
  cifar = sd.StableDiffusionGenerator(components, CLASSES, (32, 32, 3), **FAST)
  rgb = cifar.generate(np.array([2, 0, 1]), jax.random.PRNGKey(0))
  assert rgb.shape == (3, 32, 32, 3) and rgb.dtype == np.float32
  assert rgb.min() >= 0 and rgb.max() <= 1
  assert fmnist.generate(np.array([], np.int32), jax.random.PRNGKey(0)).shape == (0, 28, 28, 1)


def test_loads_from_folder_like_a_user(folder, fmnist):
  user = sd.StableDiffusionGenerator.from_pretrained(
      folder, class_names=CLASSES, image_shape=(28, 28, 1), num_classes=3, **FAST)
  meta = user.metadata()
  assert meta["kind"] == "stable_diffusion" and meta["model"] == os.path.abspath(folder)
  assert (meta["height"], meta["width"], meta["image_shape"]) == (16, 16, [28, 28, 1])
  assert meta == fmnist.metadata()
  labels, key = np.array([1, 2, 0]), jax.random.PRNGKey(3)
  np.testing.assert_allclose(user.generate(labels, key), fmnist.generate(labels, key),
                             atol=1e-6)


def test_same_key_same_images(fmnist):
  labels = np.array([0, 1, 2])
  a = fmnist.generate(labels, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(a, fmnist.generate(labels, jax.random.PRNGKey(1)))
  assert not np.allclose(a, fmnist.generate(labels, jax.random.PRNGKey(2)))


def test_prompts_matter(fmnist):
  key = jax.random.PRNGKey(0)
  same, other = fmnist.generate(np.array([0, 0]), key), fmnist.generate(np.array([0, 1]), key)
  np.testing.assert_allclose(same[0], other[0], atol=1e-5)  # same noise, same prompt
  assert np.abs(same[1] - other[1]).max() > 1e-3  # same noise, another class name


def test_guidance_matters(components):
  labels, key = np.array([0, 1]), jax.random.PRNGKey(0)
  images = [sd.StableDiffusionGenerator(components, CLASSES, (16, 16, 3), guidance_scale=g,
                                        **FAST).generate(labels, key) for g in (0.0, 5.0)]
  assert np.abs(images[0] - images[1]).max() > 1e-3


def test_missing_component_is_named_before_loading(tmp_path):
  for name in ("unet", "text_encoder", "tokenizer", "scheduler"):  # empty: loading would fail
    (tmp_path / name).mkdir()
  with pytest.raises(ValueError, match="no 'vae' folder"):
    sd.load_components(str(tmp_path))
  with pytest.raises(ValueError, match="no 'vae' folder"):
    sd.StableDiffusionGenerator(str(tmp_path), CLASSES, (28, 28, 1))
  with pytest.raises(ValueError, match="does not exist"):
    sd.load_components(str(tmp_path / "nowhere"))


def test_unreachable_hub_id_suggests_a_local_folder():
  with pytest.raises(OSError, match="Could not download.*local folder"):
    sd.load_components("fedjax-gen-tests/no-such-model", local_files_only=True)


def test_bad_arguments(components, fmnist):
  with pytest.raises(ValueError, match="3 class names for 10 classes"):
    sd.StableDiffusionGenerator(components, CLASSES, (28, 28, 1), num_classes=10)
  with pytest.raises(ValueError, match="3 class names for 10 classes"):
    sd.check_classes(CLASSES, 10)
  sd.check_classes(CLASSES, 3)
  assert fmnist.num_classes == 3
  with pytest.raises(ValueError, match="multiples of 4.*18x16"):
    sd.StableDiffusionGenerator(components, CLASSES, (28, 28, 1), height=18)
  with pytest.raises(ValueError, match="guidance_scale"):
    sd.StableDiffusionGenerator(components, CLASSES, (28, 28, 1), guidance_scale=-1)
  with pytest.raises(ValueError, match="num_steps"):
    sd.StableDiffusionGenerator(components, CLASSES, (28, 28, 1), num_steps=0)
  with pytest.raises(ValueError, match=r"Labels must lie in \[0, 3\)"):
    fmnist.generate(np.array([0, 3]), jax.random.PRNGKey(0))
