"""Every bad input fails with a message saying what was wrong, before any training."""

import pytest

from fedjax_gen import config as config_lib
from fedjax_gen.cli import main


def cfg(*overrides):
  return config_lib.apply_overrides(config_lib.load_config("quickstart"), list(overrides))


@pytest.mark.parametrize("overrides, message", [
    (["alpha=0"], "alpha must be > 0"),
    (["alpha=-1", "partition=quantity"], "alpha must be > 0"),
    (["partition=label_k", "classes_per_client=11"], r"classes_per_client=11 is outside \[1, 10\]"),
    (["clients_per_round=30"], "clients_per_round=30 exceeds num_clients=20"),
    (["dataset=imagenet"], "Unknown dataset 'imagenet'; valid names: digits, fashion_mnist"),
    (["partition=patho"], "Unknown partition 'patho'; valid names: iid, dirichlet"),
    (["model=vit"], "Unknown model 'vit'; valid names: mlp, simple_cnn, cnn4, resnet18"),
    (["algorithm=fedsgd"], "Unknown algorithm 'fedsgd'; valid names: fedavg, fedprox"),
    (["batch_size=0"], "batch_size must be > 0"),
    (["rounds=-3"], "rounds must be > 0"),
    (["lr=0"], "lr must be > 0"),
    (["momentum=1"], r"momentum must be in \[0, 1\)"),
    (["data.test_fraction=1.0"], r"test_fraction must be in \[0, 1\)"),
    (["personalized.holdout_clients=1.0"], r"holdout_clients must be a fraction in \[0, 1\)"),
    (["personalized.holdout_clients=-0.1"], r"holdout_clients must be a fraction in \[0, 1\)"),
    (["personalized.holdout_clients=0.6"], "clients_per_round=10 exceeds the 8 clients left to train"),
    (["personalized.finetune_steps=-1"], "finetune_steps must be >= 0"),
    (["personalized.newcomer_steps=-2"], "newcomer_steps must be >= 0"),
    (["run.conv_impl=cudnn"], "Unknown run.conv_impl 'cudnn'"),
])
def test_validate_rejects(overrides, message):
  with pytest.raises(ValueError, match=message):
    config_lib.validate(cfg(*overrides))


def test_overrides_are_typed_and_unknown_keys_listed():
  c = cfg("alpha=0.1", "rounds=3", "algorithm=scaffold", "progress=false")
  assert (c.alpha, c.rounds, c.algorithm, c.progress) == (0.1, 3, "scaffold", False)
  with pytest.raises(ValueError, match="Unknown config key 'alpah'; did you mean alpha\\?"):
    cfg("alpah=0.1")
  with pytest.raises(ValueError, match="rounds='many': expected an integer"):
    cfg("rounds=many")
  with pytest.raises(ValueError, match="is not KEY=VALUE"):
    cfg("rounds")


def test_unknown_experiment_lists_builtins():
  with pytest.raises(ValueError, match="built-in experiments: .*niid_fmnist.*quickstart"):
    config_lib.load_config("quickstrat")


def test_config_file_by_path(tmp_path):
  path = tmp_path / "mine.py"
  path.write_text("from fedjax_gen.config import base_config\n"
                  "def get_config():\n  c = base_config()\n  c.rounds = 7\n  return c\n")
  c = config_lib.load_config(str(path))
  assert c.rounds == 7 and c.experiment == "mine"


def test_cli_list_and_error_exit(capsys, tmp_path):
  assert main(["list"]) == 0
  assert "quickstart" in capsys.readouterr().out
  assert main(["run", "quickstart", "alpha=0", "--workdir", str(tmp_path)]) == 2
  assert "alpha must be > 0" in capsys.readouterr().err


def test_cli_accepts_overrides_after_workdir(tmp_path, capsys):
  assert main(["run", "quickstart", "--workdir", str(tmp_path), "rounds=0"]) == 2
  assert "rounds must be > 0" in capsys.readouterr().err


def test_nested_overrides_and_old_flat_names():
  c = cfg("genfl.lam_policy=exp", "data.test_fraction=0.5", "run.chunk_size=2")
  assert (c.genfl.lam_policy, c.data.test_fraction, c.run.chunk_size) == ("exp", 0.5, 2)
  with pytest.raises(ValueError, match="'genfl_lam_policy' is now 'genfl.lam_policy'"):
    cfg("genfl_lam_policy=exp")
  with pytest.raises(ValueError, match="did you mean genfl.lam0 or genfl.lam_decay or "
                                       "genfl.lam_policy"):
    cfg("genfl.lam=1")
  with pytest.raises(ValueError, match="Unknown config key 'genfl'"):
    cfg("genfl=1")  # a family is not a value


def test_every_key_is_declared_once_with_a_meaning():
  from fedjax_gen.trainer.options import all_options, base_config, flatten
  declared = all_options()
  assert set(flatten(base_config())) == set(declared)
  assert all(o.help and o.role in ("train", "eval", "free", "sample")
             for o in declared.values())


def test_cli_config_prints_the_nested_config_with_meanings(capsys):
  assert main(["config", "quickstart", "genfl.share=0.3"]) == 0
  out = capsys.readouterr().out
  assert "lr = 0.05  # local learning rate" in out
  assert "genfl.share = 0.3  # share of the synthetic set each client receives" in out
  assert "personalized.newcomer_steps = 10  # " in out and "[eval]" in out
  assert main(["config", "quickstart", "genfl.share=2"]) == 2
  assert "genfl.share must be in [0, 1]" in capsys.readouterr().err


def test_old_flat_work_folder_config_reads_back_nested():
  from fedjax_gen.trainer.options import from_saved
  c = from_saved({"lr": 0.2, "data_dir": "/d", "genfl_lam0": 0.7, "pfedgpa_s": 5,
                  "conv_impl": "xla", "sample_steps": 9})
  assert (c.lr, c.data.dir, c.genfl.lam0, c.pfedgpa.s, c.run.conv_impl, c.ddpm.sample_steps) \
      == (0.2, "/d", 0.7, 5, "xla", 9)
