"""What a run leaves in its work folder: metrics.jsonl, summary.json, plots, config.json.

Every file is written atomically (a temporary file, then `os.replace`), so a run killed
at any moment leaves either the old or the new version, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any


def atomic_write(path: str, text: str) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
  with os.fdopen(fd, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _clean(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(path: str, obj: dict) -> None:
  atomic_write(path, json.dumps({k: _clean(v) for k, v in obj.items()}, indent=2) + "\n")


class MetricsLog:
  """`metrics.jsonl`: one JSON object per round. On resume, rows after the checkpoint's
  round are dropped (they will be recomputed, identically)."""

  def __init__(self, path: str, *, keep_through_round: int):
    self.path = path
    self.rows = []
    if os.path.exists(path) and keep_through_round > 0:
      with open(path) as f:
        self.rows = [r for r in map(json.loads, filter(str.strip, f))
                     if r["round"] <= keep_through_round]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in self.rows))

  def append(self, row: dict) -> None:
    row = {k: _clean(v) for k, v in row.items()}
    self.rows.append(row)
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
      f.flush()
      os.fsync(f.fileno())

  def last(self, key: str):
    for row in reversed(self.rows):
      if row.get(key) is not None:
        return row[key]
    return None


_ACCURACY_SERIES = (("global_accuracy", "global (test set)"),
                    ("personalized_accuracy", "personalized (clients' local test)"))


def plot_accuracy(rows: list[dict], path: str, title: str = "", *,
                  series=_ACCURACY_SERIES, ylabel: str = "accuracy") -> None:
  """Metrics against round (default: global and personalized accuracy), as a PNG."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot()
  for key, label in series:
    pts = [(r["round"], r[key]) for r in rows if r.get(key) is not None]
    if pts:
      ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
  ax.set_xlabel("round")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".tmp-plot.png")
  fig.savefig(tmp, dpi=120)
  os.replace(tmp, path)
