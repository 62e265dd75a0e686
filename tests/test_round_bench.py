"""fedjax_gen_bench/round_bench.py (`fedjax-gen bench`): runners timed interleaved, each in
its process; runners whose package is missing skipped with one line."""

import pytest

from fedjax_gen_bench import round_bench as rb


def test_measure_group_times_each_worker_and_reports_a_failing_one():
  specs = [{"model": "mlp", "clients": 2, "runner": "jax_loop", "repeats": 2},
           {"model": "mlp", "clients": 2, "runner": "numpy_loop", "repeats": 2}]
  ok, failed = rb.measure_group(specs, timeout=300)
  assert ok["status"] == "ok" and len(ok["round_s_all"]) == 2 and ok["round_s"] > 0
  assert ok["peak_rss_mb"] > 0 and 0 < ok["cpu_share"] and ok["info"]["style"] == "jitted step"
  assert failed["status"] == "failed" and "unknown runner 'numpy_loop'" in failed["reason"]


def test_a_runner_whose_package_is_missing_is_skipped_with_one_line(monkeypatch, capsys):
  monkeypatch.setattr(rb, "missing_package", lambda r: {"torch_loop": "torch",
                                                        "fedjax": "fedjax"}.get(r))
  kept = rb.available_runners(["fedjax_gen_auto", "torch_loop", "jax_loop", "fedjax"])
  assert kept == ["fedjax_gen_auto", "jax_loop"]
  lines = capsys.readouterr().out.splitlines()
  assert [line.split()[0] for line in lines] == ["torch_loop", "fedjax"]
  assert all('pip install "fedjax-gen[bench]"' in line and 'pip install -e ".[bench]"' in line
             for line in lines)


def test_help_names_fedjax_gen_bench_and_the_bench_extra(monkeypatch, capsys):
  monkeypatch.setattr(rb, "missing_package", lambda r: "torch" if r == "torch_loop" else None)
  with pytest.raises(SystemExit) as exit_:
    rb.main(["--help"])
  assert exit_.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: fedjax-gen bench")
  assert "Not installed here: torch (torch_loop)" in out and "fedjax-gen[bench]" in out
  assert "--update-reports" in out and "fedjax-gen-out/round_bench" in out
