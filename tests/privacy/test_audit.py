"""The privacy audit: nearest-neighbour memorisation of generated images and loss-threshold
membership inference, by hand on tiny arrays, and end to end on generators that copy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_gen.diffusion.ddpm import DDPMSpec, training_loss
from fedjax_gen.diffusion.quality import train_reference_classifier
from fedjax_gen.privacy import audit
from fedjax_gen.types import Batch

CLASSES, SHAPE, NOISE = 3, (8, 8, 1), 0.15


def _means():
  return np.random.default_rng(123).uniform(0.2, 0.8, (CLASSES, *SHAPE))


def _draw(labels, rng):
  """Class-clustered Gaussian "images": class c is a fixed random image plus noise."""
  labels = np.asarray(labels)
  x = _means()[labels] + NOISE * rng.standard_normal((len(labels), *SHAPE))
  return np.clip(x, 0, 1).astype(np.float32)


def _dataset(per_class, seed):
  y = np.repeat(np.arange(CLASSES), per_class).astype(np.int32)
  return _draw(y, np.random.default_rng(seed)), y


class PoolGenerator:
  """A "generator" that returns images of the asked class from a fixed pool (a copier)."""
  image_shape, num_classes = SHAPE, CLASSES

  def __init__(self, x, y):
    self.x, self.y = x, y

  def metadata(self):
    return {"kind": "pool"}

  def generate(self, labels, key):
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2 ** 31 - 1)))
    out = np.empty((len(labels), *SHAPE), np.float32)
    for c in np.unique(labels):
      where = np.flatnonzero(labels == c)
      pool = np.flatnonzero(self.y == c)
      out[where] = self.x[rng.choice(pool, len(where), replace=len(where) > len(pool))]
    return out


class FreshGenerator(PoolGenerator):
  """Fresh draws from the data distribution: a generator that learned it, copying nothing."""

  def __init__(self):
    pass

  def generate(self, labels, key):
    return _draw(labels, np.random.default_rng(int(jax.random.randint(key, (), 0, 10 ** 6))))


@pytest.fixture(scope="module")
def data():
  x_train, y_train = _dataset(100, seed=1)
  x_heldout, y_heldout = _dataset(100, seed=2)
  x_test, y_test = _dataset(30, seed=3)
  classifier = train_reference_classifier(x_train, y_train, x_test, y_test, CLASSES,
                                          epochs=3, batch_size=32)
  return x_train, y_train, x_heldout, y_heldout, classifier


# --- nearest distances and memorisation -------------------------------------------------------
def test_nearest_distances_by_hand():
  samples = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [1.0, 1.0]])
  sample_y = np.array([0, 1, 1, 2])
  refs = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [6.0, 8.0], [0.0, 0.0]])
  ref_y = np.array([0, 0, 1, 1, 1])
  # class 0: |(0,0)-(1,0)| = 1; class 1: (3,4) -> (3,0) is 4, (0,0) is 5; (6,8) is a copy;
  # class 2 has no reference.
  np.testing.assert_array_equal(audit.nearest_distances(samples, sample_y, refs, ref_y),
                                [1.0, 4.0, 0.0, np.inf])


def test_nearest_distances_in_blocks_match_brute_force(monkeypatch):
  rng = np.random.default_rng(0)
  s, r = rng.standard_normal((50, 2, 3)), rng.standard_normal((40, 2, 3))
  sy, ry = rng.integers(0, 2, 50), rng.integers(0, 2, 40)
  d = np.linalg.norm(s.reshape(50, 1, -1) - r.reshape(1, 40, -1), axis=-1)
  expected = np.where(sy[:, None] == ry[None, :], d, np.inf).min(1)
  monkeypatch.setattr(audit, "_BLOCK_ENTRIES", 7)  # a few samples per block
  np.testing.assert_allclose(audit.nearest_distances(s, sy, r, ry), expected, rtol=1e-12)


def _feature_clusters(per_class, seed):
  y = np.repeat(np.arange(CLASSES), per_class)
  return np.random.default_rng(seed).standard_normal((len(y), 16)) + 3.0 * y[:, None], y


def test_memorisation_tells_copies_from_fresh_samples():
  train, y_train = _feature_clusters(200, 0)
  heldout, y_heldout = _feature_clusters(200, 1)
  fresh, y_fresh = _feature_clusters(200, 2)
  copies = audit.memorisation(train, y_train, train, y_train, heldout, y_heldout)
  assert copies["share_closer_to_train"] == 1.0
  assert copies["ratio_q95"] == 0.0 and copies["d_train_median"] == 0.0
  assert (copies["samples"], copies["train_refs"], copies["heldout_refs"]) == (600, 600, 600)
  leaked = audit.memorisation(heldout, y_heldout, train, y_train, heldout, y_heldout)
  assert leaked["share_closer_to_train"] == 0.0
  assert leaked["ratio_q05"] == audit.RATIO_CAP  # d_heldout = 0: capped, still finite
  honest = audit.memorisation(fresh, y_fresh, train, y_train, heldout, y_heldout)
  assert 0.4 < honest["share_closer_to_train"] < 0.6, honest
  assert 0.8 < honest["ratio_q50"] < 1.25, honest
  assert all(np.isfinite(v) for v in honest.values())


def test_memorisation_refuses_a_class_without_references():
  feats, y = _feature_clusters(5, 0)
  with pytest.raises(ValueError, match="no training or no held-out reference"):
    audit.memorisation(feats, y, feats[y < 2], y[y < 2], feats, y)


def test_audit_generator_flags_a_generator_that_returns_training_images(data):
  """The done-when test, in the reference classifier's feature space (CAS's and Frechet's)."""
  x_train, y_train, x_heldout, y_heldout, classifier = data
  kw = dict(samples_per_class=60, seed=0)
  copier = audit.audit_generator(PoolGenerator(x_train, y_train), classifier, x_train, y_train,
                                 x_heldout, y_heldout, **kw)
  assert copier["share_closer_to_train"] == 1.0 and copier["near_copy_share"] == 1.0
  assert (copier["samples"], copier["classes"], copier["samples_per_class"]) == (180, 3, 60)
  leaker = audit.audit_generator(PoolGenerator(x_heldout, y_heldout), classifier, x_train,
                                 y_train, x_heldout, y_heldout, **kw)
  assert leaker["share_closer_to_train"] == 0.0 and leaker["near_copy_share"] < 0.05
  fresh = audit.audit_generator(FreshGenerator(), classifier, x_train, y_train, x_heldout,
                                y_heldout, **kw)
  assert 0.35 < fresh["share_closer_to_train"] < 0.65, fresh
  assert fresh["near_copy_share"] < 0.1, fresh
  assert all(isinstance(v, (int, float)) for v in fresh.values())


def test_a_larger_training_set_is_subsampled_and_copies_are_still_found(data):
  """Train 3x the held-out set: the memorisation share compares equal-size references (a
  copier's copies mostly fall outside the subsample), `near_copy_share` the whole set."""
  _, _, x_heldout, y_heldout, classifier = data
  x_train, y_train = _dataset(300, seed=4)
  copier = audit.audit_generator(PoolGenerator(x_train, y_train), classifier, x_train, y_train,
                                 x_heldout, y_heldout, samples_per_class=60, seed=0)
  assert copier["train_refs"] == copier["heldout_refs"] == 300
  assert 0.5 < copier["share_closer_to_train"] < 1.0
  assert copier["near_copy_share"] == 1.0
  fresh = audit.audit_generator(FreshGenerator(), classifier, x_train, y_train, x_heldout,
                                y_heldout, samples_per_class=60, seed=0)
  assert 0.35 < fresh["share_closer_to_train"] < 0.65 and fresh["near_copy_share"] < 0.1, fresh


# --- membership inference ---------------------------------------------------------------------
def test_membership_inference_by_hand():
  separated = audit.membership_inference([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
  assert separated == {"auc": 1.0, "tpr_at_1pct_fpr": 1.0, "advantage": 1.0, "members": 3,
                       "nonmembers": 3}
  same = audit.membership_inference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
  assert same["auc"] == 0.5 and same["tpr_at_1pct_fpr"] == 0.0
  # pairs (member, non-member) won: (1,2), (1,4), (3,4) of 4; one member below every loss
  mixed = audit.membership_inference([1.0, 3.0], [2.0, 4.0])
  assert (mixed["auc"], mixed["tpr_at_1pct_fpr"], mixed["advantage"]) == (0.75, 0.5, 0.5)
  tied = audit.membership_inference([1.0, 2.0], [2.0, 3.0])  # the tie (2, 2) counts half
  assert tied["auc"] == 0.875
  inverted = audit.membership_inference([0.4, 0.5], [0.1, 0.2])  # members' loss higher
  assert inverted["auc"] == 0.0 and inverted["tpr_at_1pct_fpr"] == 0.0


def test_tpr_at_one_percent_fpr_allows_one_false_positive_in_a_hundred():
  members = np.arange(50) + 0.5                   # 50 members, losses 0.5 ... 49.5
  nonmembers = np.concatenate([[0.0], 100.0 + np.arange(99)])  # one non-member below all
  out = audit.membership_inference(members, nonmembers)
  assert out["tpr_at_1pct_fpr"] == 1.0            # accusing that one is FPR 1/100
  assert audit.membership_inference(members, nonmembers[:50])["tpr_at_1pct_fpr"] == 0.0


def test_membership_inference_refuses_empty_or_nan_scores():
  with pytest.raises(ValueError, match="needs members and non-members"):
    audit.membership_inference([], [1.0])
  with pytest.raises(ValueError, match="finite"):
    audit.membership_inference([np.nan], [1.0])


def _linear_apply(params, x):
  return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def test_classifier_losses_match_optax_per_example_cross_entropy():
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.standard_normal((12, 4)), jnp.float32),
            "b": jnp.asarray(rng.standard_normal(4), jnp.float32)}
  x = rng.standard_normal((11, 3, 4)).astype(np.float32)
  y = rng.integers(0, 4, 11)
  expected = optax.softmax_cross_entropy_with_integer_labels(_linear_apply(params, x), y)
  got = audit.classifier_losses(_linear_apply, params, x, y, batch_size=4)  # a padded tail
  assert got.shape == (11,)
  chex.assert_trees_all_close(got, np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_audit_classifier_catches_a_memorising_classifier():
  """A linear model fitted to random labels of 40 points in 64 dimensions memorises them."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((80, 64)).astype(np.float32)
  y = rng.integers(0, 4, 80).astype(np.int32)
  params = {"w": jnp.zeros((64, 4)), "b": jnp.zeros(4)}
  untrained = audit.audit_classifier(_linear_apply, params, x[:40], y[:40], x[40:], y[40:])
  assert untrained["auc"] == 0.5  # all losses log(4)
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
      _linear_apply(p, x[:40]), y[:40]).mean()
  step = jax.jit(lambda p: jax.tree.map(lambda a, g: a - 0.5 * g, p, jax.grad(loss)(p)))
  for _ in range(100):
    params = step(params)
  out = audit.audit_classifier(_linear_apply, params, x[:40], y[:40], x[40:], y[40:])
  assert out["auc"] == 1.0 and out["tpr_at_1pct_fpr"] == 1.0
  assert (out["members"], out["nonmembers"]) == (40, 40)
  capped = audit.audit_classifier(_linear_apply, params, x[:40], y[:40], x[40:], y[40:],
                                  max_examples=10)
  assert (capped["members"], capped["nonmembers"]) == (10, 10)


# --- the DDPM's denoising loss ----------------------------------------------------------------
SPEC = DDPMSpec(SHAPE, num_classes=CLASSES, channels=(8, 8), diffusion_steps=50)


def test_default_timesteps_are_early_distinct_steps():
  assert audit.default_timesteps(SPEC) == (2, 5, 10, 15)
  assert audit.default_timesteps(DDPMSpec(SHAPE, CLASSES, channels=(8, 8),
                                          diffusion_steps=1000)) == (50, 100, 200, 300)


@pytest.fixture(scope="module")
def ddpm_params():
  return SPEC.init_params(jax.random.key(0))


def _ddpm_data():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(16, *SHAPE)).astype(np.float32)
  return x, rng.integers(0, CLASSES, 16).astype(np.int32)


def test_ddpm_losses_are_fixed_per_example_and_seed(ddpm_params):
  """Deterministic for a seed, and example i's noise is its own: the same loss in a set of
  12 (its tail batch padded) as in a set of 16. Every call has batches of 8: one compile."""
  x, y = _ddpm_data()
  params = ddpm_params
  losses = audit.ddpm_losses(SPEC, params, x, y, seed=0, batch_size=8)
  assert losses.shape == (16,) and losses.dtype == np.float32 and np.isfinite(losses).all()
  np.testing.assert_array_equal(losses, audit.ddpm_losses(SPEC, params, x, y, seed=0,
                                                          batch_size=8))
  chex.assert_trees_all_close(audit.ddpm_losses(SPEC, params, x[:12], y[:12], batch_size=8),
                              losses[:12], rtol=1e-5)
  assert not np.allclose(losses, audit.ddpm_losses(SPEC, params, x, y, seed=1, batch_size=8))
  with pytest.raises(ValueError, match="Timesteps"):
    audit.ddpm_losses(SPEC, params, x, y, timesteps=(50,))


def test_a_ddpm_fitted_to_eight_images_gives_them_away(ddpm_params):
  """After a short overfit (300 Adam steps) on 8 noise images, their denoising loss at the
  default timesteps lies below that of 8 others."""
  x, y = _ddpm_data()
  params = ddpm_params
  loss_fn, opt = training_loss(SPEC, cond_drop_prob=0.0), optax.adam(3e-3)
  members = Batch(jnp.asarray(x[:8]), jnp.asarray(y[:8]), jnp.ones(8, bool))

  @jax.jit
  def step(params, opt_state, key):
    grads = jax.grad(loss_fn)(params, members._replace(key=key))
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = opt.init(params)
  for i in range(300):
    params, opt_state = step(params, opt_state, jax.random.key(i))
  out = audit.audit_ddpm(SPEC, params, x[:8], y[:8], x[8:], y[8:], seed=0, batch_size=8)
  assert out["auc"] > 0.8, out
  assert out["timesteps"] == [2, 5, 10, 15] and (out["members"], out["nonmembers"]) == (8, 8)
