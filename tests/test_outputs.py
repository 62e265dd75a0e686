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


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
  """A notebook's inline backend survives a run's plots (no matplotlib.use, no pyplot)."""
  import matplotlib
  import numpy as np

  from fedjax_gen.diffusion.quality import save_sample_grid
  before = matplotlib.get_backend()
  matplotlib.use("svg")  # stands for a notebook's backend
  try:
    run = _fake_run(tmp_path / "a", [{"round": 1, "global_accuracy": 0.5}])
    outputs.plot_runs({"a": run}, str(tmp_path / "runs.png"))
    outputs.plot_accuracy(outputs.read_metrics(run), str(tmp_path / "acc.png"))
    save_sample_grid(np.zeros((4, 8, 8, 1), np.float32), np.array([0, 0, 1, 1]),
                     str(tmp_path / "grid.png"), per_class=2)
    assert matplotlib.get_backend() == "svg"
    for name in ("runs.png", "acc.png", "grid.png"):
      assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name
  finally:
    matplotlib.use(before)


@pytest.mark.parametrize("process", [0, 1])
def test_only_process_zero_writes_the_run_files(tmp_path, monkeypatch, process):
  """On several hosts every process runs the same code on one shared work folder: process 0
  writes, the others keep their values in memory and leave the folder alone."""
  import jax
  import numpy as np

  from fedjax_gen import config as config_lib
  from fedjax_gen.diffusion.generator import generate_cached
  from fedjax_gen.trainer.workdir import open_run
  from tests.augment.fakes import ConstantGenerator

  monkeypatch.setattr(jax, "process_index", lambda *a, **k: process)
  work = tmp_path / "w"
  with open_run(config_lib.base_config(), str(work)) as run:  # every process checks
    run.commit()
  log = outputs.MetricsLog(str(work / "metrics.jsonl"), keep_through_round=0)
  log.append({"round": 1, "global_accuracy": 0.5})
  log.close()
  outputs.write_json(str(work / "summary.json"), {"global_accuracy": 0.5})
  outputs.plot_accuracy(log.rows, str(work / "acc.png"))
  images = generate_cached(ConstantGenerator(), np.array([0, 2]), 0, str(work / "generated"))

  assert log.last("global_accuracy") == 0.5 and images.shape == (2, 2, 2, 1)
  written = sorted(str(p.relative_to(work)) for p in work.rglob("*")
                   if not p.name.startswith("events.out.tfevents."))
  if process == 0:
    assert len(list(work.glob("events.out.tfevents.*"))) == 1  # TensorBoard's copy
    assert written == [".lock", "acc.png", "config.json", "generated", "generated/generated.json",
                       "generated/generated.npz", "generated/generator.json",
                       "metrics.jsonl", "summary.json"]
    assert json.loads((work / "metrics.jsonl").read_text()) == log.rows[0]
  else:
    assert written == ["generated"]
