"""The package's layers (ARCHITECTURE.md) and lint habits, checked on every test run."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tool, *args):
  exe = shutil.which(tool)
  if exe is None:
    pytest.fail(f"{tool} is not installed: pip install -e '.[test]'")
  return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
  """Layers, forbidden edges and no cycles, function-local imports included."""
  result = _run("lint-imports", "--no-cache")
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
  assert "0 broken" in result.stdout


def test_a_back_edge_breaks_the_layers(tmp_path):
  """The contracts are live: in a copy of the package, an engine module importing the
  trainer is reported."""
  shutil.copytree(os.path.join(ROOT, "fedjax_gen"), tmp_path / "fedjax_gen",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path)
  (tmp_path / "fedjax_gen" / "engine" / "back_edge.py").write_text(
      "from fedjax_gen.trainer import options  # noqa: F401\n")
  exe = shutil.which("lint-imports")
  result = subprocess.run([exe, "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path)})
  assert result.returncode != 0
  assert "fedjax_gen.engine.back_edge -> fedjax_gen.trainer" in result.stdout, result.stdout


def test_ruff_finds_nothing():
  result = _run("ruff", "check", "fedjax_gen", "fedjax_gen_bench", "tests", "experiments")
  assert result.returncode == 0, result.stdout[-4000:]
