"""Shared driver of the results tables: run every (split, algorithm) cell of a built-in
experiment, one at a time, each in its own work folder, then write the table beside the
published numbers into `RESULTS.md` and a plot into `results/NAME.png`.

Where: into `--out DIR` (default `./fedjax-gen-out/<script>`), printing each file written;
`--update-reports` rewrites the committed `experiments/RESULTS.md` and
`experiments/results/` instead (`fedjax_gen_bench/reports.py`). Re-running resumes cells
from their checkpoints (`--root`), and a larger --rounds extends finished cells.
`--seeds 0 1 2` runs each cell once per seed (seed 0 in `ROOT/SPLIT/ALG`, seed k in
`ROOT/SPLIT/ALG-seedk`); the table then shows the mean and standard deviation over seeds.
The per-round metrics of every cell are kept in `results/NAME.json` (the output folder's,
which starts from the committed one), so `--report-only` rebuilds the table and plot
without training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(HERE))  # fedjax_gen_bench of this checkout, if not installed
from fedjax_gen_bench import reports as reports_lib  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Table:
  name: str                      # built-in experiment; results/NAME.json, results/NAME.png
  title: str
  setup: str                     # a paragraph: the setup and where the published numbers are from
  metric: str                    # the summary.json key in the table (a fraction)
  splits: dict                   # split key -> (label, [KEY=VALUE overrides])
  algorithms: tuple
  published: dict                # split key -> {algorithm: published %}
  extra_metrics: tuple = ()      # further summary keys shown in brackets, e.g. new-client acc
  target: float | None = None    # if set, each cell also shows the first round reaching it
  cost_keys: tuple = ()          # summary keys in seconds, listed per cell below the table

  @property
  def script(self):
    """The script that runs this table, `experiments/<script>.py`: its output folder."""
    return self.name.split("_")[0] + "_bench"

  @property
  def json_path(self):  # relative to the reports' folder (`reports_lib.Reports`)
    return f"results/{self.name}.json"

  @property
  def plot_path(self):
    return f"results/{self.name}.png"


def run_cell(table: Table, split: str, algorithm: str, rounds: int, root: str,
             extra: list[str], seed: int = 0) -> dict:
  from fedjax_gen import config as config_lib
  from fedjax_gen.trainer.train import train_and_evaluate
  overrides = table.splits[split][1] + [f"algorithm={algorithm}", f"rounds={rounds}"] + extra
  if seed:
    overrides.append(f"seed={seed}")
  config = config_lib.apply_overrides(config_lib.load_config(table.name), overrides)
  workdir = os.path.join(root, split, algorithm + (f"-seed{seed}" if seed else ""))
  summary = train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  curve = [(r["round"], r[table.metric]) for r in rows if r.get(table.metric) is not None]
  return {"summary": summary, "curve": curve,
          "command": f"fedjax-gen run {table.name} " + " ".join(overrides) + " --workdir W"}


def seed_cells(cell: dict | None) -> list[dict]:
  """The finished runs of a cell: seed 0 (the cell itself) and those in `more_seeds`."""
  if not cell:
    return []
  cells = [cell] + [cell["more_seeds"][k] for k in sorted(cell.get("more_seeds", {}), key=int)]
  return [c for c in cells if c.get("summary")]


def first_round_reaching(curve, target: float) -> int | None:
  return next((r for r, v in curve if v is not None and v >= target), None)


def _mean_text(values, scale=100.0) -> str:
  values = [scale * v for v in values]
  mean = sum(values) / len(values)
  if len(values) == 1:
    return f"{mean:.1f}"
  std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
  return f"{mean:.1f} ± {std:.1f}"


def _cell_text(table: Table, runs: list) -> str:
  """The measured cell: mean (± std over seeds) [rounds, seeds, extra metrics, target]."""
  rounds = sorted({c["summary"]["rounds"] for c in runs})
  notes = [f"{'/'.join(map(str, rounds))} r"]
  if len(runs) > 1:
    notes.append(f"{len(runs)} seeds")
  for k in table.extra_metrics:
    values = [c["summary"][k] for c in runs if c["summary"].get(k) is not None]
    if values:
      notes.append(f"{k.split('_')[0]} {_mean_text(values)}")
  if table.target is not None:
    hits = [first_round_reaching(c["curve"], table.target) for c in runs]
    notes.append(f"{100 * table.target:.0f}% at r " + "/".join("—" if h is None else str(h)
                                                              for h in hits))
  metric = _mean_text([c["summary"][table.metric] for c in runs])
  return f"**{metric}** [{', '.join(notes)}]"


def protocol_rounds(table: Table) -> int:
  """The rounds of the published protocol: the built-in config's `rounds`."""
  from fedjax_gen import config as config_lib
  return config_lib.load_config(table.name).rounds


def write_report(table: Table, results: dict, reports: reports_lib.Reports) -> None:
  """Three tables: the published figures; ours where a cell ran the whole protocol (the
  only ones to compare with them); ours from partial runs (fewer rounds), apart."""
  import jax
  begin, end = f"<!-- {table.name}:begin -->", f"<!-- {table.name}:end -->"
  full_rounds = protocol_rounds(table)
  header = ["| split | " + " | ".join(table.algorithms) + " |",
            "|---" * (len(table.algorithms) + 1) + "|"]
  published, full, partial = list(header), list(header), list(header)
  any_full = any_partial = False
  for split, (label, _) in table.splits.items():
    row_pub, row_full, row_partial = [], [], []
    for a in table.algorithms:
      pub = table.published[split].get(a)
      row_pub.append("—" if pub is None else f"{pub}")
      runs = [c for c in seed_cells(results.get(split, {}).get(a))
              if c["summary"].get(table.metric) is not None]
      done = [c for c in runs if c["summary"]["rounds"] >= full_rounds]
      short = [c for c in runs if c["summary"]["rounds"] < full_rounds]
      row_full.append(_cell_text(table, done) if done else "—")
      row_partial.append(_cell_text(table, short) if short else "—")
      any_full |= bool(done)
      any_partial |= bool(short)
    published.append(f"| {label} | " + " | ".join(row_pub) + " |")
    full.append(f"| {label} | " + " | ".join(row_full) + " |")
    partial.append(f"| {label} | " + " | ".join(row_partial) + " |")
  extras = "".join(f", {k}" for k in table.extra_metrics) + (
      f", first round at {100 * table.target:.0f}% per seed ('—': not reached)"
      if table.target is not None else "")
  lines = [begin, f"## {table.title}", "", table.setup, "",
           f"**Published** (after {full_rounds} rounds):", "", *published, "",
           f"**fedjax-gen, the whole protocol** ({full_rounds} rounds; mean ± std over seeds "
           f"where several) [rounds run{extras}]:", "",
           *(full if any_full else ["Not run yet: no cell has reached "
                                    f"{full_rounds} rounds on this CPU."])]
  if any_partial:
    lines += ["", f"**fedjax-gen, partial runs** (fewer than {full_rounds} rounds: not "
              f"comparable with the published figures) [rounds run{extras}]:", "", *partial]
  costs = [f"{label} {alg}: " + ", ".join(
               f"{k} {_mean_text([c['summary'][k] for c in seed_cells(cell)], 1.0)}"
               for k in table.cost_keys if seed_cells(cell) and
               all(c["summary"].get(k) is not None for c in seed_cells(cell)))
           for split, (label, _) in table.splits.items() for alg in table.algorithms
           for cell in [results.get(split, {}).get(alg)]
           if any(c["summary"].get(k) for c in seed_cells(cell) for k in table.cost_keys)]
  if costs:
    lines += ["", "Cost in seconds (mean ± std over seeds): " + "; ".join(costs) + "."]
  times = {}  # algorithm -> seconds per round of each of its runs
  for split_cells in results.values():
    for alg, cell in split_cells.items():
      times.setdefault(alg, []).extend(
          c["summary"]["wall_time_s"] / c["summary"]["rounds"] for c in seed_cells(cell)
          if c["summary"].get("wall_time_s"))
  if any(times.values()):
    lines += ["", f"Wall time per round on this 2-core CPU (jax {jax.__version__}, other work "
              "sharing the CPU at times; median over an algorithm's runs): "
              + ", ".join(f"{alg} {statistics.median(times[alg]):.0f} s"
                          for alg in table.algorithms if times.get(alg)) + "."]
  lines += ["", f"![{table.metric} per round](results/{table.name}.png)", "",
            f"Re-run or extend: `python experiments/{table.script}.py "
            "--rounds N --update-reports`; one cell: the `command` of that cell in "
            f"`results/{table.name}.json`.", end]
  reports.write_section("RESULTS.md", table.name, "\n".join(lines), heading="# Results")
  _plot(table, results, reports)


def _plot(table: Table, results: dict, reports: reports_lib.Reports) -> None:
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure
  width = 3.2 * len(table.splits) + 1.2  # panels and, on the right, the legend
  fig = Figure(figsize=(width, 3.2))
  cmap = matplotlib.colormaps["tab20" if len(table.algorithms) > 10 else "tab10"]
  colors = {alg: cmap(j) for j, alg in enumerate(table.algorithms)}  # same in every panel
  handles = {}
  for i, (split, (label, _)) in enumerate(table.splits.items()):
    ax = fig.add_subplot(1, len(table.splits), i + 1)
    for alg in table.algorithms:
      cell = results.get(split, {}).get(alg)
      if cell and cell.get("curve"):  # seed 0
        handles[alg], = ax.plot(*zip(*cell["curve"]), marker="o", markersize=3, label=alg,
                                color=colors[alg])
    if not ax.lines:
      ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(label)
    ax.set_ylim(0, 1)
    ax.set_xlabel("round")
    ax.grid(alpha=0.3)
    if i == 0:
      ax.set_ylabel(table.metric.replace("_", " "))
  if handles:
    fig.legend([handles[a] for a in table.algorithms if a in handles],
               [a for a in table.algorithms if a in handles], loc="center right", fontsize=7)
  fig.tight_layout(rect=(0, 0, 1 - 1.2 / width, 1))
  reports.save_figure(table.plot_path, fig, dpi=110)


def main(table: Table, argv=None, doc: str = "") -> int:
  parser = argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rounds", type=int, required=False)
  parser.add_argument("--splits", nargs="+", default=list(table.splits),
                      choices=list(table.splits))
  parser.add_argument("--algorithms", nargs="+", default=list(table.algorithms),
                      choices=table.algorithms)
  parser.add_argument("--seeds", nargs="+", type=int, default=[0])
  parser.add_argument("--root", default=os.path.join(HERE, "runs", table.name))
  parser.add_argument("--report-only", action="store_true")
  parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides",
                      help="extra config overrides for every cell (e.g. progress=false)")
  reports_lib.add_arguments(parser, table.script)
  args = parser.parse_args(argv)
  reports = reports_lib.Reports.from_args(args, table.script)
  results = {}
  previous = reports.existing(table.json_path)  # the output folder's, else the committed
  if previous:
    with open(previous) as f:
      results = json.load(f)
  if not args.report_only:
    from fedjax_gen import config as config_lib
    rounds = args.rounds or config_lib.load_config(table.name).rounds
    for seed in args.seeds:
      for split in args.splits:
        for alg in args.algorithms:
          print(f"== {table.name} {split} {alg} seed {seed} ({rounds} rounds)", flush=True)
          cell = run_cell(table, split, alg, rounds, args.root, args.overrides, seed)
          cells = results.setdefault(split, {})
          if seed:
            cells.setdefault(alg, {}).setdefault("more_seeds", {})[str(seed)] = cell
          else:
            cells[alg] = {**cell, "more_seeds": cells.get(alg, {}).get("more_seeds", {})}
          reports.write_text(table.json_path, json.dumps(results, indent=1) + "\n")
          write_report(table, results, reports)
  write_report(table, results, reports)
  return 0
