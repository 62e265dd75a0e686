"""fedjax_gen_bench: in-process round timing of the benchmark runners (baselines), and where
every benchmark and experiment script writes (reports): an output folder under the current
directory, the committed reports only with --update-reports."""

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from fedjax_gen_bench import baselines as benchmark
from fedjax_gen_bench import reports as reports_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")


def test_compare_times_each_runner_and_skips_a_missing_package(monkeypatch):
  real = benchmark.missing_package
  monkeypatch.setattr(benchmark, "missing_package",
                      lambda r: "torch" if r == "torch_loop" else real(r))
  records = benchmark.compare("mlp", clients=2, repeats=1,
                              runners=("fedjax_gen_auto", "jax_loop", "torch_loop"))
  assert [r["runner"] for r in records] == ["fedjax_gen_auto", "jax_loop", "torch_loop"]
  ok, skipped = records[:2], records[2]
  for r in ok:
    assert r["status"] == "ok" and r["model"] == "mlp" and r["clients"] == 2
    assert r["round_s"] > 0 and r["compile_s"] >= 0 and len(r["round_s_all"]) == 1
    assert r["clients_per_s"] == pytest.approx(2 / r["round_s"])
  assert min(r["speedup"] for r in ok) == pytest.approx(1.0)  # the slowest runner
  assert skipped == {"runner": "torch_loop", "model": "mlp", "clients": 2,
                     "status": "skipped", "reason": benchmark.skip_reason("torch")}
  assert 'pip install "fedjax-gen[bench]"' in skipped["reason"]


def test_missing_package_names_only_extra_packages():
  assert benchmark.missing_package("fedjax_gen_auto") is None
  assert benchmark.missing_package("jax_loop") is None


def test_bad_arguments_are_clear_errors():
  with pytest.raises(ValueError, match="Unknown model 'vit'"):
    benchmark.time_rounds("jax_loop", "vit")
  with pytest.raises(ValueError, match="repeats must be >= 1"):
    benchmark.time_rounds("jax_loop", "mlp", clients=2, repeats=0)
  with pytest.raises(ValueError, match="unknown runner"):
    benchmark.time_rounds("numpy_loop", "mlp", clients=2, repeats=1)


def test_torch_runner_takes_its_thread_count():
  pytest.importorskip("torch")
  (rec,) = benchmark.compare("mlp", clients=2, repeats=1, runners=("torch_loop",),
                             torch_threads=1)
  assert rec["status"] == "ok" and rec["info"]["torch_threads"] == 1 and rec["round_s"] > 0


def test_compare_warms_every_runner_up_then_interleaves_the_timed_rounds(monkeypatch):
  calls = []
  monkeypatch.setattr(benchmark, "make_runner", lambda runner, *a, **k: (
      lambda: calls.append(runner), {"fake": runner}))
  records = benchmark.compare("mlp", clients=2, repeats=3, runners=("a", "b", "c"))
  assert calls == ["a", "b", "c",            # warm-up (compilation) of each
                   "a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotated each repeat
  assert [r["info"] for r in records] == [{"fake": n} for n in "abc"]
  assert all(len(r["round_s_all"]) == 3 for r in records)


# --- where the scripts write -------------------------------------------------------------
def _committed() -> dict:
  """Every file of experiments/ (the committed reports and scripts; not runs/): its hash."""
  out = {}
  for folder, dirs, files in os.walk(EXPERIMENTS):
    dirs[:] = [d for d in dirs if d not in ("runs", "__pycache__")]
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, EXPERIMENTS)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _script(rel: str):
  """The module of experiments/<rel>, loaded as its `python` command would."""
  spec = importlib.util.spec_from_file_location(
      "bench_" + rel.replace("/", "_")[:-3], os.path.join(EXPERIMENTS, rel))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _main(script: str):
  """`main(argv)` of a writer, by its output folder's name."""
  if script == "round_bench":
    from fedjax_gen_bench import round_bench
    return round_bench.main
  if script == "scale":
    return _script("benchmarks/scale.py").main
  module = _script(f"{script}.py")
  if hasattr(module, "TABLE"):  # niid, pfllib, genaug: the shared driver of tables.py
    return lambda argv: module.main(module.TABLE, argv)
  return module.main


WRITERS = ["round_bench", "scale", "niid_bench", "pfllib_bench", "genaug_bench", "ddpm_bench",
           "pfedgpa_bench"]


@pytest.mark.parametrize("script", WRITERS)
def test_a_writer_writes_only_into_its_output_folder_and_says_so(script, tmp_path, monkeypatch,
                                                                 capsys):
  """Re-rendering the committed results (`--report-only`, the cheapest mode of every
  writer) leaves the committed files as they were and writes ./fedjax-gen-out/<script>."""
  import jax
  if script == "scale" and not os.path.exists(os.path.join(
      EXPERIMENTS, "benchmarks", "results", f"scale_{jax.default_backend()}.json")):
    pytest.skip(f"no committed scale results for {jax.default_backend()}")
  monkeypatch.syspath_prepend(EXPERIMENTS)  # `from tables import ...`, as `python` runs them
  monkeypatch.chdir(tmp_path)
  before = _committed()
  assert _main(script)(["--report-only"]) == 0
  assert _committed() == before
  written = sorted(os.path.relpath(os.path.join(folder, name), tmp_path)
                   for folder, _, files in os.walk(tmp_path) for name in files)
  assert written and all(w.startswith(os.path.join("fedjax-gen-out", script, "")) for w in written)
  printed = sorted(line[len("wrote "):] for line in capsys.readouterr().out.splitlines()
                   if line.startswith("wrote "))
  assert printed == written


def test_update_reports_rewrites_the_committed_reports(tmp_path, monkeypatch, capsys):
  """`--update-reports` writes into the checkout's experiments/ (here a copy), resuming from
  the results there, and nothing into the current directory."""
  from fedjax_gen_bench import round_bench
  checkout = tmp_path / "experiments"
  results = checkout / "benchmarks" / "results"
  results.mkdir(parents=True)
  (checkout / "BENCHMARKS.md").write_text("# Benchmarks\n\nWritten by hand.\n")
  shutil.copy(os.path.join(EXPERIMENTS, "benchmarks", "results", "round_bench_cpu.json"), results)
  monkeypatch.setattr(reports_lib, "CHECKOUT_REPORTS", str(checkout))
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  assert round_bench.main(["--report-only", "--update-reports"]) == 0
  text = (checkout / "BENCHMARKS.md").read_text()
  assert "Written by hand." in text and "<!-- round_bench:begin -->" in text
  assert (results / "round_bench_cpu.png").exists() and not os.listdir(cwd)
  assert f"wrote {checkout / 'BENCHMARKS.md'}" in capsys.readouterr().out


def test_update_reports_outside_a_checkout_is_one_clear_error(tmp_path, monkeypatch):
  monkeypatch.setattr(reports_lib, "CHECKOUT_REPORTS", str(tmp_path / "experiments"))
  args = type("Args", (), {"update_reports": True, "out": None})()
  with pytest.raises(SystemExit, match="this is an install: drop the flag"):
    reports_lib.Reports.from_args(args, "round_bench")


def test_bench_help_works_from_an_install_and_names_itself(tmp_path):
  """`fedjax-gen bench --help` with the two packages alone (as an install has them, no
  experiments/ beside them), run from an unrelated folder."""
  site = tmp_path / "site"
  for package in ("fedjax_gen", "fedjax_gen_bench"):
    shutil.copytree(os.path.join(ROOT, package), site / package,
                    ignore=shutil.ignore_patterns("__pycache__"))
  work = tmp_path / "work"
  work.mkdir()
  code = ("import sys, fedjax_gen; print(fedjax_gen.__file__); from fedjax_gen.cli import main; "
          "sys.exit(main(['bench', '--help']))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True,
                        timeout=300, env={**os.environ, "PYTHONPATH": str(site)})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.startswith(str(site / "fedjax_gen")), proc.stdout[:300]
  assert "usage: fedjax-gen bench" in proc.stdout
  assert 'pip install "fedjax-gen[bench]"' in proc.stdout
  assert not os.listdir(work)


def test_bench_without_its_package_is_one_clear_line(monkeypatch, capsys):
  from fedjax_gen import cli
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "fedjax_gen_bench" else real(name, *a))
  assert cli.main(["bench", "--help"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "fedjax_gen_bench is not installed" in err
