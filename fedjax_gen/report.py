"""Several runs compared: their final metrics as a Markdown table, seeds pooled into mean
± std, and one metric against round as a plot (`fedjax-gen report RUN_DIR ...`).

    rows = report.compare(["runs/fedavg_s0", "runs/fedavg_s1", "runs/fedprox_s0"])
    print(report.markdown(rows))
    report.plot(rows, "report.png")

Runs whose configs are equal except `seed` and the keys whose role is "free" (how long to
run, progress, speed: `Option.role`) form one group; a key the run's algorithm does not read
(`Option.algorithms`) does not count either. A group's row shows the keys that differ
between groups, n (its runs) and each final metric of `summary.json` as mean ± std over its
runs: the sample std (ddof=1), as papers report seeds; a single value shows alone.

An unfinished run (no `summary.json` yet) is reported, marked, at its last logged values:
each metric's last value in `metrics.jsonl`, `rounds` the last round it logged. Reading
only, the work folders are never written.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from fedjax_gen.outputs import read_metrics, read_summary, save_figure
from fedjax_gen.trainer import options

__all__ = ["DDOF", "compare", "find_runs", "load_run", "markdown", "plot", "plot_metric"]

DDOF = 1  # the std over a group's runs is the sample std
_PREFERRED = ("global_accuracy", "personalized_accuracy", "new_client_accuracy", "train_loss")


def find_runs(paths: list[str]) -> list[str]:
  """The run folders (those holding `config.json`) among `paths`: a path that is not a run
  stands for the runs in its subfolders (a sweep's parent folder). In order, each once."""
  found = []
  for path in paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} does not exist.")
    if not os.path.isdir(path):
      raise ValueError(f"{path} is not a run folder (a folder holding config.json).")
    inside = []
    for folder, subfolders, files in os.walk(path):
      subfolders.sort()
      if "config.json" in files:
        inside.append(folder)
        subfolders[:] = []  # a run's own subfolders (checkpoints, generator) hold no run
    if not inside:
      raise ValueError(f"{path} holds no run: no config.json in it or its subfolders "
                       "(pass the --workdir of a `fedjax-gen run`).")
    found += inside
  seen, runs = set(), []
  for run in found:
    if os.path.realpath(run) not in seen:
      seen.add(os.path.realpath(run))
      runs.append(run)
  return runs


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}).") from None


def _number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def load_run(workdir: str) -> dict:
  """One run folder: {"workdir", "config" (its config.json), "finished", "final" (numeric
  final metrics), "rows" (metrics.jsonl)}. Unfinished: the last logged values."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ValueError(f"{workdir} is not a run folder (no config.json).")
  config = _read_json(path)
  if not isinstance(config, dict):
    raise ValueError(f"{path} holds no config (a JSON object).")
  rows = []
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    rows = read_metrics(workdir)  # a damaged row is a ValueError naming its line
  finished = os.path.exists(os.path.join(workdir, "summary.json"))
  if finished:
    try:
      summary = read_summary(workdir)
    except json.JSONDecodeError as e:
      raise ValueError(f"{os.path.join(workdir, 'summary.json')} is not valid JSON "
                       f"({e}).") from None
  else:
    summary = {}
    for row in rows:
      summary.update({k: v for k, v in row.items() if v is not None})
    summary = {{"round": "rounds", "elapsed_s": "wall_time_s"}.get(k, k): v
               for k, v in summary.items()}
  final = {k: v for k, v in summary.items() if _number(v)}
  return {"workdir": workdir, "config": config, "finished": finished, "final": final,
          "rows": rows}


def _identity(config: dict) -> dict:
  """The config keys that make runs different experiments: all but `seed`, the "free" keys
  and the keys the run's algorithm does not read; a key added since the run, its default."""
  return {k: v for k, v in options.identity(config).items() if k != "seed"}


def _stats(values: list[float], n: int) -> dict:
  mean = sum(values) / len(values)
  std = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - DDOF))
         if len(values) > DDOF else None)
  return {"mean": mean, "std": std, "count": len(values), "of": n}


def compare(paths: list[str]) -> list[dict]:
  """The runs in `paths` (run folders, or folders holding runs), grouped: one row per group,
  in the order of their first runs, as {"keys": {key: value} (the keys that tell groups
  apart; a key the group lacks is absent), "n", "unfinished" (those runs' folders),
  "metrics": {name: {"mean", "std" (ddof=`DDOF`; None for one value), "count" (runs that
  measured it), "of" (n)}}, "runs": [`load_run` of each]}."""
  if not paths:
    raise ValueError("No runs given; pass run folders (the --workdir of `fedjax-gen run`).")
  runs = [load_run(workdir) for workdir in find_runs(paths)]
  groups: dict[str, dict] = {}
  for run in runs:
    identity = _identity(run["config"])
    key = json.dumps(identity, sort_keys=True, default=str)
    groups.setdefault(key, {"identity": identity, "runs": []})["runs"].append(run)
  groups = list(groups.values())
  columns = _differing([g["identity"] for g in groups])
  if not columns and "experiment" in groups[0]["identity"]:
    columns = ["experiment"]
  finished = [r for r in runs if r["finished"]]
  names = _metric_names(finished or runs)
  rows = []
  for g in groups:
    n = len(g["runs"])
    metrics = {}
    for name in names:
      values = [r["final"][name] for r in g["runs"] if name in r["final"]]
      if values:
        metrics[name] = _stats(values, n)
    rows.append({"keys": {k: g["identity"][k] for k in columns if k in g["identity"]},
                 "n": n, "unfinished": [r["workdir"] for r in g["runs"] if not r["finished"]],
                 "metrics": metrics, "runs": g["runs"]})
  return rows


def _differing(identities: list[dict]) -> list[str]:
  """The keys whose value (or presence) is not the same in every identity: `experiment`
  first, then in declaration order (`options.all_options`), then the rest by name."""
  keys = set().union(*identities)
  differ = {k for k in keys
            if len({json.dumps(i.get(k, "\0missing"), default=str) for i in identities}) > 1}
  order = ["experiment", *options.all_options()]
  return ([k for k in order if k in differ]
          + sorted(differ - set(order)))


def _metric_names(runs: list[dict]) -> list[str]:
  names = []
  for run in runs:
    names += [k for k in run["final"] if k not in names]
  return names


def _cell(value) -> str:
  text = value if isinstance(value, str) else json.dumps(value, default=str)
  return text.replace("|", "\\|").replace("\n", " ")


def _num(x: float) -> str:
  if float(x).is_integer() and abs(x) < 1e15:
    return str(int(x))
  return f"{x:.4g}"


def _mean_std(stat: dict) -> str:
  text = _num(stat["mean"])
  if stat["std"] is not None:
    text += f" ± {_num(stat['std'])}"
  if stat["count"] < stat["of"]:
    text += f" (n={stat['count']})"
  return text


def markdown(rows: list[dict]) -> str:
  """`compare`'s rows as a Markdown table, with a note on what the numbers are."""
  columns = list(dict.fromkeys(k for row in rows for k in row["keys"]))
  names = list(dict.fromkeys(m for row in rows for m in row["metrics"]))
  lines = ["| " + " | ".join([*columns, "n", *names]) + " |",
           "|" + "|".join(["---"] * len(columns) + ["---:"] * (1 + len(names))) + "|"]
  for row in rows:
    n = str(row["n"]) + (f" ({len(row['unfinished'])} unfinished)" if row["unfinished"]
                         else "")
    cells = [_cell(row["keys"][k]) if k in row["keys"] else "-" for k in columns]
    cells += [n] + [_mean_std(row["metrics"][m]) if m in row["metrics"] else "-"
                    for m in names]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", f"mean ± std over a group's runs (sample std, ddof={DDOF}); a group: runs "
            "whose configs differ only in `seed`, [free] keys (`fedjax-gen config`) and "
            "keys their algorithm does not read."]
  if any(row["unfinished"] for row in rows):
    lines.append("unfinished: a run without summary.json, at its last logged values "
                 "(metrics.jsonl).")
  return "\n".join(lines)


def _label(row: dict) -> str:
  keys = ", ".join(f"{k}={_cell(v)}" for k, v in row["keys"].items()) or "runs"
  return f"{keys} (n={row['n']})"


def plot_metric(rows: list[dict], metric: str | None = None) -> str:
  """`metric`, checked that some run logged it; None: the first of global, personalized,
  new-client accuracy and train loss that a run logged."""
  logged = list(dict.fromkeys(k for row in rows for run in row["runs"] for r in run["rows"]
                              for k, v in r.items() if k != "round" and _number(v)))
  if metric is None:
    metric = next((k for k in _PREFERRED if k in logged), None)
    if metric is None:
      raise ValueError("No run logged a metric to plot (metrics.jsonl is empty or missing)."
                       if not logged else f"No run logged {', '.join(_PREFERRED)}; pass "
                       f"--metric, one of: {', '.join(logged)}.")
  elif metric not in logged:
    raise ValueError(f"No run logged {metric!r}; metrics logged: "
                     f"{', '.join(logged) or 'none'}.")
  return metric


def plot(rows: list[dict], path: str, metric: str | None = None) -> list[str]:
  """`metric` (see `plot_metric`) against round, one curve per group: the mean over its
  runs at each round, shaded from their min to their max; a PNG at `path`. Returns the
  labels of the groups that never logged it (left out)."""
  import numpy as np
  from matplotlib.figure import Figure  # no matplotlib.use: a notebook keeps its backend
  metric = plot_metric(rows, metric)
  fig = Figure(figsize=(7, 4.5))
  ax = fig.add_subplot()
  missing = []
  for row in rows:
    by_round: dict[Any, list[float]] = {}
    for run in row["runs"]:
      for r in run["rows"]:
        if _number(r.get(metric)):
          by_round.setdefault(r["round"], []).append(r[metric])
    if not by_round:
      missing.append(_label(row))
      continue
    x = sorted(by_round)
    ys = [np.asarray(by_round[k], float) for k in x]
    (line,) = ax.plot(x, [y.mean() for y in ys], marker="o", markersize=3, label=_label(row))
    if row["n"] > 1:
      ax.fill_between(x, [y.min() for y in ys], [y.max() for y in ys],
                      color=line.get_color(), alpha=0.2, linewidth=0)
  ax.set_xlabel("round")
  ax.set_ylabel(metric.replace("_", " "))
  ax.set_title(f"{metric.replace('_', ' ')}: mean over seeds, band min..max")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  save_figure(fig, path, dpi=120)
  return missing
