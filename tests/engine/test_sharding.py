"""The client axis sharded over 4 (forced host) devices gives the results of one device,
for a single run and for runs side by side (the run axis whole on every device)."""

import json
import os
import subprocess
import sys

SCRIPT = """
import json, sys
import jax
from fedjax_gen import apply_overrides, load_config, train_and_evaluate
from fedjax_gen.trainer.runs import train_runs
assert len(jax.devices()) == 4, jax.devices()
config = lambda *more: apply_overrides(load_config("quickstart"), ["num_clients=8",
    "clients_per_round=4", "rounds=4", "eval_every=2", "progress=false", "alpha=1.0",
    "algorithm=scaffold", *more])
out = {n: train_and_evaluate(config(f"run.num_devices={n}"), sys.argv[1] + f"/d{n}")
       for n in (1, 4)}
out["stacked"] = train_runs([config("run.num_devices=4", f"seed={s}") for s in (0, 1)],
                            [sys.argv[1] + f"/s{s}" for s in (0, 1)])[0]
print(json.dumps(out))
"""


def test_sharded_client_axis_matches_single_device(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  one = out["1"]
  for other in (out["4"], out["stacked"]):
    assert abs(one["global_accuracy"] - other["global_accuracy"]) < 1e-6
    assert abs(one["global_loss"] - other["global_loss"]) < 1e-4
    assert abs(one["personalized_accuracy"] - other["personalized_accuracy"]) < 1e-6
