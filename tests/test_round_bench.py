"""experiments/benchmarks/round_bench.py: runners timed interleaved, each in its process."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _round_bench():
  path = os.path.join(ROOT, "experiments", "benchmarks", "round_bench.py")
  spec = importlib.util.spec_from_file_location("round_bench", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_measure_group_times_each_worker_and_reports_a_failing_one():
  rb = _round_bench()
  specs = [{"model": "mlp", "clients": 2, "runner": "jax_loop", "repeats": 2},
           {"model": "mlp", "clients": 2, "runner": "numpy_loop", "repeats": 2}]
  ok, failed = rb.measure_group(specs, timeout=300)
  assert ok["status"] == "ok" and len(ok["round_s_all"]) == 2 and ok["round_s"] > 0
  assert ok["peak_rss_mb"] > 0 and 0 < ok["cpu_share"] and ok["info"]["style"] == "jitted step"
  assert failed["status"] == "failed" and "unknown runner 'numpy_loop'" in failed["reason"]
