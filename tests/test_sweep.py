"""`fedjax-gen sweep`: every combination a run of its own with a single run's numbers, a
table pooling seeds, resume after SIGKILL, and runs `eval` opens."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fedjax_gen import cli
from fedjax_gen import config as config_lib
from fedjax_gen.sweep import axes
from fedjax_gen.trainer import evaluate_checkpoint
from fedjax_gen.trainer.train import train_and_evaluate

SMALL = ["num_clients=8", "clients_per_round=4", "rounds=2", "progress=false", "alpha=1.0"]


def test_which_values_are_swept():
  base = config_lib.load_config("ddpm_fmnist")
  fixed, swept = axes(base, ["seed=0,1,2", "lr=0.05,0.1", "algorithm=fedavg,fedprox",
                             "ddpm.unet_channels=16,32,32", "rounds=3"])
  assert swept == [("seed", ["0", "1", "2"]), ("lr", ["0.05", "0.1"]),
                   ("algorithm", ["fedavg", "fedprox"])]
  assert fixed == ["ddpm.unet_channels=16,32,32", "rounds=3"]


def test_a_sweep_is_single_runs_and_a_table_of_them(tmp_path, capsys):
  workdir = tmp_path / "sweep"
  assert cli.main(["sweep", "quickstart", *SMALL, "seed=0,1", "lr=0.05,0.1",
                   "--workdir", str(workdir)]) == 0
  out = capsys.readouterr().out
  names = sorted(d for d in os.listdir(workdir) if os.path.isdir(workdir / d))
  assert names == ["seed=0,lr=0.05", "seed=0,lr=0.1", "seed=1,lr=0.05", "seed=1,lr=0.1"]
  single = train_and_evaluate(config_lib.apply_overrides(
      config_lib.load_config("quickstart"), SMALL + ["seed=1", "lr=0.1"]), str(tmp_path / "one"))
  swept = json.loads((workdir / "seed=1,lr=0.1" / "summary.json").read_text())
  assert swept["global_accuracy"] == single["global_accuracy"]
  rows = [line for line in out.splitlines() if line.startswith("| 0.")]
  assert [r.split("|")[1:3] for r in rows] == [[" 0.05 ", " 2 "], [" 0.1 ", " 2 "]]
  assert (workdir / "report.md").read_text().strip() == out.strip()
  assert (workdir / "report.png").read_bytes()[:4] == b"\x89PNG"
  assert evaluate_checkpoint(str(workdir / "seed=1,lr=0.1"))["global_accuracy"] == (
      single["global_accuracy"])


def test_nothing_to_sweep_is_one_line(tmp_path, capsys):
  assert cli.main(["sweep", "quickstart", "seed=3", "--workdir", str(tmp_path)]) == 2
  assert "Nothing to sweep" in capsys.readouterr().err
  assert cli.main(["sweep", "quickstart", "seed=0,-1", "--workdir", str(tmp_path)]) == 2
  assert "seed must be an integer" in capsys.readouterr().err  # checked before any run
  assert not os.listdir(tmp_path)


def test_a_killed_sweep_resumes_to_the_same_runs(tmp_path):
  # The command: six runs side by side in one jitted round, killed after their
  # first checkpoint, resumed, each equal to its single run and open to `eval`.
  cmd = [sys.executable, "-m", "fedjax_gen", "sweep", "quickstart", *SMALL, "rounds=6",
         "checkpoint_every=2", "seed=0,1,2", "lr=0.05,0.1", "--workdir", str(tmp_path / "s")]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  first = tmp_path / "s" / "seed=0,lr=0.05" / "checkpoints" / "2"
  deadline = time.time() + 240
  while time.time() < deadline and not first.exists() and proc.poll() is None:
    time.sleep(0.05)
  assert proc.poll() is None, "the sweep ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  _, err = proc.communicate()
  assert "6 runs side by side in one jitted round" in err
  assert not (tmp_path / "s" / "report.md").exists()
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  assert sum(line.startswith("| 0.") for line in done.stdout.splitlines()) == 2  # per lr
  for seed, lr in ((0, 0.05), (2, 0.1)):
    name = f"seed={seed},lr={lr}"
    single = train_and_evaluate(config_lib.apply_overrides(
        config_lib.load_config("quickstart"), SMALL + ["rounds=6", f"seed={seed}", f"lr={lr}"]),
        str(tmp_path / name))
    swept = json.loads((tmp_path / "s" / name / "summary.json").read_text())
    assert swept["global_accuracy"] == pytest.approx(single["global_accuracy"], abs=1e-6)
    assert swept["global_loss"] == pytest.approx(single["global_loss"], rel=1e-4)
    assert evaluate_checkpoint(str(tmp_path / "s" / name))["global_accuracy"] == (
        swept["global_accuracy"])
