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
  with pytest.raises(ValueError, match="Unknown config key 'alpah'; top-level keys: .*alpha"):
    cfg("alpah=0.1")
  with pytest.raises(ValueError, match="rounds='many': expected a number"):
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
