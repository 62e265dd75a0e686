"""experiments/benchmarks/baselines.py: in-process round timing of the benchmark runners."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments", "benchmarks"))
import baselines as benchmark  # noqa: E402


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
                     "status": "skipped", "reason": "torch is not installed (pip install torch)"}


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
