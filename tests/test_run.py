"""End to end: outputs, resume after SIGKILL, config guard, data errors, NaN stop."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fedjax_gen import config as config_lib
from fedjax_gen.trainer.train import train_and_evaluate
from fedjax_gen.trainer.workdir import open_run

TINY = ["num_clients=8", "clients_per_round=4", "rounds=6", "local_epochs=1",
        "eval_every=2", "checkpoint_every=2", "progress=false", "alpha=1.0"]


def cfg(*overrides):
  return config_lib.apply_overrides(config_lib.load_config("quickstart"),
                                    TINY + list(overrides))


def claim(config, workdir):
  """What a run does to its folder before training: check it, hold it, write config.json."""
  with open_run(config, workdir) as run:
    run.commit()


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_run_writes_outputs_and_is_deterministic(tmp_path):
  a = train_and_evaluate(cfg(), str(tmp_path / "a"))
  b = train_and_evaluate(cfg(), str(tmp_path / "b"))
  for key in ("global_accuracy", "personalized_accuracy", "rounds", "wall_time_s"):
    assert key in a
  assert a["global_accuracy"] == b["global_accuracy"]
  assert a["personalized_accuracy"] == b["personalized_accuracy"]
  for name in ("metrics.jsonl", "summary.json", "accuracy.png", "label_counts.png",
               "config.json"):
    assert (tmp_path / "a" / name).exists(), name
  rows = read_metrics(tmp_path / "a")
  assert [r["round"] for r in rows] == list(range(1, 7))
  assert all(0 <= r["global_accuracy"] <= 1 for r in rows if "global_accuracy" in r)
  # Re-running a finished work folder resumes at the end and changes nothing.
  again = train_and_evaluate(cfg(), str(tmp_path / "a"))
  assert again["global_accuracy"] == a["global_accuracy"]
  assert read_metrics(tmp_path / "a") == rows


RESUME = TINY + ["rounds=40", "checkpoint_every=4", "algorithm=scaffold"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  summary = train_and_evaluate(
      config_lib.apply_overrides(config_lib.load_config("quickstart"), RESUME), str(workdir))
  return summary, read_metrics(workdir)


def _strip_timing(rows):
  return [{k: v for k, v in r.items() if k not in ("clients_per_s", "elapsed_s")}
          for r in rows]


def _interrupt(cmd, sig, *, after, delay):
  """Starts `cmd`, waits until `after()` holds, `delay` seconds more, sends `sig`; returns
  (whether it was still running then, return code, stderr)."""
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None and not after():
    time.sleep(0.02)
  time.sleep(delay)
  running = proc.poll() is None
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=300)
  return running, proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT],
                         ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_interrupted_at_random_moments_resumes_to_the_same_numbers(tmp_path, sig,
                                                                     uninterrupted):
  """Stopped once while starting up (JAX loading, data, compiling) and once mid-run, then
  rerun: the same numbers as a run never stopped. Ctrl-C and SIGTERM say so in one line
  (no traceback) and exit 128 + the signal's number."""
  ref, ref_rows = uninterrupted
  workdir = tmp_path / "w"
  cmd = [sys.executable, "-m", "fedjax_gen", "run", "quickstart", *RESUME,
         "--workdir", str(workdir)]
  rng = np.random.default_rng(int(sig))  # moments differ between signals, not between runs
  saved = lambda: bool([d for d in os.listdir(workdir / "checkpoints") if d.isdigit()]
                       if (workdir / "checkpoints").exists() else [])
  for after, delay in ((lambda: True, rng.uniform(0.2, 3.0)),  # starting up
                       (saved, rng.uniform(0.0, 0.05))):  # training
    running, code, err = _interrupt(cmd, sig, after=after, delay=delay)
    assert running, "the run ended before it could be interrupted"
    assert code == (-sig if sig == signal.SIGKILL else 128 + sig), err
    if sig != signal.SIGKILL:
      assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
          "fedjax-gen: interrupted"), err
  rows_before = read_metrics(workdir)
  assert rows_before and rows_before[-1]["round"] < 40
  resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr
  summary = json.loads(resumed.stdout)
  assert summary["global_accuracy"] == ref["global_accuracy"]
  assert summary["personalized_accuracy"] == ref["personalized_accuracy"]
  assert _strip_timing(read_metrics(workdir)) == _strip_timing(ref_rows)


def test_workdir_of_another_config_is_refused(tmp_path):
  train_and_evaluate(cfg("rounds=2"), str(tmp_path))
  with pytest.raises(ValueError, match=r"different config \(alpha: 1.0 -> 0.5\)"):
    train_and_evaluate(cfg("rounds=2", "alpha=0.5"), str(tmp_path))


def test_other_algorithms_hyperparameters_do_not_block_resuming(tmp_path):
  claim(cfg("algorithm=fedper"), str(tmp_path / "a"))
  claim(cfg("algorithm=fedper", "personalized.apfl_alpha=1.0", "personalized.pfedme_lambda=3.0"),
                  str(tmp_path / "a"))  # FedPer reads neither
  claim(cfg("algorithm=apfl"), str(tmp_path / "b"))
  with pytest.raises(ValueError, match=r"different config \(personalized.apfl_alpha: 0.5 -> 1.0\)"):
    claim(cfg("algorithm=apfl", "personalized.apfl_alpha=1.0"), str(tmp_path / "b"))
  claim(cfg("algorithm=perfedavg_hf"), str(tmp_path / "c"))
  with pytest.raises(ValueError, match=r"different config \(personalized.perfedavg_alpha: 0.01 -> 0.02\)"):
    claim(cfg("algorithm=perfedavg_hf", "personalized.perfedavg_alpha=0.02"), str(tmp_path / "c"))


def test_a_key_this_version_lacks_is_named_as_such(tmp_path):
  claim(cfg(), str(tmp_path))
  path = tmp_path / "config.json"
  saved = json.loads(path.read_text())
  path.write_text(json.dumps({**saved, "retired_option": "x"}))
  with pytest.raises(ValueError, match="retired_option='x', a key this version no longer has"):
    claim(cfg(), str(tmp_path))


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(PermissionError, match="is not writable"):
    train_and_evaluate(cfg(), str(blocker / "sub"))


def test_data_errors_before_training(tmp_path):
  with pytest.raises(ValueError, match="num_clients=2000 exceeds the number of examples"):
    train_and_evaluate(cfg("num_clients=2000", "clients_per_round=2", "partition=iid"),
                       str(tmp_path / "a"))
  with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
    train_and_evaluate(cfg("dataset=fashion_mnist", "data.dir=/nonexistent/fmnist",
                           "model=simple_cnn"), str(tmp_path / "b"))
  assert not (tmp_path / "a" / "checkpoints").exists()


def test_nan_stop_finishes_the_pending_save_and_names_only_checkpoints_that_exist(tmp_path):
  """The NaN is found while the previous round's save is still in flight: the save is
  finished (no `*.orbax-checkpoint-tmp` left), the message names that round, and `eval`
  reads it."""
  from fedjax_gen.trainer import evaluate_checkpoint
  from fedjax_gen.trainer.checkpoint import saved_rounds
  config = config_lib.apply_overrides(config_lib.load_config("quickstart"),
                                      ["lr=20", "checkpoint_every=1", "progress=false"])
  with pytest.raises(FloatingPointError) as e:
    train_and_evaluate(config, str(tmp_path))
  failed, kept = map(int, re.search(r"at round (\d+); stopped. The last checkpoint "
                                    r"\(round (\d+)\) is intact", str(e.value)).groups())
  assert kept == failed - 1 >= 1 and saved_rounds(str(tmp_path))[-1] == kept
  assert not [d for d in os.listdir(tmp_path / "checkpoints") if not d.isdigit()]
  assert evaluate_checkpoint(str(tmp_path))["round"] == kept
  rows = read_metrics(tmp_path)
  assert [r["round"] for r in rows] == list(range(1, kept + 1))
  assert all(np.isfinite(r["train_loss"]) for r in rows)


def test_nan_before_any_checkpoint_says_so(tmp_path):
  with pytest.raises(FloatingPointError, match="at round 1; stopped. No checkpoint was saved"):
    train_and_evaluate(cfg("lr=1e6", "momentum=0.9"), str(tmp_path))


def test_personal_layers_the_model_lacks(tmp_path):
  with pytest.raises(ValueError, match=r"no layer\(s\) \['classifier'\]; its top-level layers"):
    train_and_evaluate(cfg("algorithm=fedper", "personalized.personal_layers=classifier"), str(tmp_path))
  with pytest.raises(ValueError, match="leaves nothing shared"):
    train_and_evaluate(cfg("algorithm=fedrep", "personalized.personal_layers=fc1,fc2,head"),
                       str(tmp_path / "b"))
  assert not (tmp_path / "checkpoints").exists()


def test_newcomers_are_evaluated(tmp_path):
  summary = train_and_evaluate(cfg("algorithm=fedavg_ft", "personalized.holdout_clients=0.25",
                                   "clients_per_round=6", "personalized.finetune_steps=3",
                                   "personalized.newcomer_steps=3"), str(tmp_path))
  assert 0 <= summary["new_client_accuracy"] <= 1
  assert 0 <= summary["personalized_accuracy"] <= 1


def test_eval_reproduces_the_last_evaluation_and_takes_only_evaluation_keys(tmp_path, capsys):
  from fedjax_gen import cli
  from fedjax_gen.trainer.train import evaluate_checkpoint
  summary = train_and_evaluate(cfg("algorithm=fedavg_ft", "personalized.holdout_clients=0.25", "rounds=2",
                                   "clients_per_round=6", "personalized.finetune_steps=3",
                                   "personalized.newcomer_steps=3"), str(tmp_path))
  again = evaluate_checkpoint(str(tmp_path))
  assert again["round"] == 2
  for key in ("global_accuracy", "personalized_accuracy", "new_client_accuracy"):
    assert again[key] == summary[key], key
  before = sorted(os.listdir(tmp_path))
  longer = evaluate_checkpoint(str(tmp_path), ["personalized.newcomer_steps=30"])
  assert longer["overrides"] == ["personalized.newcomer_steps=30"]
  assert longer["global_accuracy"] == summary["global_accuracy"]  # same trained model
  assert longer["new_client_accuracy"] != summary["new_client_accuracy"]
  assert sorted(os.listdir(tmp_path)) == before  # writes nothing
  with pytest.raises(ValueError, match="lr change.*not only evaluation"):
    evaluate_checkpoint(str(tmp_path), ["lr=0.5"])
  with pytest.raises(FileNotFoundError, match="no config.json"):
    evaluate_checkpoint(str(tmp_path / "nothing-here"))
  assert cli.main(["eval", "--workdir", str(tmp_path), "seed=3"]) == 2
  assert "seed change(s) training" in capsys.readouterr().err
