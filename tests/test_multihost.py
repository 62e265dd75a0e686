"""A run over two processes (jax.distributed on this machine's CPU, loopback only, two host
devices each): the same numbers as one process, only process 0 writes, and both killed
mid-run resume to the same end."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

from fedjax_gen import config as config_lib
from fedjax_gen.trainer.train import train_and_evaluate

RUN = ["num_clients=8", "clients_per_round=4", "rounds=30", "eval_every=5",
       "checkpoint_every=3", "progress=false", "alpha=1.0"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir) -> list[subprocess.Popen]:
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  return [subprocess.Popen(
      [sys.executable, "-m", "fedjax_gen", "run", "quickstart", *RUN, "--workdir",
       str(workdir), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
       "--process-id", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=env) for i in range(2)]


def _finish(procs) -> list[dict]:
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err
  return [json.loads(out) for out, _ in outs]


def test_two_processes_give_the_single_process_numbers_and_only_process_zero_writes(
    tmp_path):
  single = train_and_evaluate(config_lib.apply_overrides(
      config_lib.load_config("quickstart"), RUN), str(tmp_path / "single"))
  workdir = tmp_path / "two"
  first, second = _finish(_launch(workdir))
  for key in ("global_accuracy", "personalized_accuracy"):
    assert first[key] == second[key] == single[key], key
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["round"] for r in rows] == list(range(1, 31))  # one writer: no row twice
  assert len(list(workdir.glob("events.out.tfevents.*"))) == 1
  assert json.loads((workdir / "summary.json").read_text())["global_accuracy"] == (
      single["global_accuracy"])

  # Both killed after a checkpoint, then the same two commands again: the same end.
  killed = tmp_path / "killed"
  procs = _launch(killed)
  deadline = time.time() + 240
  while time.time() < deadline and not any(
      d.isdigit() for d in (os.listdir(killed / "checkpoints")
                            if (killed / "checkpoints").exists() else [])):
    time.sleep(0.05)
  assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  assert json.loads((killed / "metrics.jsonl").read_text().splitlines()[-1])["round"] < 30
  resumed = _finish(_launch(killed))
  assert resumed[0]["global_accuracy"] == single["global_accuracy"]
