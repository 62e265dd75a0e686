"""The image DDPM: its loss in the engine, its generator, save/load, the generated-set cache,
and the `ddpm_fmnist` run end to end on a tiny budget."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_gen import config as config_lib
from fedjax_gen.algorithms import fedavg
from fedjax_gen.algorithms.base import Batch
from fedjax_gen.data.federated import ClientArrays
from fedjax_gen.diffusion import generator as gen_lib
from fedjax_gen.diffusion.ddpm import DDPMGenerator, DDPMSpec, load_ddpm, training_loss
from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation

SPEC = DDPMSpec((8, 8, 1), num_classes=3, channels=(8, 8), diffusion_steps=50)


@pytest.fixture(scope="module")
def params():
  return SPEC.init_params(jax.random.key(0))


def _toy_clients(num_clients=2, n=24):
  """Class c is a constant image of brightness (c + 1) / 4."""
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, (num_clients, n)).astype(np.int32)
  x = np.broadcast_to(((y + 1) / 4.0)[..., None, None, None], (num_clients, n, 8, 8, 1))
  x = (x + 0.02 * rng.standard_normal(x.shape)).astype(np.float32)
  return ClientArrays(x, y, np.full(num_clients, n, np.int32))


def test_loss_draws_its_noise_from_the_batch_key(params):
  loss_fn = training_loss(SPEC, conv_impl="xla")
  data = _toy_clients(1)
  batch = lambda k: Batch(jnp.asarray(data.x[0, :8]), jnp.asarray(data.y[0, :8]),
                          jnp.ones(8, bool), key=jax.random.key(k))
  assert float(loss_fn(params, batch(1))) == float(loss_fn(params, batch(1)))
  assert float(loss_fn(params, batch(1))) != float(loss_fn(params, batch(2)))


def test_federated_ddpm_training_through_the_engine_lowers_the_loss(params):
  alg = fedavg(training_loss(SPEC), optax.adam(3e-3))
  sim = Simulation(alg, _toy_clients(), LocalSchedule(8, 1, 8), clients_per_round=2,
                   plan=ExecutionPlan(1, 0))
  server, states = sim.init(params)
  losses = []
  for r in range(5):
    server, states, m = sim.round(server, states, jax.random.key(r))
    losses.append(float(m.train_loss))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-2:]) < 0.7 * losses[0], losses


def test_generator_shapes_padding_determinism_and_save_load(params, tmp_path):
  g = DDPMGenerator(SPEC, params, sample_steps=3, guidance_scale=2.0, batch_size=2)
  assert isinstance(g, gen_lib.Generator)
  labels = np.array([0, 1, 2, 1, 0])
  a = g.generate(labels, jax.random.key(0))
  assert a.shape == (5, 8, 8, 1) and a.dtype == np.float32
  assert a.min() >= 0 and a.max() <= 1
  np.testing.assert_array_equal(a, g.generate(labels, jax.random.key(0)))
  assert not np.array_equal(a, g.generate(labels, jax.random.key(1)))
  g.save(str(tmp_path / "gen"))
  spec, loaded = load_ddpm(str(tmp_path / "gen"))
  assert spec == SPEC
  g2 = DDPMGenerator.load(str(tmp_path / "gen"), sample_steps=3, guidance_scale=2.0,
                          batch_size=2)
  assert g2.metadata()["params_sha1"] == g.metadata()["params_sha1"]
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  ddpm = DDPMGenerator(SPEC, params, sampler="ddpm", batch_size=4)
  assert ddpm.generate(labels[:3], jax.random.key(0)).shape == (3, 8, 8, 1)


class Counting:
  """Wraps a generator, counting calls (to see the cache being used)."""

  def __init__(self, inner, tag="a"):
    self.inner, self.tag, self.calls = inner, tag, 0
    self.image_shape, self.num_classes = inner.image_shape, inner.num_classes

  def metadata(self):
    return {**self.inner.metadata(), "tag": self.tag}

  def generate(self, labels, key):
    self.calls += 1
    return self.inner.generate(labels, key)


def test_cache_reuses_matching_sets_and_refuses_another_generators_folder(params, tmp_path):
  g = Counting(DDPMGenerator(SPEC, params, sample_steps=2, batch_size=4))
  labels = np.array([0, 0, 2])
  first = gen_lib.generate_cached(g, labels, 7, str(tmp_path))
  again = gen_lib.generate_cached(g, labels, 7, str(tmp_path))
  assert g.calls == 1
  np.testing.assert_array_equal(first, again)
  meta = json.loads((tmp_path / "generated.json").read_text())
  assert meta["seed"] == 7 and meta["counts"] == "2-0-1"
  gen_lib.generate_cached(g, labels, 8, str(tmp_path))  # another seed: regenerated
  assert g.calls == 2
  other = Counting(g.inner, tag="b")
  with pytest.raises(ValueError, match="holds images of another generator"):
    gen_lib.generate_cached(other, labels, 7, str(tmp_path))
  with pytest.raises(ValueError, match="Labels must lie in"):
    gen_lib.generate_cached(g, np.array([3]), 7, str(tmp_path))


def test_compatibility_checks_and_format_conversion():
  g = DDPMGenerator(SPEC, SPEC.init_params(jax.random.key(1)), batch_size=2)
  gen_lib.check_compatible(g, (8, 8, 1), 3)
  with pytest.raises(ValueError, match="image"):
    gen_lib.check_compatible(g, (28, 28, 1), 3)
  with pytest.raises(ValueError, match="classes"):
    gen_lib.check_compatible(g, (8, 8, 1), 10)
  rgb = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
  grey = gen_lib.to_dataset_format(rgb, (28, 28, 1))
  assert grey.shape == (2, 28, 28, 1) and 0 <= grey.min() and grey.max() <= 1
  assert gen_lib.to_dataset_format(grey, (32, 32, 3)).shape == (2, 32, 32, 3)


def test_bad_ddpm_inputs_are_clear_errors(params):
  with pytest.raises(ValueError, match="divisible by 8"):
    DDPMSpec((28, 28, 1), 10, channels=(8, 8, 8, 8))
  with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
    DDPMGenerator(SPEC, params, guidance_scale=-1.0)
  base = config_lib.load_config("ddpm_fmnist")
  for override, match in (("ddpm.unet_channels=8,8,8,8", "divisible by 8"),
                          ("ddpm.unet_channels=a,b", "comma-separated integers"),
                          ("ddpm.guidance_scale=-2", "guidance_scale"),
                          ("ddpm.eval_guidance_scales=1,-1", "eval_guidance_scales must be >= 0"),
                          ("ddpm.eval_guidance_scales=1,x", "comma-separated numbers"),
                          ("ddpm.sample_steps=5000", "sample_steps"),
                          ("ddpm.noise_schedule=quad", "noise_schedule"),
                          ("algorithm=scaffold", "algorithm=fedavg")):
    with pytest.raises(ValueError, match=match):
      config_lib.validate(config_lib.apply_overrides(base, [override]))


def test_a_dp_ddpm_states_its_guarantee_to_the_runs_that_use_it(tmp_path):
  """Trained with client-level DP, the generator carries its (epsilon, delta) in
  generator.json, and a generator loaded from it reports it in its metadata."""
  from fedjax_gen.cli import main
  from fedjax_gen.diffusion.ddpm import DDPMGenerator
  workdir = str(tmp_path / "run")
  overrides = ["dataset=digits", "rounds=2", "local_steps=2", "num_clients=3",
               "clients_per_round=2", "ddpm.unet_channels=8,8",
               "ddpm.eval_samples_per_class=2", "ddpm.sample_batch_size=20",
               "ddpm.sample_steps=2", "ddpm.classifier_epochs=1", "progress=false",
               "ddpm.audit_examples=10", "dp.enabled=true", "dp.noise_multiplier=1.0",
               "dp.delta=0.1"]
  assert main(["run", "ddpm_fmnist", *overrides, "--workdir", workdir]) == 0
  summary = json.loads(open(os.path.join(workdir, "summary.json")).read())
  p = summary["privacy"]
  assert (p["population"], p["cohort"], p["rounds"], p["noise_multiplier"]) == (3, 2, 2, 1.0)
  assert np.isfinite(p["epsilon"]) and p["epsilon"] > 0
  assert DDPMGenerator.load(os.path.join(workdir, "generator")).metadata()["privacy"] == p


def test_ddpm_fmnist_runs_end_to_end_on_a_tiny_budget(tmp_path, capsys):
  from fedjax_gen.cli import main
  workdir = str(tmp_path / "run")
  overrides = ["dataset=digits", "rounds=2", "local_steps=2", "num_clients=3",
               "clients_per_round=2",
               "ddpm.unet_channels=8,8", "ddpm.eval_samples_per_class=2", "ddpm.sample_batch_size=20",
               "ddpm.sample_steps=2", "ddpm.classifier_epochs=1", "checkpoint_every=1", "progress=false",
               "ddpm.eval_guidance_scales=", "ddpm.audit_examples=20"]
  assert main(["run", "ddpm_fmnist", *overrides, "--workdir", workdir]) == 0
  summary = json.loads(open(os.path.join(workdir, "summary.json")).read())
  audit = summary["audit"]  # what the generator leaks, written by every DDPM run
  assert 0 <= audit["memorisation"]["share_closer_to_train"] <= 1
  assert audit["membership"]["members"] == audit["membership"]["nonmembers"] == 20
  assert 0 <= audit["membership"]["auc"] <= 1
  for key in ("cas", "frechet_distance", "train_wall_time_s", "sample_images_per_s"):
    assert summary[key] is not None and np.isfinite(summary[key]), key
  assert 0 <= summary["cas"] <= 1 and summary["classifier_test_accuracy"] > 0.5
  for name in ("samples.png", "loss.png", "generator/generator.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert summary["guidance_sweep"] == []
  # A finished run re-run resumes (nothing to train) and reproduces its generator; other
  # sampling settings only re-judge it: CAS at each guidance scale of the sweep.
  before = json.load(open(os.path.join(workdir, "generator/generator.json")))["params_sha1"]
  resample = ["ddpm.guidance_scale=1", "ddpm.eval_guidance_scales=0,1"]
  assert main(["run", "ddpm_fmnist", *overrides, *resample, "--workdir", workdir]) == 0
  after = json.load(open(os.path.join(workdir, "generator/generator.json")))["params_sha1"]
  assert before == after
  summary = json.loads(open(os.path.join(workdir, "summary.json")).read())
  assert [row["guidance_scale"] for row in summary["guidance_sweep"]] == [0.0, 1.0]
  assert summary["guidance_sweep"][1]["cas"] == summary["cas"]  # the same samples
  assert summary["generator"]["guidance_scale"] == 1.0
  assert os.path.exists(os.path.join(workdir, "guidance.png"))
  capsys.readouterr()
  assert main(["run", "ddpm_fmnist", *overrides, "lr=0.5", "--workdir", workdir]) != 0
  assert "different config (lr: 0.002 -> 0.5)" in capsys.readouterr().err  # training key
