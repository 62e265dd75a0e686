"""`fedjax_gen.outputs`: reading a run's files back and the comparison plot."""

import json

import pytest

from fedjax_gen import outputs


def _fake_run(folder, rows, summary=None):
  folder.mkdir()
  (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  if summary is not None:
    outputs.write_json(str(folder / "summary.json"), summary)
  return str(folder)


def test_read_metrics_and_summary(tmp_path):
  rows = [{"round": 1, "train_loss": 2.0}, {"round": 2, "train_loss": 1.5,
                                            "global_accuracy": 0.4}]
  run = _fake_run(tmp_path / "a", rows, {"global_accuracy": 0.4, "wall_time_s": float("nan")})
  assert outputs.read_metrics(run) == rows
  assert outputs.read_summary(run) == {"global_accuracy": 0.4, "wall_time_s": None}
  with pytest.raises(FileNotFoundError, match="holds no run"):
    outputs.read_metrics(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="has not finished"):
    outputs.read_summary(_fake_run(tmp_path / "b", rows))


def test_plot_runs_writes_a_png_and_names_a_missing_metric(tmp_path):
  a = _fake_run(tmp_path / "a", [{"round": r, "global_accuracy": r / 10} for r in (1, 2, 3)])
  b = _fake_run(tmp_path / "b", [{"round": r, "global_accuracy": r / 20,
                                  "personalized_accuracy": 0.5} for r in (1, 2, 3)])
  path = tmp_path / "cmp.png"
  outputs.plot_runs({"fedavg": a, "scaffold": b}, str(path), title="digits")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  outputs.plot_runs({"scaffold": b}, str(path), key="personalized_accuracy")
  with pytest.raises(ValueError, match="Run 'fedavg' .* logged no 'personalized_accuracy'"):
    outputs.plot_runs({"fedavg": a, "scaffold": b}, str(path), key="personalized_accuracy")
  with pytest.raises(ValueError, match="runs is empty"):
    outputs.plot_runs({}, str(path))
