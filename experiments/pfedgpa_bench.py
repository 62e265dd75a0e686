"""pFedGPA on Fashion-MNIST (`fedjax_gen/configs/pfedgpa_fmnist.py`): personalized and
new-client accuracy against FedAvg, FedAvg+FT, FedPer, FedRep, Ditto and pFedMe over seeds,
ablations of the diffusion (plain averaging, no aggregation, inversion depth s, buffer
size), and the server's diffusion time per round beside the clients' local training.

Every cell runs `train_and_evaluate` exactly as `fedjax-gen run pfedgpa_fmnist ...` (its
command is stored with its result), in its own work folder, so re-running resumes cells
and a larger --rounds extends them. Results go to `results/pfedgpa_fmnist.json`, the table
block into `RESULTS.md`, the plot to `results/pfedgpa_fmnist.png`, all in `--out` (default
`./fedjax-gen-out/pfedgpa_bench`, each path printed; earlier results there, else the
committed ones, are resumed); `--update-reports` writes the committed
`experiments/RESULTS.md` and `experiments/results/` instead.

    python experiments/pfedgpa_bench.py                              # paper-length (GPU)
    python experiments/pfedgpa_bench.py --rounds 5 --seeds 0 --splits dir0.1     # reduced
    python experiments/pfedgpa_bench.py --rounds 5 --seeds 0 --ablations only
    python experiments/pfedgpa_bench.py --report-only
    python experiments/pfedgpa_bench.py --rounds 5 --set local_epochs=1   # a cheaper setup
    python experiments/pfedgpa_bench.py --report-only --update-reports    # the committed one

Reduced runs (fewer rounds, fewer seeds, extra overrides) are recorded per cell and
shown in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(HERE))  # fedjax_gen_bench of this checkout, if not installed
from fedjax_gen_bench import reports as reports_lib  # noqa: E402

SCRIPT = "pfedgpa_bench"  # its output folder, ./fedjax-gen-out/pfedgpa_bench
NAME = "pfedgpa_fmnist"
JSON_PATH = f"results/{NAME}.json"  # relative to the reports' folder
SPLITS = {"dir0.1": ("Dir(0.1)", ["partition=dirichlet", "alpha=0.1"]),
          "pat": ("pathological (#C=2)", ["partition=label_k", "classes_per_client=2"])}
ALGORITHMS = ("pfedgpa", "fedavg", "fedavg_ft", "fedper", "fedrep", "ditto", "pfedme")
# Ablations of pFedGPA on Dir(0.1): name -> (label, overrides).
ABLATIONS = {
    "mean": ("no diffusion: plain averaging (FedAvg)", ["pfedgpa.aggregation=mean"]),
    "identity": ("no aggregation: own upload (local)", ["pfedgpa.aggregation=identity"]),
    "s5": ("inversion depth s=5", ["pfedgpa.s=5"]),
    "s50": ("inversion depth s=50", ["pfedgpa.s=50"]),
    "buf16": ("buffer 16 (one round)", ["pfedgpa.buffer=16"]),
    "buf64": ("buffer 64 (four rounds)", ["pfedgpa.buffer=64"]),
    "guide_as_written": ("newcomer guidance as written", ["pfedgpa.guidance=as_written"]),
}
METRICS = ("personalized_accuracy", "new_client_accuracy", "global_accuracy")


def cell_key(split, variant, seed):
  return f"{split}/{variant}/seed{seed}"


def run_cell(split, variant, seed, rounds, root, extra):
  from fedjax_gen import config as config_lib
  from fedjax_gen.outputs import read_metrics
  from fedjax_gen.trainer.train import train_and_evaluate
  if variant in ABLATIONS:
    algo = ["algorithm=pfedgpa"] + ABLATIONS[variant][1]
  else:
    algo = [f"algorithm={variant}"]
  overrides = SPLITS[split][1] + algo + [f"seed={seed}", f"rounds={rounds}"] + extra
  config = config_lib.apply_overrides(config_lib.load_config(NAME), overrides)
  workdir = os.path.join(root, split, variant, f"seed{seed}")
  summary = train_and_evaluate(config, workdir)
  rows = read_metrics(workdir)
  curves = {m: [(r["round"], r[m]) for r in rows if r.get(m) is not None] for m in METRICS}
  return {"summary": summary, "curves": curves, "overrides": extra, "rounds": rounds,
          "command": f"fedjax-gen run {NAME} " + " ".join(overrides) + " --workdir W"}


def _agg(results, split, variant, metric):
  vals = [c["summary"].get(metric) for k, c in results.items()
          if k.startswith(f"{split}/{variant}/") and c["summary"].get(metric) is not None]
  return np.asarray(vals, float)


def _fmt(vals):
  if vals.size == 0:
    return "not run"
  if vals.size == 1:
    return f"{100 * vals[0]:.1f}"
  return f"{100 * vals.mean():.1f} ± {100 * vals.std():.1f}"


def _setup_of(results, split, variant):
  cells = [c for k, c in results.items() if k.startswith(f"{split}/{variant}/")]
  if not cells:
    return ""
  rounds = sorted({c["rounds"] for c in cells})
  extra = sorted({" ".join(c["overrides"]) for c in cells if c["overrides"]})
  return (f"{len(cells)} seed{'s' * (len(cells) > 1)}, {'/'.join(map(str, rounds))} r"
          + (f", {'; '.join(extra)}" if extra else ""))


def _timing(results, split, variant):
  s = [c["summary"] for k, c in results.items() if k.startswith(f"{split}/{variant}/")
       and c["summary"].get("server_s_per_round") is not None]
  if not s:
    return "—"
  server = np.mean([x["server_s_per_round"] for x in s])
  client = np.mean([x["client_s_per_round"] for x in s])
  return f"{server:.1f} / {client:.1f} s ({server / client:.2f})"


def write_report(results, reports: reports_lib.Reports):
  import jax
  begin, end = f"<!-- {NAME}:begin -->", f"<!-- {NAME}:end -->"
  lines = [begin, "## pFedGPA, Fashion-MNIST (personalized and new-client accuracy, %)", "",
           "Setup of `fedjax_gen/configs/pfedgpa_fmnist.py`: PFLlib's client split (20 clients, "
           "75/25 local train/test) with FedPAC-like training (5 local epochs, batch 50, SGD lr "
           "0.01 momentum 0.5, conv16-conv32-fc128); 4 clients (20%) held out as new clients, "
           "the other 16 all participating. Personalized accuracy: each training client's "
           "model on its local test split, mean over clients; new-client accuracy: the held-"
           "out clients after each algorithm's newcomer recipe (`personalized.newcomer_steps=20` local "
           "steps; pFedGPA: 2 initialisation rounds with guided denoising). Cells: mean ± std "
           "over seeds; the setup column says how many seeds and rounds were run (a CPU run "
           "is REDUCED: few rounds; the paper-length runs are for a GPU). pFedGPA's paper "
           "reports no FMNIST number checkable here (no public code).", "",
           "| split | algorithm | personalized | new client | global | run | server / client s per round (ratio) |",
           "|---|---|---|---|---|---|---|"]
  for split, (label, _) in SPLITS.items():
    for alg in ALGORITHMS:
      if not _setup_of(results, split, alg):
        continue
      lines.append(f"| {label} | {alg} | " + " | ".join(
          _fmt(_agg(results, split, alg, m)) for m in METRICS)
          + f" | {_setup_of(results, split, alg)} | {_timing(results, split, alg)} |")
  abl = [(v, lab) for v, (lab, _) in ABLATIONS.items() if _setup_of(results, "dir0.1", v)]
  if abl:
    lines += ["", "Ablations of pFedGPA on Dir(0.1) (defaults: diffusion, s=20, buffer 32, "
              "guidance along the update):", "",
              "| variant | personalized | new client | global | run | server / client s per round |",
              "|---|---|---|---|---|---|"]
    for v, lab in [("pfedgpa", "pFedGPA (defaults)")] + abl:
      lines.append(f"| {lab} | " + " | ".join(_fmt(_agg(results, "dir0.1", v, m))
                                              for m in METRICS)
                   + f" | {_setup_of(results, 'dir0.1', v)} | {_timing(results, 'dir0.1', v)} |")
  lines += ["", f"Server time: pFedGPA's second jitted computation per round (buffer "
            "normalisation, 50 online DDPM steps, DDIM inversion and denoising of the 16 "
            "uploads); client time: the round's local training and aggregation; both exclude "
            f"round 1 (compilation). CPU: 2 cores shared with other work, jax {jax.__version__}.",
            "", f"![personalized accuracy per round, final accuracies](results/{NAME}.png)", "",
            "Re-run or extend: `python experiments/pfedgpa_bench.py --rounds N --seeds 0 1 2 "
            "--update-reports`; "
            f"one cell: its `command` in `results/{NAME}.json`.", end]
  reports.write_section("RESULTS.md", NAME, "\n".join(lines), heading="# Results")
  _plot(results, reports)


def _plot(results, reports: reports_lib.Reports):
  """Per split: personalized accuracy per round (seed 0); then bars of the final
  personalized and new-client accuracy (mean over seeds) of the algorithms and ablations."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure
  splits = [s for s in SPLITS if any(k.startswith(f"{s}/") for k in results)] or ["dir0.1"]
  fig = Figure(figsize=(3.6 * len(splits) + 6.5, 3.6))
  grid = fig.add_gridspec(1, len(splits) + 2)
  for i, split in enumerate(splits):
    ax = fig.add_subplot(grid[0, i])
    for v in ALGORITHMS:
      cell = results.get(cell_key(split, v, 0))
      if cell and cell["curves"].get("personalized_accuracy"):
        ax.plot(*zip(*cell["curves"]["personalized_accuracy"]), marker="o", markersize=3,
                label=v)
    ax.set_title(SPLITS[split][0], fontsize=9)
    ax.set_ylim(0, 1)
    ax.set_xlabel("round")
    ax.set_ylabel("personalized accuracy (seed 0)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=6)
  ax = fig.add_subplot(grid[0, len(splits):])
  variants = [v for v in ALGORITHMS + tuple(ABLATIONS) if _agg(results, "dir0.1", v,
                                                                 "personalized_accuracy").size]
  x = np.arange(len(variants))
  for j, (metric, label) in enumerate((("personalized_accuracy", "personalized"),
                                       ("new_client_accuracy", "new client"))):
    vals = [_agg(results, "dir0.1", v, metric) for v in variants]
    ax.bar(x + (j - 0.5) * 0.4, [a.mean() if a.size else 0 for a in vals], 0.4,
           yerr=[a.std() if a.size > 1 else 0 for a in vals], label=label)
  ax.set_xticks(x, variants, rotation=45, ha="right", fontsize=7)
  ax.set_ylim(0, 1)
  ax.set_title("Dir(0.1): final accuracy (algorithms, pFedGPA ablations)", fontsize=9)
  ax.grid(alpha=0.3, axis="y")
  ax.legend(fontsize=7)
  fig.tight_layout()
  reports.save_figure(f"results/{NAME}.png", fig, dpi=110)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rounds", type=int, default=None, help="default: the config's (100)")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
  parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
  parser.add_argument("--ablations", choices=("yes", "no", "only"), default="yes",
                      help="ablations run on Dir(0.1) only")
  parser.add_argument("--ablation-names", nargs="+", default=list(ABLATIONS),
                      choices=list(ABLATIONS))
  parser.add_argument("--root", default=os.path.join(HERE, "runs", NAME))
  parser.add_argument("--report-only", action="store_true")
  parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides",
                      help="extra overrides for every cell (recorded with each result)")
  reports_lib.add_arguments(parser, SCRIPT)
  args = parser.parse_args(argv)
  reports = reports_lib.Reports.from_args(args, SCRIPT)
  results = {}
  previous = reports.existing(JSON_PATH)  # the output folder's, else the committed results
  if previous:
    with open(previous) as f:
      results = json.load(f)
  if not args.report_only:
    from fedjax_gen import config as config_lib
    rounds = args.rounds or config_lib.load_config(NAME).rounds
    cells = []
    for seed in args.seeds:
      if args.ablations != "only":
        cells += [(s, a, seed) for s in args.splits for a in args.algorithms]
      if args.ablations != "no" and "dir0.1" in args.splits:
        cells += [("dir0.1", v, seed) for v in args.ablation_names]
    for split, variant, seed in cells:
      print(f"== {NAME} {split} {variant} seed {seed} ({rounds} rounds)", flush=True)
      results[cell_key(split, variant, seed)] = run_cell(split, variant, seed, rounds,
                                                         args.root, args.overrides)
      reports.write_text(JSON_PATH, json.dumps(results, indent=1) + "\n")
      write_report(results, reports)
  write_report(results, reports)
  return 0


if __name__ == "__main__":
  sys.exit(main())
