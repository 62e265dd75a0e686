"""Quality of a class-conditional generator, judged by a classifier trained on real data.

* CAS, classification accuracy score (Ravuri & Vinyals, 2019, in its "does the classifier
  see the conditioned class" form): the share of generated samples that the real-data
  classifier assigns to the class they were generated for.
* Frechet distance between real and generated images in that classifier's penultimate
  feature space (FID's formula, with a domain classifier instead of Inception).
* A PNG grid of samples, one row per class.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg

from fedjax_gen.models import get_model, init_params, supported_models


class ReferenceClassifier(NamedTuple):
  logits: Callable[[np.ndarray], np.ndarray]    # images [N,H,W,C] -> [N, classes]
  features: Callable[[np.ndarray], np.ndarray]  # images -> penultimate features [N, d]
  test_accuracy: float                          # on the dataset's real test split


def train_reference_classifier(x_train, y_train, x_test, y_test, num_classes: int, *,
                               seed: int = 0, epochs: int = 2, batch_size: int = 64,
                               lr: float = 0.05) -> ReferenceClassifier:
  """A NIID-Bench simple-CNN (an MLP for images under 16x16) trained centrally on the real
  training set (SGD, momentum). Its features are its last hidden layer (`fc2`)."""
  shape = x_train.shape[1:]
  name = "simple_cnn" if "simple_cnn" in supported_models(shape) else "mlp"
  model = get_model(name, num_classes=num_classes, input_shape=shape, conv_impl="xla")
  params = init_params(model, x_train.shape[1:], jax.random.key(seed))
  opt = optax.sgd(lr, momentum=0.9)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(
          model.apply({"params": p}, x), y).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = opt.init(params)
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(len(x_train))
    for i in range(0, len(order) - batch_size + 1, batch_size):
      idx = order[i:i + batch_size]
      params, opt_state = step(params, opt_state, x_train[idx], y_train[idx])

  @jax.jit
  def _apply(x):
    logits, state = model.apply({"params": params}, x, capture_intermediates=True)
    return logits, jax.nn.relu(state["intermediates"]["fc2"]["__call__"][0])

  def batched(x, which):
    outs = [np.asarray(_apply(jnp.asarray(x[i:i + 1000]))[which])
            for i in range(0, len(x), 1000)]
    return np.concatenate(outs) if outs else np.zeros((0,))

  logits = functools.partial(batched, which=0)
  accuracy = float((logits(x_test).argmax(-1) == y_test).mean())
  return ReferenceClassifier(logits, functools.partial(batched, which=1), accuracy)


def classification_accuracy_score(classifier: ReferenceClassifier, images, labels) -> float:
  return float((classifier.logits(images).argmax(-1) == np.asarray(labels)).mean())


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
  """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets."""
  mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
  s_a = np.cov(feats_a, rowvar=False)
  s_b = np.cov(feats_b, rowvar=False)
  covmean = scipy.linalg.sqrtm(s_a @ s_b)
  if np.iscomplexobj(covmean):
    covmean = covmean.real
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * covmean))


def save_sample_grid(images: np.ndarray, labels: np.ndarray, path: str, *,
                     class_names=None, per_class: int = 10, title: str = "") -> None:
  """A PNG grid: one row per class, up to `per_class` of its samples."""
  from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone
  from fedjax_gen.outputs import save_figure
  classes = np.unique(labels)
  fig = Figure(figsize=(per_class * 0.8 + 1.5, len(classes) * 0.8 + 0.4))
  axes = fig.subplots(len(classes), per_class, squeeze=False)
  for row, c in enumerate(classes):
    idx = np.flatnonzero(labels == c)[:per_class]
    for col in range(per_class):
      ax = axes[row, col]
      ax.axis("off")
      if col < len(idx):
        img = images[idx[col]]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    name = class_names[c] if class_names is not None else str(c)
    axes[row, 0].text(-2, images.shape[1] / 2, name, ha="right", va="center", fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.subplots_adjust(left=0.12, wspace=0.05, hspace=0.05)
  save_figure(fig, path, dpi=80)


def plot_guidance_sweep(sweep: list[dict], path: str, *, title: str = "") -> None:
  """CAS and Frechet distance against the guidance scale (rows of `guidance_sweep`)."""
  from matplotlib.figure import Figure
  from fedjax_gen.outputs import save_figure
  g = [row["guidance_scale"] for row in sweep]
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot()
  ax.plot(g, [row["cas"] for row in sweep], marker="o", color="C0")
  ax.set_xlabel("classifier-free guidance scale")
  ax.set_ylabel("CAS", color="C0")
  ax.grid(alpha=0.3)
  fd = ax.twinx()
  fd.plot(g, [row["frechet_distance"] for row in sweep], marker="s", color="C1")
  fd.set_ylabel("Frechet distance (lower is better)", color="C1")
  ax.set_title(title)
  fig.tight_layout()
  save_figure(fig, path, dpi=120)
