"""experiments/benchmarks/gpu_check.sh (the one-GPU check) in its --smoke form on this CPU,
and the report of experiments/benchmarks/sweep.py (StackedRuns against runs one after
another) rendered from made-up records."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "experiments", "benchmarks")


def _sweep_module():
  spec = importlib.util.spec_from_file_location("sweep_bench", os.path.join(BENCHMARKS,
                                                                            "sweep.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_gpu_check_smoke_runs_every_step_and_writes_the_results(tmp_path):
  out = tmp_path / "gpu_check"
  env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
  proc = subprocess.run(["bash", os.path.join(BENCHMARKS, "gpu_check.sh"), "--smoke"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
  summary = (out / "summary.txt").read_text()
  for name in ("bench_xla", "bench_im2col", "sweep", "run_niid"):
    assert any(line.startswith(name) and " ok " in line for line in summary.splitlines()), \
        summary
  # (a) both convolutions' round benchmarks, each runner on the convolution asked for
  for conv in ("xla", "im2col"):
    (path,) = glob.glob(str(out / f"round_bench_{conv}" / "benchmarks" / "results"
                            / "round_bench_*.json"))
    records = json.load(open(path))["records"]
    assert records and all(r["status"] == "ok" and r["info"]["conv_impl"] == conv
                           for r in records)
  # (b) the sweep: both forms' numbers for every R
  (path,) = glob.glob(str(out / "sweep" / "benchmarks" / "results" / "sweep_*.json"))
  records = json.load(open(path))["records"]
  assert sorted({r["runs"] for r in records}) == [1, 2]
  for r in records:
    assert r["status"] == "ok", r
    for form in ("vmapped", "sequential"):
      assert r[form]["updates_s"] > 0 and r[form]["round_s"] > 0
      assert r[form]["compiled_memory"]["total"] > 0
    assert r["ratio"] == pytest.approx(r["vmapped"]["updates_s"] / r["sequential"]["updates_s"])
    assert r["loss_max_abs_diff"] < 1e-4  # the same rounds, computed two ways
  assert "<!-- sweep:begin -->" in (out / "sweep" / "BENCHMARKS.md").read_text()
  # (c) the NIID-Bench run's summary and its wall time
  run = json.load(open(out / "niid_fedavg" / "summary.json"))
  assert run["rounds"] == 2 and run["wall_time_s"] > 0
  assert "run_niid wall time:" in summary
  assert (out / "gpu_check_results.tar.gz").stat().st_size > 0


def _record(model, runs, vmapped_s, sequential_s, *, forced=False, mib=1.0):
  def form(round_s, total):
    return {"round_s": round_s, "round_s_all": [round_s], "first_round_s": 2 + round_s,
            "compile_s": 2.0, "updates_s": runs * 10 / round_s,
            "compiled_memory": {"argument": 0, "output": 0, "temp": int(total * 2**20),
                                "alias": 0, "generated_code": 0, "total": int(total * 2**20)}}
  plan = "ExecutionPlan(chunk_size=1, steps_per_call=0)"
  return {"model": model, "runs": runs, "status": "ok", "plan": plan, "conv_impl": "im2col",
          "auto_plan": "ExecutionPlan(chunk_size=1, steps_per_call=10)" if forced else plan,
          "auto_conv_impl": "xla" if forced else "im2col", "forced": forced,
          "vmapped": form(vmapped_s, mib * runs), "sequential": form(sequential_s, mib),
          "ratio": sequential_s / vmapped_s, "loss_max_abs_diff": 1e-7,
          "peak_rss_mb": 500.0 + runs, "device_peak_bytes": None}


def test_sweep_section_renders_the_table_the_forced_plan_and_a_reading_from_the_numbers():
  sweep = _sweep_module()
  records = [_record("simple_cnn", 1, 1.0, 1.0), _record("simple_cnn", 4, 2.0, 4.0),
             _record("cnn4", 1, 1.0, 0.8, forced=True, mib=20),
             {"model": "cnn4", "runs": 4, "status": "timeout", "reason": "killed after 5 s"}]
  data = {"device": {"device_kind": "cpu", "backend": "cpu", "cpu_model": "X", "cores_used": 2,
                     "cpu_count": 2, "versions": {"jax": "0.0"}},
          "args": {"clients": 10, "examples": 320, "steps": 10, "batch": 32, "repeats": 3,
                   "smoke": False},
          "records": records, "command": "python experiments/benchmarks/sweep.py",
          "started": "t0", "finished": "t1"}
  data["findings"] = sweep.findings(records)
  text = sweep.report_section(data)
  assert text.startswith("<!-- sweep:begin -->") and text.endswith("<!-- sweep:end -->")
  rows = [line for line in text.splitlines() if line.startswith("| simple_cnn")]
  assert len(rows) == 2 and "| 4 | 20.0 | 10.0 | 2.00 |" in rows[1]  # updates/s and ratio
  assert "(forced †)" in text and "† cnn4: a run picks xla convolutions in the host loop" in text
  assert "- cnn4, R=4: timeout (killed after 5 s)" in text
  simple, cnn4 = data["findings"]
  assert "1.00x at R=1, 2.00x at R=4: stacking pays (over 10% faster) at R=4" in simple
  assert "grows 4.0x from R=1 to R=4" in simple
  assert "stacking is over 10% slower at R=1" in cnn4
  assert "Smoke run" not in text
  data["args"]["smoke"] = True
  assert "Smoke run" in sweep.report_section(data)


def test_sweep_smoke_never_updates_the_committed_reports():
  with pytest.raises(SystemExit, match="never update the committed reports"):
    _sweep_module().main(["--smoke", "--update-reports"])
