"""Shared driver of the results tables: run every (split, algorithm) cell of a built-in
experiment, one at a time, each in its own work folder, then write the table beside the
published numbers into `experiments/RESULTS.md` and a plot into `experiments/results/`.

Re-running resumes cells from their checkpoints, and a larger --rounds extends finished
cells. The per-round metrics of every cell are kept in `experiments/results/NAME.json`, so
`--report-only` rebuilds the table and plot without training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


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

  @property
  def json_path(self):
    return os.path.join(HERE, "results", f"{self.name}.json")

  @property
  def plot_path(self):
    return os.path.join(HERE, "results", f"{self.name}.png")


def run_cell(table: Table, split: str, algorithm: str, rounds: int, root: str,
             extra: list[str]) -> dict:
  from fedjax_gen import config as config_lib
  from fedjax_gen.run import train_and_evaluate
  overrides = table.splits[split][1] + [f"algorithm={algorithm}", f"rounds={rounds}"] + extra
  config = config_lib.apply_overrides(config_lib.load_config(table.name), overrides)
  workdir = os.path.join(root, split, algorithm)
  summary = train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  curve = [(r["round"], r[table.metric]) for r in rows if r.get(table.metric) is not None]
  return {"summary": summary, "curve": curve,
          "command": f"fedjax-gen run {table.name} " + " ".join(overrides) + " --workdir W"}


def _cell_text(table: Table, cell: dict | None, published) -> str:
  pub = "—" if published is None else f"{published}"
  if not cell or cell["summary"].get(table.metric) is None:
    return f"{pub} / not run"
  s = cell["summary"]
  extra = "".join(f", {k.split('_')[0]} {100 * s[k]:.1f}" for k in table.extra_metrics
                  if s.get(k) is not None)
  return f"{pub} / **{100 * s[table.metric]:.1f}** [{s['rounds']} r{extra}]"


def write_report(table: Table, results: dict) -> None:
  import jax
  from fedjax_gen.outputs import atomic_write
  begin, end = f"<!-- {table.name}:begin -->", f"<!-- {table.name}:end -->"
  lines = [begin, f"## {table.title}", "", table.setup, "",
           "Each cell: published / **measured** [rounds run"
           + "".join(f", {k}" for k in table.extra_metrics) + "].", "",
           "| split | " + " | ".join(table.algorithms) + " |",
           "|---" * (len(table.algorithms) + 1) + "|"]
  for split, (label, _) in table.splits.items():
    cells = [_cell_text(table, results.get(split, {}).get(a), table.published[split].get(a))
             for a in table.algorithms]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  times = [c["summary"]["wall_time_s"] / c["summary"]["rounds"]
           for s in results.values() for c in s.values() if c["summary"].get("wall_time_s")]
  if times:
    lines += ["", f"Wall time per round on this 2-core CPU (jax {jax.__version__}, other work "
              f"sharing the CPU at times): {min(times):.0f}-{max(times):.0f} s."]
  lines += ["", f"![{table.metric} per round](results/{table.name}.png)", "",
            f"Re-run or extend: `python experiments/{table.name.split('_')[0]}_bench.py "
            "--rounds N`; one cell: the `command` of that cell in "
            f"`results/{table.name}.json`.", end]
  block = "\n".join(lines)
  path = os.path.join(HERE, "RESULTS.md")
  text = open(path).read() if os.path.exists(path) else "# Results\n"
  if begin in text:
    text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
  else:
    text = text.rstrip() + "\n\n" + block + "\n"
  atomic_write(path, text)
  _plot(table, results)


def _plot(table: Table, results: dict) -> None:
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure
  fig = Figure(figsize=(3.2 * len(table.splits), 3.2))
  for i, (split, (label, _)) in enumerate(table.splits.items()):
    ax = fig.add_subplot(1, len(table.splits), i + 1)
    for alg in table.algorithms:
      cell = results.get(split, {}).get(alg)
      if cell and cell["curve"]:
        ax.plot(*zip(*cell["curve"]), marker="o", markersize=3, label=alg)
    ax.set_title(label)
    ax.set_ylim(0, 1)
    ax.set_xlabel("round")
    ax.grid(alpha=0.3)
    if i == 0:
      ax.set_ylabel(table.metric.replace("_", " "))
    if i == 0 and ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=6)
  fig.tight_layout()
  tmp = table.plot_path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  os.replace(tmp, table.plot_path)


def main(table: Table, argv=None, doc: str = "") -> int:
  parser = argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rounds", type=int, required=False)
  parser.add_argument("--splits", nargs="+", default=list(table.splits),
                      choices=list(table.splits))
  parser.add_argument("--algorithms", nargs="+", default=list(table.algorithms),
                      choices=table.algorithms)
  parser.add_argument("--root", default=os.path.join(HERE, "runs", table.name))
  parser.add_argument("--report-only", action="store_true")
  parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides",
                      help="extra config overrides for every cell (e.g. progress=false)")
  args = parser.parse_args(argv)
  from fedjax_gen.outputs import atomic_write
  results = {}
  if os.path.exists(table.json_path):
    with open(table.json_path) as f:
      results = json.load(f)
  if not args.report_only:
    from fedjax_gen import config as config_lib
    rounds = args.rounds or config_lib.load_config(table.name).rounds
    os.makedirs(os.path.dirname(table.json_path), exist_ok=True)
    for split in args.splits:
      for alg in args.algorithms:
        print(f"== {table.name} {split} {alg} ({rounds} rounds)", flush=True)
        results.setdefault(split, {})[alg] = run_cell(table, split, alg, rounds, args.root,
                                                      args.overrides)
        atomic_write(table.json_path, json.dumps(results, indent=1) + "\n")
        write_report(table, results)
  write_report(table, results)
  return 0
