"""experiments/pfedgpa_probe.py on a tiny pFedGPA run."""

import importlib.util
import os
import re

from fedjax_gen import config as config_lib
from fedjax_gen.trainer.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _probe():
  spec = importlib.util.spec_from_file_location(
      "pfedgpa_probe", os.path.join(ROOT, "experiments", "pfedgpa_probe.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_probe_measures_the_runs_aggregation_and_trains_a_denoiser(tmp_path, capsys):
  """With the `identity` ablation each client keeps its upload: the probe's ratio is 0,
  which checks that it pairs clients with their own buffer rows."""
  config = config_lib.apply_overrides(config_lib.load_config("quickstart"), [
      "algorithm=pfedgpa", "num_clients=4", "clients_per_round=4", "rounds=2",
      "local_epochs=1", "eval_every=2", "progress=false", "pfedgpa.aggregation=identity",
      "pfedgpa.buffer=8", "pfedgpa.timesteps=10", "pfedgpa.s=3", "pfedgpa.train_steps=2",
      "pfedgpa.width=8", "pfedgpa.heads=2", "pfedgpa.depth=1"])
  train_and_evaluate(config, str(tmp_path))
  probe = _probe()
  probe.main(["--workdir", str(tmp_path)])
  out = capsys.readouterr().out
  assert float(re.search(r"ratio ([0-9.]+)", out).group(1)) == 0.0
  probe.main(["--workdir", str(tmp_path), "--train", "lowrank", "--norm", "element",
              "--steps", "50", "--width", "8"])
  out = capsys.readouterr().out
  step = re.search(r"step 50: train loss ([0-9.]+), DDPM loss \(fresh noise\) ([0-9.]+)", out)
  assert step and float(step.group(1)) > 0 and float(step.group(2)) > 0
  assert "ddim: |out - upload|" in out and "noise: |out - upload|" in out
