"""Runs side by side (`trainer.runs`, `engine.runs`): each run's numbers are the single
run's, whatever is stacked with it; what cannot be stacked runs alone and says why."""

import json
import shutil

import pytest

from fedjax_gen import config as config_lib
from fedjax_gen.trainer.runs import groups, train_runs
from fedjax_gen.trainer.train import train_and_evaluate

SMALL = ["num_clients=8", "clients_per_round=4", "rounds=4", "progress=false", "alpha=1.0",
         "eval_every=2", "checkpoint_every=2"]


def configs(*variants, base=(), experiment="quickstart"):
  return [config_lib.apply_overrides(config_lib.load_config(experiment),
                                     SMALL + list(base) + list(v)) for v in variants]


def single(config, workdir):
  return train_and_evaluate(config, str(workdir))


def same_numbers(stacked: dict, alone: dict):
  for key in ("global_accuracy", "global_loss"):
    assert stacked[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-6), key


def same_rows(stacked_dir, alone_dir):
  read = lambda d: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
  a, b = read(stacked_dir), read(alone_dir)
  assert [r["round"] for r in a] == [r["round"] for r in b]
  for x, y in zip(a, b):
    assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)


def test_three_seeds_side_by_side_are_three_single_runs(tmp_path, capsys):
  cs = configs(["seed=0"], ["seed=1"], ["seed=2"])
  dirs = [str(tmp_path / f"seed{s}") for s in range(3)]
  out = train_runs(cs, dirs)
  assert "3 runs side by side in one jitted round" in capsys.readouterr().err
  for s, (config, summary) in enumerate(zip(cs, out)):
    alone = single(config, tmp_path / f"alone{s}")
    same_numbers(summary, alone)
    same_rows(tmp_path / f"seed{s}", tmp_path / f"alone{s}")
    assert json.loads((tmp_path / f"seed{s}" / "summary.json").read_text()) == summary


def test_learning_rates_and_server_lr_are_traced(tmp_path, capsys):
  # fl.server_lr=0 means "the optimizer's default" even as a traced value; momentum 0 and
  # 0.9 share a round (a zero-momentum trace is plain SGD).
  cs = configs(["lr=0.05", "fl.server_lr=0", "momentum=0"],
               ["lr=0.1", "fl.server_lr=0.5", "momentum=0.9"], base=["seed=3"])
  out = train_runs(cs, [str(tmp_path / "a"), str(tmp_path / "b")])
  err = capsys.readouterr().err
  assert "2 runs side by side" in err and "traced: fl.server_lr, lr, momentum" in err
  for i, config in enumerate(cs):
    same_numbers(out[i], single(config, tmp_path / f"alone{i}"))


def test_a_float_the_algorithm_branches_on_runs_alone_and_says_so(tmp_path, capsys):
  # pFedMe checks personal_lr * lambda in Python: not traceable; tracing finds it first.
  cs = configs(["personalized.pfedme_lambda=5.0"], ["personalized.pfedme_lambda=10.0"],
               base=["algorithm=pfedme", "rounds=2"])
  out = train_runs(cs, [str(tmp_path / "a"), str(tmp_path / "b")])
  err = capsys.readouterr().err
  assert "2 runs one after another" in err
  assert "cannot take personalized.pfedme_lambda as traced values" in err
  same_numbers(out[1], single(cs[1], tmp_path / "alone"))


def test_what_groups_and_what_runs_alone(tmp_path):
  cs = configs(["seed=0"], ["seed=1", "lr=0.1"], ["seed=0", "batch_size=8"],
               ["seed=1", "batch_size=8"], ["seed=2", "algorithm=genfl"],
               ["seed=3", "sweep.vmap=false"], ["seed=4", "dp.enabled=true"])
  dirs = [str(tmp_path / str(i)) for i in range(len(cs))]
  got = groups(cs, dirs)
  assert got[0] == ([0, 1], None, ["lr"])
  assert got[1] == ([2, 3], None, [])
  assert [g[0] for g in got[2:]] == [[4], [5], [6]]
  assert "own server computation" in got[2][1] and got[3][1] == "sweep.vmap=false"
  assert "DP" in got[4][1]
  chunked = groups(configs(*[[f"seed={s}", "sweep.chunk=2"] for s in range(5)]),
                   [str(tmp_path / f"c{s}") for s in range(5)])
  assert [g[0] for g in chunked] == [[0, 1], [2, 3], [4]]
  assert chunked[2][1] == "nothing to stack it with"


def test_a_run_a_checkpoint_ahead_resumes_in_step(tmp_path):
  # A kill between the runs' saves leaves one a checkpoint ahead: the pair resumes from the
  # older round, and the one ahead computes its rounds again, identically.
  cs = configs(["seed=0"], ["seed=1"])
  dirs = [tmp_path / "a", tmp_path / "b"]
  train_runs(cs, [str(d) for d in dirs])
  shutil.rmtree(dirs[0] / "checkpoints" / "4")
  longer = configs(["seed=0", "rounds=6"], ["seed=1", "rounds=6"])
  out = train_runs(longer, [str(d) for d in dirs])
  for i, config in enumerate(longer):
    alone = single(config, tmp_path / f"alone{i}")
    same_numbers(out[i], alone)
    same_rows(dirs[i], tmp_path / f"alone{i}")
