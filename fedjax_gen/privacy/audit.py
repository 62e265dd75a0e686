"""What a generator and a trained classifier leak about their training data, measured.

* Memorisation of generated images: each sample's distance to its nearest training image
  against its distance to the nearest held-out image of the same class, in the reference
  classifier's feature space (the one CAS and the Frechet distance use). A generator that
  learned the distribution lands about as close to either set (`share_closer_to_train`
  near 0.5); one that copies its training images lands on them (near 1). The ratio
  d_train / d_heldout is the "distance to closest record" test of synthetic-data audits;
  Carlini et al., "Extracting Training Data from Diffusion Models" (2023), show diffusion
  models do copy. The comparison needs reference sets of equal size, so a training set
  larger than the held-out one is subsampled; `near_copies` searches the whole training set
  instead, calibrated by how near real held-out images come to it.
* Membership inference by a loss threshold (Yeom et al., "Privacy Risk in Machine Learning",
  2018): members are guessed where the model's loss is low -- the classifier's
  cross-entropy, or the DDPM's denoising loss at fixed timesteps (Matsumoto et al.,
  "Membership Inference Attacks against Diffusion Models", 2023). Reported as ROC AUC and,
  after Carlini et al., "Membership Inference Attacks From First Principles" (2022), the
  true-positive rate at 1% false positives.

Everything takes arrays and functions and returns plain dicts of numbers, the `audit` entry
of a run's `summary.json`; nothing here reads a config or writes a file.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.metrics import roc_auc_score, roc_curve

# The DDPM is used through its spec's methods, not by importing `diffusion.ddpm`: that
# module saves checkpoints (orbax), which this layer may not reach.
from fedjax_gen.diffusion import core

QUANTILES = (5, 25, 50, 75, 95)
RATIO_CAP = 1e3        # d_train / d_heldout is capped here, so a held-out copy stays finite JSON
NEAR_COPY_PERCENTILE = 1.0
DEFAULT_TIMESTEP_FRACTIONS = (0.05, 0.1, 0.2, 0.3)  # of T: small t carries the most signal
_BLOCK_ENTRIES = 1 << 23  # sample x reference distances held at once (64 MiB of float64)


# --- memorisation ----------------------------------------------------------------------------
def nearest_distances(sample_feats, sample_y, ref_feats, ref_y) -> np.ndarray:
  """Per sample, the L2 distance to the closest reference of the same class (`inf` where
  its class has no reference). Features are flattened to vectors; distances are computed
  in blocks of samples, so 10k x 10k per class fits in memory, and the winner's distance
  is recomputed directly (an exact copy scores exactly 0)."""
  s = np.asarray(sample_feats, np.float64).reshape(len(sample_feats), -1)
  r = np.asarray(ref_feats, np.float64).reshape(len(ref_feats), -1)
  sample_y, ref_y = np.asarray(sample_y).reshape(-1), np.asarray(ref_y).reshape(-1)
  if len(sample_y) != len(s) or len(ref_y) != len(r):
    raise ValueError(f"Features and labels differ in length: {len(s)} samples with "
                     f"{len(sample_y)} labels, {len(r)} references with {len(ref_y)} labels.")
  if len(s) and len(r) and s.shape[1] != r.shape[1]:
    raise ValueError(f"Samples have {s.shape[1]} features but references {r.shape[1]}.")
  out = np.full(len(s), np.inf)
  for c in np.unique(sample_y):
    si, ri = np.flatnonzero(sample_y == c), np.flatnonzero(ref_y == c)
    if not len(ri):
      continue
    rc = r[ri]
    rc_sq = np.einsum("ij,ij->i", rc, rc)
    block = max(1, _BLOCK_ENTRIES // len(ri))
    for start in range(0, len(si), block):
      idx = si[start:start + block]
      a = s[idx]
      d2 = rc_sq[None, :] - 2.0 * a @ rc.T  # |a|^2 is the same along a row: argmin ignores it
      out[idx] = np.linalg.norm(a - rc[d2.argmin(1)], axis=1)
  return out


def memorisation(sample_feats, sample_y, train_feats, train_y, heldout_feats,
                 heldout_y) -> dict:
  """Nearest same-class training image against nearest same-class held-out image, per sample.

  Returns `share_closer_to_train` (the share with d_train < d_heldout: about 0.5 for a
  generator that does not memorise, about 1 for one that copies training images, about 0
  for one that copies held-out images), the quantiles `ratio_q05` ... `ratio_q95` of
  d_train / d_heldout (0/0 counts 1; capped at `RATIO_CAP`), the medians of both distances
  and the counts. The two reference sets must have the same size per class and come from
  one distribution: nearest-neighbour distances shrink as a set grows, so a larger
  training set alone would pull the share above 0.5 (`audit_generated` subsamples them).
  """
  sample_y = np.asarray(sample_y).reshape(-1)
  d_train = nearest_distances(sample_feats, sample_y, train_feats, train_y)
  d_heldout = nearest_distances(sample_feats, sample_y, heldout_feats, heldout_y)
  missing = ~(np.isfinite(d_train) & np.isfinite(d_heldout))
  if missing.any():
    raise ValueError(f"Classes {sorted(set(np.unique(sample_y[missing]).tolist()))} have "
                     "samples but no training or no held-out reference; generate only the "
                     "classes both reference sets hold.")
  if not len(d_train):
    raise ValueError("No samples to audit.")
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = np.where(d_heldout > 0, d_train / d_heldout, np.where(d_train > 0, np.inf, 1.0))
  ratio = np.minimum(ratio, RATIO_CAP)
  out = {"share_closer_to_train": float(np.mean(d_train < d_heldout))}
  for q, v in zip(QUANTILES, np.percentile(ratio, QUANTILES)):
    out[f"ratio_q{q:02d}"] = float(v)
  out.update(d_train_median=float(np.median(d_train)),
             d_heldout_median=float(np.median(d_heldout)),
             samples=int(len(d_train)), train_refs=int(len(np.asarray(train_y).reshape(-1))),
             heldout_refs=int(len(np.asarray(heldout_y).reshape(-1))))
  return out


def near_copies(sample_feats, sample_y, train_feats, train_y, heldout_feats,
                heldout_y, *, percentile: float = NEAR_COPY_PERCENTILE) -> dict:
  """The share of samples nearer to a training image (of the whole training set, same
  class) than all but `percentile`% of held-out images are: real unseen images are the
  calibration, so a generator that does not copy scores about `percentile`/100 and one
  that copies scores about 1, however much larger the training set is than the held-out
  one (where `memorisation`'s subsampled reference misses most copied images)."""
  d_sample = nearest_distances(sample_feats, sample_y, train_feats, train_y)
  d_real = nearest_distances(heldout_feats, heldout_y, train_feats, train_y)
  d_real = d_real[np.isfinite(d_real)]
  if not len(d_real):
    raise ValueError("No held-out image has a training image of its class.")
  threshold = float(np.percentile(d_real, percentile))
  return {"near_copy_share": float(np.mean(d_sample < threshold)),
          "near_copy_threshold": threshold, "near_copy_percentile": float(percentile)}


def _equal_refs(y_train, y_heldout, classes, rng) -> tuple[np.ndarray, np.ndarray]:
  """Indices of a training and a held-out subset with, per class, as many images each as
  the smaller set holds (drawn without replacement)."""
  tr, ho = [], []
  for c in classes:
    i_tr, i_ho = np.flatnonzero(y_train == c), np.flatnonzero(y_heldout == c)
    n = min(len(i_tr), len(i_ho))
    tr.append(np.sort(rng.choice(i_tr, n, replace=False)))
    ho.append(np.sort(rng.choice(i_ho, n, replace=False)))
  return np.concatenate(tr), np.concatenate(ho)


def audit_generated(images, labels, classifier, x_train, y_train, x_heldout, y_heldout, *,
                    seed: int = 0) -> dict:
  """`memorisation` and `near_copies` of already generated `images` (one label each) in
  `classifier.features` space (the reference classifier of CAS and Frechet distance).
  The larger reference set is subsampled (seeded) to the smaller one's size per class for
  `memorisation`; `near_copies` uses the whole training set."""
  labels = np.asarray(labels).reshape(-1)
  y_train, y_heldout = np.asarray(y_train).reshape(-1), np.asarray(y_heldout).reshape(-1)
  classes = np.unique(labels)
  i_tr, i_ho = _equal_refs(y_train, y_heldout, classes, np.random.default_rng(seed))
  keep = np.isin(y_train, classes)
  train_feats = classifier.features(np.asarray(x_train)[keep])
  pos = np.cumsum(keep) - 1  # index into the kept training images
  heldout_feats = classifier.features(np.asarray(x_heldout)[i_ho])
  sample_feats = classifier.features(np.asarray(images))
  out = memorisation(sample_feats, labels, train_feats[pos[i_tr]], y_train[i_tr],
                     heldout_feats, y_heldout[i_ho])
  out.update(near_copies(sample_feats, labels, train_feats, y_train[keep], heldout_feats,
                         y_heldout[i_ho]))
  return out


def audit_generator(generator, classifier, x_train, y_train, x_heldout, y_heldout, *,
                    samples_per_class: int, seed: int = 0) -> dict:
  """Generates `samples_per_class` images of every class that the generator knows and both
  reference sets hold (key `jax.random.key(seed)`), then `audit_generated`."""
  if samples_per_class < 1:
    raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}.")
  classes = np.intersect1d(np.unique(y_train), np.unique(y_heldout))
  classes = classes[(classes >= 0) & (classes < generator.num_classes)]
  if not len(classes):
    raise ValueError("No class has images in both the training and the held-out set.")
  labels = np.repeat(classes, samples_per_class).astype(np.int32)
  images = generator.generate(labels, jax.random.key(seed))
  out = audit_generated(images, labels, classifier, x_train, y_train, x_heldout, y_heldout,
                        seed=seed)
  out.update(samples_per_class=int(samples_per_class), classes=int(len(classes)))
  return out


# --- membership inference --------------------------------------------------------------------
def membership_inference(member_scores, nonmember_scores) -> dict:
  """A loss-threshold attack: the lower an example's loss, the likelier it is a member.

  Returns `auc` (ROC AUC; a member and a non-member with equal loss count half),
  `tpr_at_1pct_fpr` (the largest share of members caught while at most 1% of non-members
  are accused: with fewer than 100 non-members, at none), `advantage` (max TPR - FPR over
  thresholds, Yeom et al.'s membership advantage) and the counts."""
  m = np.asarray(member_scores, np.float64).reshape(-1)
  n = np.asarray(nonmember_scores, np.float64).reshape(-1)
  if not len(m) or not len(n):
    raise ValueError(f"Membership inference needs members and non-members; got {len(m)} "
                     f"and {len(n)}.")
  if not (np.isfinite(m).all() and np.isfinite(n).all()):
    raise ValueError("Membership scores must be finite.")
  truth = np.concatenate([np.ones(len(m)), np.zeros(len(n))])
  score = -np.concatenate([m, n])
  fpr, tpr, _ = roc_curve(truth, score, drop_intermediate=False)
  return {"auc": float(roc_auc_score(truth, score)),
          "tpr_at_1pct_fpr": float(tpr[fpr <= 0.01].max()),
          "advantage": float(np.max(tpr - fpr)),
          "members": int(len(m)), "nonmembers": int(len(n))}


def _batched(fn, arrays, batch_size: int) -> np.ndarray:
  """`fn(*batch)` over fixed-size batches (the last padded by repeating its first row, so
  one compiled shape serves all), concatenated and cut back to the inputs' length."""
  n = len(arrays[0])
  if not n:
    return np.zeros((0,), np.float32)
  b = max(1, min(int(batch_size), n))
  out = []
  for start in range(0, n, b):
    chunk = [a[start:start + b] for a in arrays]
    k = len(chunk[0])
    if k < b:
      chunk = [np.concatenate([c, np.repeat(c[:1], b - k, axis=0)]) for c in chunk]
    out.append(np.asarray(fn(*chunk))[:k])
  return np.concatenate(out)


@functools.lru_cache(maxsize=8)
def _cross_entropy_fn(apply_fn: Callable):
  """One jitted per-example loss per `apply_fn`, so repeated audits compile once."""
  return jax.jit(lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(
      apply_fn(p, x), y))


def classifier_losses(apply_fn: Callable, params, x, y, *, batch_size: int = 1000) -> np.ndarray:
  """Per-example softmax cross-entropy of `apply_fn(params, x) -> logits` on labels `y`."""
  x, y = np.asarray(x), np.asarray(y, np.int32).reshape(-1)
  if len(x) != len(y):
    raise ValueError(f"{len(x)} examples but {len(y)} labels.")
  fn = _cross_entropy_fn(apply_fn)
  return _batched(lambda x, y: fn(params, x, y), [x, y], batch_size).astype(np.float32)


def default_timesteps(spec) -> tuple[int, ...]:
  """`DEFAULT_TIMESTEP_FRACTIONS` of the DDPM's T steps, as distinct timesteps."""
  t = spec.diffusion_steps
  return tuple(sorted({min(t - 1, int(f * t)) for f in DEFAULT_TIMESTEP_FRACTIONS}))


def ddpm_losses(spec, params, images, labels, *,
                timesteps: Sequence[int] | None = None, seed: int = 0, batch_size: int = 64,
                conv_impl: str = "xla") -> np.ndarray:
  """Per-example denoising loss |eps - eps_theta(x_t, t, y)|^2 of the DDPM `spec` (a
  `diffusion.ddpm.DDPMSpec`) with weights `params`: its training loss with its UNet
  (`spec.unet`) and schedule (`spec.schedule`), images scaled to [-1, 1] as in training,
  conditioned on `labels`, averaged over `timesteps` (default `default_timesteps(spec)`).
  The noise is fixed: example i's draws depend only on `seed` and i, so members and
  non-members, and two calls, see the same noise."""
  ts = np.asarray(default_timesteps(spec) if timesteps is None else timesteps, np.int32)
  if ts.ndim != 1 or not len(ts) or ts.min() < 0 or ts.max() >= spec.diffusion_steps:
    raise ValueError(f"Timesteps must be a non-empty list in [0, {spec.diffusion_steps}), "
                     f"got {timesteps}.")
  images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32).reshape(-1)
  if images.shape[1:] != spec.image_shape:
    raise ValueError(f"Images of shape {images.shape[1:]} for a DDPM of {spec.image_shape}.")
  if len(labels) != len(images):
    raise ValueError(f"{len(images)} images but {len(labels)} labels.")
  fn, key = _denoising_loss_fn(spec, conv_impl), jax.random.key(seed)
  index = np.arange(len(images), dtype=np.int32)
  return _batched(lambda x, y, i: fn(params, x, y, i, jnp.asarray(ts), key),
                  [images, labels, index],
                  batch_size).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _denoising_loss_fn(spec, conv_impl: str):
  """The jitted per-example denoising loss of one DDPM at K timesteps: each example's noise
  is `normal(fold_in(key, index), [K, ...])`; one UNet call takes all K noisings."""
  unet, schedule = spec.unet(conv_impl), spec.schedule()

  @jax.jit
  def batch_loss(params, x, y, index, ts, key):
    b, k = x.shape[0], ts.shape[0]
    noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i),
                                                 (k, *x.shape[1:])))(index)
    noise = jnp.swapaxes(noise, 0, 1).reshape(k * b, *x.shape[1:])   # [K*B, ...], t-major
    x0 = jnp.tile(x * 2.0 - 1.0, (k,) + (1,) * (x.ndim - 1))
    t = jnp.repeat(ts, b)
    x_t = core.add_noise(schedule, x0, t, noise)
    err = jnp.square(unet.apply({"params": params}, x_t, t, jnp.tile(y, k)) - noise)
    return err.reshape(k, b, -1).mean(axis=(0, 2))
  return batch_loss


def _subsample(x, y, max_examples: int | None, rng):
  if max_examples is None or len(y) <= max_examples:
    return np.asarray(x), np.asarray(y)
  idx = np.sort(rng.choice(len(y), int(max_examples), replace=False))
  return np.asarray(x)[idx], np.asarray(y)[idx]


def audit_classifier(apply_fn: Callable, params, x_members, y_members, x_nonmembers,
                     y_nonmembers, *, max_examples: int | None = None, seed: int = 0,
                     batch_size: int = 1000) -> dict:
  """`membership_inference` on the classifier's per-example cross-entropy: members are its
  training examples, non-members examples it never saw. `max_examples` caps each set
  (a seeded draw)."""
  rng = np.random.default_rng(seed)
  xm, ym = _subsample(x_members, y_members, max_examples, rng)
  xn, yn = _subsample(x_nonmembers, y_nonmembers, max_examples, rng)
  return membership_inference(classifier_losses(apply_fn, params, xm, ym, batch_size=batch_size),
                              classifier_losses(apply_fn, params, xn, yn, batch_size=batch_size))


def audit_ddpm(spec, params, x_members, y_members, x_nonmembers, y_nonmembers, *,
               timesteps: Sequence[int] | None = None, max_examples: int | None = None,
               seed: int = 0, batch_size: int = 64, conv_impl: str = "xla") -> dict:
  """`membership_inference` on the DDPM's denoising loss (`ddpm_losses`, the same noise for
  both sets), plus the timesteps used. `max_examples` caps each set (a seeded draw)."""
  rng = np.random.default_rng(seed)
  xm, ym = _subsample(x_members, y_members, max_examples, rng)
  xn, yn = _subsample(x_nonmembers, y_nonmembers, max_examples, rng)
  ts = tuple(default_timesteps(spec) if timesteps is None else timesteps)
  kw = dict(timesteps=ts, seed=seed, batch_size=batch_size, conv_impl=conv_impl)
  out = membership_inference(ddpm_losses(spec, params, xm, ym, **kw),
                             ddpm_losses(spec, params, xn, yn, **kw))
  out["timesteps"] = [int(t) for t in ts]
  return out
