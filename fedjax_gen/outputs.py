"""What a run leaves in its work folder: metrics.jsonl, summary.json, plots, config.json.

Every file is written atomically (a temporary file, then `os.replace`), so a run killed
at any moment leaves either the old or the new version, never half of one.

On several hosts (`jax.distributed`), every process runs the same code on the same shared
work folder; only process 0 writes (`is_primary`), so no two processes race on one file.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from typing import IO, Any, Callable


def is_primary() -> bool:
  """Whether this process writes the run's files: process 0 of a multi-host run (every
  process computes the same values; the others would only race on the same files)."""
  import jax  # here: reading results back (tables, notebooks) need not import JAX
  return jax.process_index() == 0


def atomic_save(path: str, write: Callable[[IO], None], *, text: bool = False,
                suffix: str = "") -> None:
  """`write(f)` into a temporary file beside `path`, then renamed onto it: a reader never
  sees half a file and an interrupted save leaves none. The file's mode follows the umask,
  like any file the user writes. Process 0 only (`is_primary`)."""
  if not is_primary():
    return
  tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                     f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask
  try:
    with os.fdopen(fd, "w" if text else "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write(path: str, text: str) -> None:
  atomic_save(path, lambda f: f.write(text), text=True)


def save_figure(fig, path: str, *, dpi: int) -> None:
  """`fig.savefig(path)` as a PNG, atomically (`atomic_save`), creating its folder."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=dpi), suffix=".png")


def write_marked_section(path: str, name: str, block: str, *, heading: str) -> None:
  """Replaces the `<!-- name:begin -->` .. `<!-- name:end -->` section of the markdown file
  `path` with `block` (which carries those markers), or appends it; a missing file starts
  with `heading`. Written atomically: the results and benchmark reports use it."""
  begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
  text = open(path).read() if os.path.exists(path) else heading + "\n"
  if begin in text:
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
  else:
    text = text.rstrip() + "\n\n" + block + "\n"
  atomic_write(path, text)


def saved_rounds(workdir: str) -> list[int]:
  """The rounds with a finished checkpoint in `workdir` (orbax names a step's folder by its
  number once its save is complete), read without orbax and without writing."""
  folder = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(folder):
    return []
  return sorted(int(d) for d in os.listdir(folder)
                if d.isdigit() and os.path.isdir(os.path.join(folder, d)))


def _clean(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(path: str, obj: dict) -> None:
  atomic_write(path, json.dumps({k: _clean(v) for k, v in obj.items()}, indent=2) + "\n")


class MetricsLog:
  """`metrics.jsonl`: one JSON object per round, and the same scalars as TensorBoard event
  files in the run's folder (`tensorboard --logdir` on a folder of runs shows them side by
  side). On resume, rows after the checkpoint's round are dropped (they will be recomputed,
  identically) and TensorBoard is told to hide the old events from that round on. Both are
  written as each row comes, in this thread: a write that fails (a full disk) raises here."""

  def __init__(self, path: str, *, keep_through_round: int, tensorboard: bool = True):
    self.path = path
    self.rows = []
    if os.path.exists(path) and keep_through_round > 0:
      self.rows = [r for r in _read_rows(path, partial_tail=True)
                   if r["round"] <= keep_through_round]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in self.rows))
    self._events = None
    if tensorboard and is_primary():
      from tensorboardX.event_file_writer import EventsWriter  # synchronous, no thread
      from tensorboardX.proto import event_pb2
      self._events = EventsWriter(os.path.join(os.path.dirname(os.path.abspath(path)),
                                               "events"))
      if keep_through_round:  # TensorBoard's purge: hide older events from this step on
        self._write_event(event_pb2.Event(step=keep_through_round + 1, session_log=(
            event_pb2.SessionLog(status=event_pb2.SessionLog.START))))

  def append(self, row: dict) -> None:
    row = {k: _clean(v) for k, v in row.items()}
    self.rows.append(row)
    if not is_primary():
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
      f.flush()
      os.fsync(f.fileno())
    if self._events is not None:
      from tensorboardX.proto import event_pb2
      from tensorboardX.summary import scalar
      for key, value in row.items():
        if key != "round" and isinstance(value, (int, float)) and not isinstance(value, bool):
          self._write_event(event_pb2.Event(step=row["round"], summary=scalar(key, value)))

  def _write_event(self, event) -> None:
    event.wall_time = time.time()
    self._events.write_event(event)
    self._events.flush()

  def close(self) -> None:
    """Closes the TensorBoard event file (every row is on disk after its `append`)."""
    if self._events is not None:
      events, self._events = self._events, None
      events.close()

  def last(self, key: str):
    for row in reversed(self.rows):
      if row.get(key) is not None:
        return row[key]
    return None


_ACCURACY_SERIES = (("global_accuracy", "global (test set)"),
                    ("personalized_accuracy", "personalized (clients' local test)"),
                    ("new_client_accuracy", "new clients (held out, adapted)"))


def plot_accuracy(rows: list[dict], path: str, title: str = "", *,
                  series=_ACCURACY_SERIES, ylabel: str = "accuracy",
                  loss: str | None = "train_loss") -> None:
  """Metrics against round (default: the global, personalized and new-client accuracies
  that were measured) as a PNG, with the training loss (`loss`, when logged) beside them."""
  curves = [(label, _points(rows, key)) for key, label in series]
  loss_pts = _points(rows, loss) if loss else []
  _save_round_plot([(label, pts) for label, pts in curves if pts], path, title, ylabel,
                   loss_curve=("training loss", loss_pts) if loss_pts else None)


def _points(rows: list[dict], key: str) -> list[tuple]:
  return [(r["round"], r[key]) for r in rows if r.get(key) is not None]


def _save_round_plot(curves, path: str, title: str, ylabel: str, *, loss_curve=None) -> None:
  """`curves` ([(label, [(round, value), ...]), ...]) against round, and `loss_curve`
  (label, points) in a second panel when given; written atomically."""
  from matplotlib.figure import Figure  # no matplotlib.use: a notebook keeps its backend
  fig = Figure(figsize=(10, 4) if loss_curve else (6, 4))
  panels = [(fig.add_subplot(1, 2 if loss_curve else 1, 1), curves, ylabel)]
  if loss_curve:
    panels.append((fig.add_subplot(1, 2, 2), [loss_curve], loss_curve[0]))
  for ax, lines, label in panels:
    for name, pts in lines:
      ax.plot(*zip(*pts), marker="o", markersize=3, label=name)
    ax.set_xlabel("round")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    if lines:
      ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  save_figure(fig, path, dpi=120)


def _read_rows(path: str, *, partial_tail: bool = False) -> list[dict]:
  """The JSON rows of a `.jsonl` file. A last line cut short by a crash mid-write is
  dropped when `partial_tail`; any other bad line is a ValueError naming it."""
  with open(path) as f:
    lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
  rows = []
  for n, (i, line) in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except ValueError:
      if partial_tail and n == len(lines) - 1 and not line.endswith("\n"):
        break  # written up to the crash; the rows after the checkpoint are redone anyway
      raise ValueError(f"{path}, line {i}, is not a JSON row; the file was edited or "
                       "damaged: restore it, or use a new --workdir.") from None
  return rows


def read_metrics(workdir: str) -> list[dict]:
  """The rows of a run's `metrics.jsonl` (one per round), oldest first."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: {workdir!r} holds no run (run "
                            "`fedjax-gen run ... --workdir` or `train_and_evaluate` first).")
  return _read_rows(path, partial_tail=True)


def read_summary(workdir: str) -> dict:
  """A finished run's `summary.json`."""
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: the run in {workdir!r} has not "
                            "finished (a run writes summary.json after its last round).")
  with open(path) as f:
    return json.load(f)


def plot_runs(runs: dict[str, str], path: str, *, key: str = "global_accuracy",
              title: str = "", ylabel: str = "") -> None:
  """One metric against round for several runs (label -> work folder), as a PNG.

  A run that never logged `key` is named in the error (e.g. `personalized_accuracy` of a
  run with test_fraction=0).
  """
  if not runs:
    raise ValueError("runs is empty; pass {label: workdir, ...}.")
  curves = []
  for label, workdir in runs.items():
    rows = read_metrics(workdir)
    pts = _points(rows, key)
    if not pts:
      raise ValueError(f"Run {label!r} ({workdir}) logged no {key!r}; keys it logged: "
                       f"{', '.join(sorted({k for r in rows for k in r}))}.")
    curves.append((label, pts))
  _save_round_plot(curves, path, title, ylabel or key.replace("_", " "))
