"""`fedjax-gen run` end to end with gen_fedsd / genfl / aigc_only on digits and a tiny random
DDPM, and the config errors of generative augmentation (all before any generation)."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from fedjax_gen import config as config_lib
from fedjax_gen.cli import main
from fedjax_gen.diffusion.ddpm import DDPMGenerator, DDPMSpec, record_quality
from fedjax_gen.diffusion.generator import cached_generation_s
from fedjax_gen.trainer.generation import MIN_CAS_WITH_GAIN, MIN_SKEW_WITH_GAIN

TINY = ["dataset=digits", "model=mlp", "num_clients=4", "clients_per_round=4", "rounds=2",
        "local_epochs=1", "batch_size=32", "eval_every=1", "checkpoint_every=0",
        "progress=false", "alpha=1.0", "genaug.sample_steps=2",
        "genaug.batch_size=64"]


def save_ddpm(folder, num_classes):
  """A random-weights DDPM saved like a trained one. The weights are drawn from the
  shapes `init_params` would give (`eval_shape`: no UNet init compile, ~20 s on CPU)."""
  spec = DDPMSpec((8, 8, 1), num_classes=num_classes, channels=(4,), diffusion_steps=50)
  shapes, tree = jax.tree.flatten(jax.eval_shape(spec.init_params, jax.random.key(0)))
  rng = np.random.default_rng(0)
  params = jax.tree.unflatten(tree, [0.1 * rng.standard_normal(a.shape).astype(a.dtype)
                                     for a in shapes])
  DDPMGenerator(spec, params, sample_steps=2, batch_size=8).save(str(folder))
  return str(folder)


@pytest.fixture(scope="module")
def ddpm_dir(tmp_path_factory):
  return save_ddpm(tmp_path_factory.mktemp("ddpm10"), 10)


def run(workdir, *overrides):
  return main(["run", "quickstart", *TINY, *overrides, "--workdir", str(workdir)])


def summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def test_gen_fedsd_end_to_end(tmp_path, ddpm_dir, capsys):
  workdir = tmp_path / "fedsd"
  assert run(workdir, "algorithm=gen_fedsd", f"genaug.generator_dir={ddpm_dir}", "genaug.fill_rule=budget",
             "genaug.fill_budget=16") == 0
  s = summary(workdir)
  assert s["algorithm"] == "gen_fedsd" and s["synthetic_examples"] == 64
  assert s["synthetic_examples_per_client"] == [16, 16, 16, 16]
  assert s["generation_s"] >= 0 and s["generator"]["kind"] == "ddpm"
  assert s["genaug_guard"]["generator_cas"] is None  # never judged: the guard cannot tell
  assert not s["genaug_guard"]["below"]
  # Dir(1.0) over 4 clients is a mild split: the guard names its skew, below the line.
  skew = s["genaug_guard"]["label_skew"]
  assert 0 < skew < MIN_SKEW_WITH_GAIN and s["genaug_guard"]["mild_split"]
  assert (f"the clients' label skew is {skew:.2f} (mean total variation from the pooled "
          f"labels") in capsys.readouterr().err
  assert 0 <= s["global_accuracy"] <= 1
  assert (workdir / "generated" / "gen_fedsd.npz").exists()
  assert (workdir / "label_counts_augmented.png").exists()


def test_genfl_and_aigc_only_end_to_end(tmp_path, ddpm_dir, capsys):
  cache = tmp_path / "cache"
  common = [f"genaug.generator_dir={ddpm_dir}", "genfl.synthetic_per_class=4", "genfl.share=0.5",
            "genfl.server_steps=3", f"genaug.cache_dir={cache}"]
  assert run(tmp_path / "genfl", "algorithm=genfl", "genfl.generator_on=clients",
             *common) == 0
  s = summary(tmp_path / "genfl")
  assert s["synthetic_examples_per_client"] == [20, 20, 20, 20]  # half of 10 x 4
  assert s["synthetic_examples"] == 80 and s["server_synthetic_examples"] == 40
  assert "80 synthetic examples added to clients (per client: [20, 20, 20, 20])" in \
      capsys.readouterr().out
  assert {"genfl_server.npz", "genfl_clients.npz"} <= set(os.listdir(cache))
  server_s = cached_generation_s(str(cache), ["genfl_server"])
  assert server_s > 0 and s["generation_s"] == pytest.approx(
      server_s + cached_generation_s(str(cache), ["genfl_clients"]))
  assert run(tmp_path / "aigc", "algorithm=aigc_only", *common) == 0
  s = summary(tmp_path / "aigc")
  assert s["synthetic_examples"] == 0 and s["server_synthetic_examples"] == 40
  assert s["genaug_guard"]["label_skew"] is None  # synthetic data alone: no split to judge
  # It loads GenFL's server set from the shared cache: the cost reported is the cost of
  # making that set, not of loading it.
  assert s["generation_s"] == pytest.approx(server_s)
  assert 0 <= s["global_accuracy"] <= 1


@pytest.mark.parametrize("overrides, message", [
    (["algorithm=genfl"], "needs a trained generator: train one with `fedjax-gen run "
     "ddpm_fmnist --workdir W` and pass genaug.generator_dir=W/generator"),
    (["algorithm=genfl", "genaug.generator_dir=/nonexistent/gen"], "holds no trained DDPM"),
    (["genaug.fill_budget=-1"], "genaug.fill_budget must be >= 0"),
    (["algorithm=gen_fedsd", "genaug.fill_rule=budget"], "genaug.fill_budget=0 generates nothing"),
    (["genaug.fill_rule=mode"], "Unknown genaug.fill_rule 'mode'; valid rules: max, budget, global"),
    (["genfl.share=1.5"], r"genfl.share must be in \[0, 1\]"),
    (["genfl.share=-0.5"], r"genfl.share must be in \[0, 1\]"),
    (["genfl.lam_policy=linear"], "Unknown genfl.lam_policy 'linear'; valid policies: "
     "constant, exp, cos, adaptive"),
    (["genfl.generator_on=cloud"], "Unknown genfl.generator_on 'cloud'"),
    (["genfl.skew_weight=1"], r"genfl.skew_weight must be in \[0, 1\)"),
    (["genaug.base_algorithm=genfl"], "Unknown genaug.base_algorithm 'genfl'"),
    (["genaug.generator=gan"], "Unknown genaug.generator 'gan'; valid names: ddpm, sd"),
    (["algorithm=aigc_only", "genfl.server_steps=0"], "genfl.server_steps must be >= 1"),
])
def test_config_errors(overrides, message):
  config = config_lib.apply_overrides(config_lib.load_config("quickstart"), overrides)
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    config_lib.validate(config)


def test_cli_reports_errors_before_generating(tmp_path, capsys):
  workdir = tmp_path / "w"
  assert run(workdir, "algorithm=genfl", "genfl.share=2") == 2
  assert "genfl.share must be in [0, 1]" in capsys.readouterr().err
  assert not workdir.exists()  # checked before the work folder, data or generator
  # A generator for 3 classes on a 10-class dataset: refused before generating.
  three = save_ddpm(tmp_path / "ddpm3", 3)
  assert run(workdir, "algorithm=gen_fedsd", f"genaug.generator_dir={three}") == 2
  assert "knows 3 classes but the dataset has 10" in capsys.readouterr().err
  assert not (workdir / "generated").exists()


def test_genaug_configs_validate():
  for name in ("genaug_fmnist", "genaug_cifar10"):
    config = config_lib.load_config(name)
    config_lib.validate(config)  # algorithm=fedavg by default: no generator needed
  fmnist = config_lib.load_config("genaug_fmnist")
  assert fmnist.genaug.generator_dir == "experiments/runs/ddpm_fmnist/federated/generator"
  assert (fmnist.num_clients, fmnist.local_epochs, fmnist.batch_size, fmnist.model) == \
      (10, 10, 64, "simple_cnn")
  cifar = config_lib.load_config("genaug_cifar10")
  assert (cifar.genaug.generator, cifar.model, cifar.genaug.sd_revision) == \
      ("sd", "resnet18", "flax")


def test_work_folders_of_runs_before_these_keys_still_resume(tmp_path):
  """A config.json of an earlier version (flat keys, written before the generative keys
  existed) matches a config that leaves them at their defaults (so runs in progress can
  resume), and only then."""
  from fedjax_gen.trainer.options import RENAMED, flatten
  from fedjax_gen.trainer.workdir import open_run

  def claim(config, workdir):
    with open_run(config, workdir) as run:
      run.commit()

  config = config_lib.apply_overrides(config_lib.load_config("quickstart"),
                                      ["algorithm=genfl"])  # reads genfl.*
  old_name = {new: old for old, new in RENAMED.items()}
  saved = {old_name.get(k, k): v for k, v in flatten(json.loads(config.to_json())).items()
           if not k.startswith(("genaug.", "genfl."))}
  assert "test_fraction" in saved and "data.test_fraction" not in saved  # the flat form
  with open(tmp_path / "config.json", "w") as f:
    json.dump(saved, f)
  claim(config, str(tmp_path))
  with open(tmp_path / "config.json", "w") as f:
    json.dump(saved, f)
  changed = config_lib.apply_overrides(config, ["genfl.share=0.7"])
  with pytest.raises(ValueError, match="genfl.share: None -> 0.7"):
    claim(changed, str(tmp_path))


def test_a_generator_below_the_measured_cas_line_is_named_before_training(tmp_path, ddpm_dir,
                                                                           capsys):
  weak = tmp_path / "weak"
  shutil.copytree(ddpm_dir, weak)
  record_quality(str(weak), {"cas": 0.12, "guidance_scale": 2.0, "sample_steps": 25})
  # One class per client: a strong split (4 digit classes of ~180 images each, so each
  # client is ~3/4 from the pooled labels), the skew line is not crossed.
  assert run(tmp_path / "run", "algorithm=gen_fedsd", f"genaug.generator_dir={weak}",
             "genaug.fill_rule=budget", "genaug.fill_budget=4", "partition=label_k",
             "classes_per_client=1") == 0
  err = capsys.readouterr().err
  assert (f"the generator's CAS is 0.12 (judged at guidance 2.0, 25 steps), below "
          f"{MIN_CAS_WITH_GAIN}, the lowest CAS at which Gen-FedSD gained") in err
  assert "label skew" not in err
  guard = summary(tmp_path / "run")["genaug_guard"]
  assert guard.pop("label_skew") == pytest.approx(0.75, abs=0.02)
  assert guard == {"generator_cas": 0.12, "min_cas_with_gain": MIN_CAS_WITH_GAIN,
                   "below": True, "min_skew_with_gain": MIN_SKEW_WITH_GAIN,
                   "mild_split": False}
