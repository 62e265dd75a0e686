"""`fedjax-gen report` (runs compared: grouped table and plot), `list`, `--version` and
`python -m fedjax_gen`, on run folders written by hand with known numbers."""

import importlib.metadata
import json
import math
import os
import subprocess
import sys

import pytest

from fedjax_gen import cli, report
from fedjax_gen.trainer import options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = b"\x89PNG\r\n\x1a\n"


def _config(**changes):
  """A run's config.json as `fedjax-gen run` writes it: nested, every key."""
  config = json.loads(options.base_config().to_json())
  config["experiment"] = "quickstart"
  for key, value in changes.items():
    family, _, name = key.rpartition(".")
    (config[family] if family else config)[name] = value
  return config


def _run(folder, config, accuracies, summary=True, **extra):
  """A run folder: `accuracies` logged at rounds 5, 10, ...; the last is the final one."""
  folder.mkdir(parents=True)
  (folder / "config.json").write_text(json.dumps(config))
  rows = [{"round": 5 * (i + 1), "train_loss": 1.0 - a, "global_accuracy": a,
           "elapsed_s": 2.0 * (i + 1)} for i, a in enumerate(accuracies)]
  (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  if summary:
    (folder / "summary.json").write_text(json.dumps({
        "experiment": "quickstart", "algorithm": config["algorithm"],
        "global_accuracy": accuracies[-1], "personalized_accuracy": None,
        "rounds": 5 * len(accuracies), "wall_time_s": 2.0 * len(accuracies),
        "plan": {"mode": "vmap"}, "backend": "cpu", **extra}))
  return str(folder)


@pytest.fixture
def sweep(tmp_path):
  """FedAvg over three seeds, FedProx (prox_mu 0.1) over two, and FedProx (0.01) once."""
  runs = tmp_path / "runs"
  return [
      _run(runs / "fedavg_s0", _config(seed=0), [0.5, 0.80]),
      _run(runs / "fedavg_s1", _config(seed=1, progress=False), [0.6, 0.84]),  # free key
      _run(runs / "fedavg_s2", _config(seed=2), [0.7, 0.82]),
      _run(runs / "prox_s0", _config(algorithm="fedprox", **{"fl.prox_mu": 0.1}), [0.6, 0.90]),
      _run(runs / "prox_s1", _config(algorithm="fedprox", seed=1, **{"fl.prox_mu": 0.1}),
           [0.6, 0.86]),
      _run(runs / "prox_small", _config(algorithm="fedprox", **{"fl.prox_mu": 0.01}),
           [0.5, 0.75]),
  ]


def test_compare_groups_seeds_into_mean_and_sample_std(sweep):
  rows = report.compare(sweep)
  assert [row["keys"] for row in rows] == [
      {"algorithm": "fedavg"}, {"algorithm": "fedprox", "fl.prox_mu": 0.1},
      {"algorithm": "fedprox", "fl.prox_mu": 0.01}]  # prox_mu: FedAvg reads none
  assert [row["n"] for row in rows] == [3, 2, 1]
  fedavg, prox, small = (row["metrics"]["global_accuracy"] for row in rows)
  # (0.80, 0.84, 0.82): mean 0.82, sample std sqrt((0.02^2 + 0.02^2 + 0) / 2) = 0.02
  assert fedavg["mean"] == pytest.approx(0.82) and fedavg["std"] == pytest.approx(0.02)
  # (0.90, 0.86): mean 0.88, sample std sqrt(2 * 0.02^2 / 1) = 0.02 * sqrt(2)
  assert prox["mean"] == pytest.approx(0.88)
  assert prox["std"] == pytest.approx(0.02 * math.sqrt(2))
  assert small == {"mean": 0.75, "std": None, "count": 1, "of": 1}
  assert "personalized_accuracy" not in rows[0]["metrics"]  # null: not measured


def test_report_prints_the_table_and_saves_the_plot(sweep, tmp_path, capsys):
  plot = tmp_path / "out" / "cmp.png"
  assert cli.main(["report", *sweep, "--plot", str(plot)]) == 0
  out, err = capsys.readouterr()
  lines = out.splitlines()
  assert lines[0] == "| algorithm | fl.prox_mu | n | global_accuracy | rounds | wall_time_s |"
  assert lines[1] == "|---|---|---:|---:|---:|---:|"
  assert lines[2] == "| fedavg | - | 3 | 0.82 ± 0.02 | 10 ± 0 | 4 ± 0 |"
  assert lines[3] == "| fedprox | 0.1 | 2 | 0.88 ± 0.02828 | 10 ± 0 | 4 ± 0 |"
  assert lines[4] == "| fedprox | 0.01 | 1 | 0.75 | 10 | 4 |"
  assert "ddof=1" in out
  assert plot.read_bytes()[:8] == PNG
  assert str(plot) in err


def test_report_of_a_parent_folder_finds_its_runs_and_plots_to_report_png(
    sweep, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  assert cli.main(["report", str(tmp_path / "runs"), "--metric", "train_loss"]) == 0
  out, err = capsys.readouterr()
  assert "| fedavg | - | 3 | 0.82 ± 0.02 |" in out
  assert (tmp_path / "report.png").read_bytes()[:8] == PNG
  assert "train_loss plot saved to report.png" in err


def test_an_unfinished_run_counts_at_its_last_logged_values(tmp_path, capsys):
  done = _run(tmp_path / "s0", _config(), [0.5, 0.80])
  going = _run(tmp_path / "s1", _config(seed=1), [0.6, 0.70, 0.76], summary=False)
  rows = report.compare([done, going])
  assert len(rows) == 1 and rows[0]["unfinished"] == [going]
  assert rows[0]["metrics"]["global_accuracy"]["mean"] == pytest.approx(0.78)
  assert rows[0]["metrics"]["rounds"]["mean"] == pytest.approx(12.5)  # 10 and 15
  assert "train_loss" not in rows[0]["metrics"]  # the finished runs' metrics only
  table = report.markdown(rows)
  assert "| quickstart | 2 (1 unfinished) | 0.78 ± 0.02828 |" in table
  assert "unfinished: a run without summary.json" in table


@pytest.mark.parametrize("case", ["missing", "file", "empty", "bad_metric", "no_args"])
def test_report_errors_are_one_line_and_exit_2(case, sweep, tmp_path, capsys):
  args = {"missing": [str(tmp_path / "nope")], "file": [str(tmp_path / "x.txt")],
          "empty": [str(tmp_path / "empty")], "no_args": [],
          "bad_metric": [sweep[0], "--metric", "accuracy", "--plot", str(tmp_path / "p.png")]}
  (tmp_path / "x.txt").write_text("")
  (tmp_path / "empty" / "sub").mkdir(parents=True)
  if case == "no_args":  # argparse's usage error
    with pytest.raises(SystemExit) as e:
      cli.main(["report"])
    assert e.value.code == 2
    return
  assert cli.main(["report", *args[case]]) == 2
  out, err = capsys.readouterr()
  assert out == ""
  assert len(err.strip().splitlines()) == 1 and err.startswith("fedjax-gen: error: ")
  assert {"missing": "does not exist", "file": "is not a run folder",
          "empty": "holds no run", "bad_metric": "No run logged 'accuracy'"}[case] in err
  assert not (tmp_path / "p.png").exists()


def test_compare_of_no_runs_says_so():
  with pytest.raises(ValueError, match="No runs given"):
    report.compare([])


def test_list_gives_each_experiment_a_one_line_description(capsys):
  from fedjax_gen.config import builtin_experiments
  assert cli.main(["list"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert [line.split()[0] for line in lines] == builtin_experiments()
  for line in lines:
    name, description = line.split(None, 1)
    # a whole sentence, not the first line of a wrapped paragraph
    assert len(description) > 20 and description.endswith("."), line
    assert len(line) <= 100, line


def test_list_reads_the_docstrings_without_importing_jax():
  code = ("import sys; from fedjax_gen import cli; cli.main(['list']); "
          "assert 'jax' not in sys.modules, 'list imported jax'")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "quickstart " in result.stdout


def test_python_m_fedjax_gen_prints_the_installed_version():
  result = subprocess.run([sys.executable, "-m", "fedjax_gen", "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == f"fedjax-gen {importlib.metadata.version('fedjax-gen')}"
  result = subprocess.run([sys.executable, "-m", "fedjax_gen", "report", "/no/such/run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr == "fedjax-gen: error: /no/such/run does not exist.\n"
