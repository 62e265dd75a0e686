"""The client axis sharded over 4 (forced host) devices gives the results of one device."""

import json
import os
import subprocess
import sys

SCRIPT = """
import json, sys
import jax
from fedjax_gen import apply_overrides, load_config, train_and_evaluate
assert len(jax.devices()) == 4, jax.devices()
out = {}
for n in (1, 4):
  c = apply_overrides(load_config("quickstart"), ["num_clients=8", "clients_per_round=4",
      "rounds=4", "eval_every=2", "progress=false", "alpha=1.0", "algorithm=scaffold",
      f"run.num_devices={n}"])
  out[n] = train_and_evaluate(c, sys.argv[1] + f"/d{n}")
print(json.dumps(out))
"""


def test_sharded_client_axis_matches_single_device(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  one, four = out["1"], out["4"]
  assert abs(one["global_accuracy"] - four["global_accuracy"]) < 1e-6
  assert abs(one["global_loss"] - four["global_loss"]) < 1e-4
  assert abs(one["personalized_accuracy"] - four["personalized_accuracy"]) < 1e-6
