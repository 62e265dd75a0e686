"""A run never loses work and a user's mistake is one line: corrupt checkpoints, two runs
on one folder, failed setups, lowered rounds, torn metrics rows, bad config files and
values, disk full, file modes, stdout that `jq` can read, TensorBoard events, the plot."""

import glob
import gzip
import json
import os
import re
import struct
import subprocess
import sys

import pytest

from fedjax_gen import cli, outputs
from fedjax_gen import config as config_lib
from fedjax_gen.outputs import saved_rounds
from fedjax_gen.trainer import evaluate_checkpoint
from fedjax_gen.trainer.train import train_and_evaluate

TINY = ["num_clients=8", "clients_per_round=4", "rounds=4", "local_epochs=1",
        "eval_every=2", "checkpoint_every=2", "progress=false", "alpha=1.0"]


def cfg(*overrides):
  return config_lib.apply_overrides(config_lib.load_config("quickstart"),
                                    TINY + list(overrides))


def run_cli(capsys, *argv):
  """`fedjax-gen ARGV` in this process: (exit code, stdout, stderr)."""
  code = cli.main(list(argv))
  out = capsys.readouterr()
  return code, out.out, out.err


def one_error_line(err: str) -> str:
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("fedjax-gen: error: "), err
  return lines[0]


# --- work is never lost or misreported ------------------------------------------------

def _damage_newest_checkpoint(workdir) -> str:
  newest = os.path.join(workdir, "checkpoints", str(saved_rounds(str(workdir))[-1]))
  for path in glob.glob(os.path.join(newest, "**", "d", "*"), recursive=True):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  return newest


def test_a_damaged_newest_checkpoint_falls_back_with_one_warning(tmp_path, capsys):
  train_and_evaluate(cfg("rounds=2", "checkpoint_every=1"), str(tmp_path))
  assert saved_rounds(str(tmp_path)) == [1, 2]
  bad = _damage_newest_checkpoint(tmp_path)
  capsys.readouterr()
  assert evaluate_checkpoint(str(tmp_path))["round"] == 1  # eval moves nothing
  warning = capsys.readouterr().err.strip().splitlines()
  assert len(warning) == 1 and f"checkpoint {bad} is unreadable" in warning[0]
  assert "using round 1" in warning[0] and os.path.isdir(bad)
  # A longer run resumes from round 1, sets the damaged folder aside and saves round 2 again.
  resumed = train_and_evaluate(cfg("rounds=3", "checkpoint_every=1"), str(tmp_path))
  assert "moved to" in capsys.readouterr().err
  assert os.path.isdir(tmp_path / "unreadable-checkpoint-2")
  assert saved_rounds(str(tmp_path)) == [2, 3]
  fresh = train_and_evaluate(cfg("rounds=3", "checkpoint_every=1"), str(tmp_path / "fresh"))
  assert resumed["global_accuracy"] == fresh["global_accuracy"]


def test_no_readable_checkpoint_is_one_line(tmp_path, capsys):
  train_and_evaluate(cfg("rounds=2", "checkpoint_every=0"), str(tmp_path))
  assert saved_rounds(str(tmp_path)) == [2]
  _damage_newest_checkpoint(tmp_path)
  code, out, err = run_cli(capsys, "eval", "--workdir", str(tmp_path))
  assert code == 2 and out == ""
  assert "No checkpoint in" in one_error_line(err.splitlines()[-1] + "\n")


def test_a_second_run_on_a_held_folder_is_refused(tmp_path):
  """While one process holds the folder, another is refused in one line and writes no row;
  the lock dies with its process, so a killed run leaves nothing stuck."""
  from fedjax_gen.trainer.workdir import open_run
  config = cfg()
  code = ("import sys, time; from fedjax_gen import config as c; "
          "from fedjax_gen.trainer.workdir import open_run; "
          f"cfg = c.apply_overrides(c.load_config('quickstart'), {TINY!r}); "
          f"r = open_run(cfg, {str(tmp_path)!r}); r.__enter__(); "
          "print('held', flush=True); time.sleep(600)")
  holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match=rf"in use by a run in progress \(process "
                                         rf"{holder.pid}\)"):
      train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "metrics.jsonl").exists()
  finally:
    holder.kill()
    holder.wait()
  with open_run(config, str(tmp_path)):  # free again
    pass


def test_a_failed_setup_leaves_the_folder_free_for_the_corrected_command(tmp_path):
  """Bad values found while reading the data write nothing, so fixing them just works;
  where the data is read from is not part of a run's identity."""
  workdir = str(tmp_path / "w")
  for bad in (["num_clients=2000", "clients_per_round=2", "partition=iid"],
              ["data.min_client_size=500"]):
    with pytest.raises(ValueError):
      train_and_evaluate(cfg(*bad), workdir)
    assert not os.path.exists(workdir)
  with pytest.raises(FileNotFoundError):
    train_and_evaluate(cfg("dataset=fashion_mnist", "model=simple_cnn", "rounds=1",
                           "data.dir=/nonexistent"), workdir)
  assert not os.path.exists(workdir)
  os.makedirs(workdir)  # a folder the user made stays, empty
  with pytest.raises(ValueError):
    train_and_evaluate(cfg("num_clients=2000", "clients_per_round=2"), workdir)
  assert os.listdir(workdir) == [".lock"]
  first = train_and_evaluate(cfg(), workdir)
  assert train_and_evaluate(cfg("data.dir=/elsewhere"), workdir)["global_accuracy"] == (
      first["global_accuracy"])  # digits ignore data.dir; the run resumes at its end


def test_lowering_rounds_on_a_finished_run_is_refused(tmp_path):
  train_and_evaluate(cfg(), str(tmp_path))
  before = {n: (tmp_path / n).read_bytes() for n in ("config.json", "summary.json")}
  with pytest.raises(ValueError, match="already trained for 4 rounds; rounds=2 would"):
    train_and_evaluate(cfg("rounds=2"), str(tmp_path))
  assert {n: (tmp_path / n).read_bytes() for n in before} == before


def test_a_torn_last_metrics_row_does_not_block_resuming(tmp_path):
  train_and_evaluate(cfg("rounds=2"), str(tmp_path))
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"round": 3, "train_loss": 0.4')  # a crash mid-write
  summary = train_and_evaluate(cfg(), str(tmp_path))
  assert summary["rounds"] == 4
  assert [r["round"] for r in outputs.read_metrics(str(tmp_path))] == [1, 2, 3, 4]
  (tmp_path / "metrics.jsonl").write_text('{"round": 1}\n{"round": 2,\n{"round": 3}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl, line 2, is not a JSON row"):
    outputs.read_metrics(str(tmp_path))


# --- errors are messages, not tracebacks ---------------------------------------------

@pytest.mark.parametrize("body, message", [
    ("def get_config(:\n", r"config.py', line 1: .*fix the Python syntax"),
    ("def get_config():\n  return {'rounds': 3}\n", r"lacks \d+ keys .*base_config\(\)"),
    ("import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict("
     "{'rounds': 3})\n", r"lacks \d+ keys"),
    ("def get_config():\n  raise RuntimeError('no GPU here')\n",
     r"get_config\(\) of .* raised RuntimeError: no GPU here"),
    ("def get_config():\n  return 3\n", r"returned a int; return an ml_collections"),
    ("import nonexistent_module_xyz\n", r"failed to load: ModuleNotFoundError"),
    ("x = 1\n", r"defines no get_config\(\)"),
])
def test_bad_config_files_are_one_line(tmp_path, capsys, body, message):
  path = tmp_path / "config.py"
  path.write_text(body)
  code, out, err = run_cli(capsys, "run", str(path), "--workdir", str(tmp_path / "w"))
  assert code == 2 and out == ""
  assert re.search(message, one_error_line(err)), err


def test_a_dict_from_get_config_over_defaults_is_accepted(tmp_path):
  path = tmp_path / "mine.py"
  path.write_text("from fedjax_gen.config import base_config\n"
                  "def get_config():\n  return dict(base_config().to_dict(), rounds=3)\n")
  assert config_lib.load_config(str(path)).rounds == 3


@pytest.mark.parametrize("argv, message", [
    (["seed=99999999999999999999"], "seed must be an integer in [0, 2**32), got "
                                    "99999999999999999999"),
    (["seed=-1"], "seed must be an integer in [0, 2**32), got -1"),
    (["lr=inf"], "lr=inf is not a finite number"),
    (["alpha=nan"], "alpha=nan is not a finite number"),
    (["rouns=3"], "Unknown config key 'rouns'; did you mean rounds?"),
    (["min_size=3"], "did you mean data.min_client_size"),
    (["rounds=2.5"], "rounds='2.5': expected an integer"),
])
def test_bad_values_are_one_line_naming_the_key(tmp_path, capsys, argv, message):
  code, out, err = run_cli(capsys, "run", "quickstart", *argv, "--workdir", str(tmp_path))
  assert code == 2 and out == "" and message in one_error_line(err)
  assert not os.listdir(tmp_path)


def test_min_client_size_errors_name_the_key(tmp_path):
  with pytest.raises(ValueError, match=r"min_client_size=500 x num_clients=8 exceeds"):
    train_and_evaluate(cfg("data.min_client_size=500"), str(tmp_path / "w"))


def test_paths_of_the_wrong_kind_are_one_line(tmp_path, capsys):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  code, _, err = run_cli(capsys, "run", "quickstart", *TINY, "--workdir", str(a_file))
  assert code == 2 and "is a file, not a folder" in one_error_line(err)
  code, _, err = run_cli(capsys, "run", str(tmp_path) + "/", "--workdir", str(tmp_path / "w"))
  assert code == 2 and "is a folder; pass a Python file" in one_error_line(err)
  code, _, err = run_cli(capsys, "run", "quickstart", *TINY, "dataset=fashion_mnist",
                         "model=simple_cnn", "data.dir=/tmp/no-such-folder",
                         "--workdir", str(tmp_path / "w"))
  line = one_error_line(err)
  assert code == 2 and "folder /tmp/no-such-folder does not exist" in line
  assert "[.gz]" not in line


def test_a_cut_gzip_idx_file_is_one_line(tmp_path, capsys):
  from fedjax_gen.data.datasets import read_idx
  data = gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">i", 1000) + bytes(1000))
  (tmp_path / "half.gz").write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match=r"half.gz is truncated or corrupt"):
    read_idx(str(tmp_path / "half.gz"))


def test_disk_full_is_one_line_and_keeps_the_checkpoints(tmp_path, capsys, monkeypatch):
  """A failed write in the round loop (here: the metrics file on a full disk) ends the run
  in one line; the checkpoint saved before it stays whole and the run resumes from it."""
  real_append = outputs.MetricsLog.append

  def append(self, row):
    if row["round"] == 3:
      raise OSError(28, "No space left on device", self.path)
    real_append(self, row)

  monkeypatch.setattr(outputs.MetricsLog, "append", append)
  code, out, err = run_cli(capsys, "run", "quickstart", *TINY, "checkpoint_every=1",
                           "--workdir", str(tmp_path))
  line = one_error_line(err)
  assert code == 2 and out == "" and "No space left on device" in line
  assert "run the same command to resume" in line
  assert saved_rounds(str(tmp_path)) == [1, 2]
  monkeypatch.setattr(outputs.MetricsLog, "append", real_append)
  code, out, _ = run_cli(capsys, "run", "quickstart", *TINY, "checkpoint_every=1",
                         "--workdir", str(tmp_path))
  assert code == 0 and json.loads(out)["rounds"] == 4


@pytest.fixture
def small_disk(tmp_path):
  """A 600 KB tmpfs (a disk that fills after a few checkpoints), where this machine lets the
  tests mount one; `grow()` makes room."""
  mount = tmp_path / "disk"
  mount.mkdir()
  made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
                        capture_output=True)
  if made.returncode:
    pytest.skip("cannot mount a small tmpfs here")
  try:
    yield mount, lambda: subprocess.run(["mount", "-o", "remount,size=8m", str(mount)],
                                        check=True)
  finally:
    subprocess.run(["umount", str(mount)])


def test_a_really_full_disk_is_one_line_then_resumes(small_disk):
  """orbax's failed background save, TensorStore's errors and the leftovers of its threads:
  one line, naming only a checkpoint on disk; with room again, the same command finishes
  with the numbers of a run that never failed."""
  mount, grow = small_disk
  workdir = str(mount / "w")
  args = [*TINY, "rounds=30", "checkpoint_every=1"]
  cmd = [sys.executable, "-m", "fedjax_gen", "run", "quickstart", *args, "--workdir", workdir]
  failed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert failed.returncode == 2 and failed.stdout == ""
  line = one_error_line(failed.stderr)
  assert "No space left on device;" in line
  kept = re.search(r"the checkpoint of round (\d+) is kept", line)
  assert kept is None or int(kept.group(1)) == saved_rounds(workdir)[-1]
  grow()
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  ref = train_and_evaluate(cfg(*args[len(TINY):]), str(mount / "ref"))
  assert json.loads(done.stdout)["global_accuracy"] == ref["global_accuracy"]


# --- a newcomer's path -------------------------------------------------------------------

def test_written_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    train_and_evaluate(cfg("rounds=2"), str(tmp_path))
  finally:
    os.umask(old)
  for name in ("config.json", "summary.json", "metrics.jsonl", "accuracy.png",
               "label_counts.png"):
    assert os.stat(tmp_path / name).st_mode & 0o777 == 0o644, name


def test_stdout_is_the_summary_only(tmp_path, capsys):
  code, out, err = run_cli(capsys, "run", "quickstart", *TINY, "data.show_label_counts=true",
                           "--workdir", str(tmp_path))
  assert code == 0 and json.loads(out)["rounds"] == 4  # `| jq` reads it
  assert "client" in err  # the label-count table went to stderr


def test_a_reader_that_leaves_early_is_no_error():
  """`fedjax-gen config quickstart | head -1`: no traceback, no error line."""
  proc = subprocess.Popen([sys.executable, "-m", "fedjax_gen", "config", "quickstart"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  proc.stdout.close()  # before it writes
  assert proc.wait(timeout=120) == 141 and proc.stderr.read() == ""


def test_eval_warns_about_keys_the_run_does_not_read(tmp_path, capsys):
  train_and_evaluate(cfg("rounds=2"), str(tmp_path))
  capsys.readouterr()
  code, out, err = run_cli(capsys, "eval", "--workdir", str(tmp_path),
                           "pfedgpa.omega=2.0")
  assert code == 0 and json.loads(out)["round"] == 2
  assert "warning: pfedgpa.omega does not apply to this run's algorithm (fedavg)" in err


def _tensorboard_scalars(workdir) -> dict:
  """{tag: {step: value}} from the run's TensorBoard event files (TFRecord framing)."""
  from tensorboardX.proto import event_pb2
  scalars = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for v in event.summary.value:
        scalars.setdefault(v.tag, {})[event.step] = v.simple_value
  return scalars


def test_tensorboard_events_hold_the_metrics(tmp_path):
  train_and_evaluate(cfg("rounds=2"), str(tmp_path))
  train_and_evaluate(cfg(), str(tmp_path))  # resumed: a second events file
  rows = outputs.read_metrics(str(tmp_path))
  scalars = _tensorboard_scalars(tmp_path)
  assert {r["round"]: r["train_loss"] for r in rows} == pytest.approx(scalars["train_loss"])
  assert {r["round"]: r["global_accuracy"] for r in rows if "global_accuracy" in r} == (
      pytest.approx(scalars["global_accuracy"]))


def test_the_accuracy_plot_shows_new_clients_and_loss(tmp_path, monkeypatch):
  figures = []
  monkeypatch.setattr(outputs, "save_figure", lambda fig, path, dpi: figures.append(
      fig) if path.endswith("accuracy.png") else None)
  train_and_evaluate(cfg("algorithm=fedavg_ft", "personalized.holdout_clients=0.25",
                         "clients_per_round=4", "alpha=0.5"), str(tmp_path))
  (fig,) = figures
  acc, loss = fig.axes
  assert {line.get_label() for line in acc.get_lines()} == {
      "global (test set)", "personalized (clients' local test)",
      "new clients (held out, adapted)"}
  assert [line.get_label() for line in loss.get_lines()] == ["training loss"]
  assert fig._suptitle.get_text() == ("fedavg_ft on digits, dirichlet(alpha=0.5), 4 of 8 "
                                      "clients per round")


def test_the_package_imports_without_jax_until_used():
  code = ("import sys, fedjax_gen, fedjax_gen.cli; assert 'jax' not in sys.modules; "
          "fedjax_gen.Simulation; assert 'jax' in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True)
