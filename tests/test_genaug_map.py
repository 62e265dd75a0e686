"""The map of when generated data helps (`experiments/genaug_map.py`) on a tiny budget:
every table is drawn from the runs on disk, and a rerun resumes instead of retraining;
the Fashion-MNIST cells' plan."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "genaug_map.py")


def test_tiny_map_writes_three_tables_and_resumes(tmp_path):
  cmd = [sys.executable, SCRIPT, "--tiny", "--root", str(tmp_path / "runs"),
         "--out", str(tmp_path / "out")]
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  text = (tmp_path / "out" / "RESULTS.md").read_text()
  for title in ("Gain against rounds", "Gain against generator quality", "Gain against skew"):
    assert title in text
  assert (tmp_path / "out" / "results" / "genaug_map.png").read_bytes()[:4] == b"\x89PNG"
  generators = sorted(os.listdir(tmp_path / "runs" / "generators"))
  assert generators == ["ddpm-r1", "ddpm-r2"]  # each stage's generator kept
  quality = json.loads((tmp_path / "runs" / "generators" / "ddpm-r1" / "quality.json")
                       .read_text())
  assert 0 <= quality["cas"] <= 1 and f"| ddpm-r1 | {quality['cas']:.2f} |" in text
  # The gain in a cell is the two runs' logged accuracies, differenced.
  read = lambda alg: [json.loads(line) for line in open(
      tmp_path / "runs" / "split" / "c2" / f"{alg}-seed0" / "metrics.jsonl")][-1]
  fedavg = 100 * read("fedavg")["global_accuracy"]
  gain = 100 * read("gen_fedsd")["global_accuracy"] - fedavg
  assert f"| #C=2 | 0.80 | {fedavg:.1f} | {gain:+.1f} | " in text  # two classes of ten each
  before = os.path.getmtime(tmp_path / "runs" / "split" / "c2" / "fedavg-seed0" /
                            "summary.json")
  # A rerun trains nothing (no run is opened again) and draws the same tables.
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "genaug_map: 0 of" in again.stderr
  assert os.path.getmtime(tmp_path / "runs" / "split" / "c2" / "fedavg-seed0" /
                          "summary.json") == before
  assert (tmp_path / "out" / "RESULTS.md").read_text() == text


def test_fashion_mnist_cells_use_its_last_generator_and_the_overrides(tmp_path):
  import argparse
  import importlib.util
  spec = importlib.util.spec_from_file_location("genaug_map", SCRIPT)
  gm = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(gm)
  args = argparse.Namespace(seeds=[0, 1], root=str(tmp_path), splits=["c2"], tiny=False,
                            fmnist=True, fmnist_rounds=50, fmnist_set=["local_epochs=2"])
  generators = [{"dir": str(tmp_path / "generators" / "ddpm-r40"), "cas": 0.7}]
  fmnist = [{"dir": str(tmp_path / "fmnist" / "generators" / f"ddpm-r{r}")} for r in (50, 200)]
  cells = {w: (e, o) for e, w, o in gm.plan_cells(args, generators, fmnist)}
  for algorithm in ("fedavg", "gen_fedsd", "genfl"):
    experiment, overrides = cells[gm.cell_dir(str(tmp_path), "fmnist", "c2", algorithm, 1)]
    assert experiment == "genaug_fmnist"
    assert overrides[-3:] == ["local_epochs=2", f"algorithm={algorithm}", "seed=1"]
    assert "rounds=50" in overrides and "classes_per_client=2" in overrides
    uses = [o for o in overrides if o.startswith("genaug.generator_dir=")]
    assert uses == ([] if algorithm == "fedavg" else [f"genaug.generator_dir={fmnist[-1]['dir']}"])
  # No Fashion-MNIST generator yet: no Fashion-MNIST cells.
  assert not any("fmnist" in w for _, w, _ in gm.plan_cells(args, generators, []))
