"""Accuracy against epsilon, and what the models and generators leak (`dp_fmnist`).

Classifier cells: `fedjax-gen run dp_fmnist` (1,000 clients, 100 per round, simple CNN, 100
rounds) without DP and at dp.target_epsilon 8, 4 and 1 (delta 1e-5). Generator cells: the
federated DDPM of `ddpm_fmnist` on a reduced budget (10 rounds of 5 of its 10 clients, 20
local steps: a tenth of its 200 rounds), without DP and at epsilon 8 (delta 1e-2: the
population is 10), each with the audit every DDPM run writes. Each cell is a run in
`experiments/runs/dp/NAME_s0` that this script starts or resumes; the table and plot go to
the output folder (or, with --update-reports, to RESULTS.md and results/).

    python experiments/dp_bench.py                 # run what is missing, report
    python experiments/dp_bench.py --report-only   # report the cells that exist
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from fedjax_gen_bench import reports as reports_lib

NAME, SCRIPT = "dp_fmnist", "dp_bench"
HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = os.path.join(HERE, "runs", "dp")
DDPM = ["rounds=10", "ddpm.eval_guidance_scales=", "ddpm.eval_samples_per_class=20"]
CELLS = [  # name, experiment, overrides
    ("nodp", "dp_fmnist", ["dp.enabled=false"]),
    ("eps8", "dp_fmnist", ["dp.target_epsilon=8"]),
    ("eps4", "dp_fmnist", ["dp.target_epsilon=4"]),
    ("eps1", "dp_fmnist", ["dp.target_epsilon=1"]),
    ("ddpm_nodp", "ddpm_fmnist", DDPM + ["dp.enabled=false"]),
    ("ddpm_eps8", "ddpm_fmnist", DDPM + ["dp.enabled=true", "dp.clip_norm=1.0",
                                         "dp.delta=1e-2", "dp.target_epsilon=8"]),
]


def command(experiment: str, overrides: list[str]) -> str:
  return f"fedjax-gen run {experiment} {' '.join(overrides)} progress=false --workdir W"


def run_cell(name: str, experiment: str, overrides: list[str]) -> None:
  workdir = os.path.join(RUNS, f"{name}_s0")
  subprocess.run([sys.executable, "-m", "fedjax_gen", "run", experiment, *overrides,
                  "progress=false", "--workdir", workdir], check=True,
                 stdout=subprocess.DEVNULL)


def summary(name: str) -> dict | None:
  path = os.path.join(RUNS, f"{name}_s0", "summary.json")
  return json.load(open(path)) if os.path.exists(path) else None


def _fmt(x, spec=".3f"):
  return "–" if x is None else format(x, spec)


def write_report(results: dict, reports: reports_lib.Reports) -> None:
  lines = [f"<!-- {NAME}:begin -->", "## Privacy: accuracy against epsilon, and the audits",
           "",
           "Client-level DP-FedAvg on Fashion-MNIST (`fedjax_gen/configs/dp_fmnist.py`: 1,000 "
           "clients Dir(0.5), 100 per round, simple CNN, 100 rounds of 2 local epochs, clip "
           "0.5), seed 0. Epsilon at delta 1e-5 by dp-accounting's RDP accountant for "
           "fixed-size cohorts (replace-one neighbours). Membership attack: the final "
           "model's loss on 2,000 of its clients' training images against 2,000 test images "
           "(AUC 0.5 = no leak).", "",
           "| run | epsilon | noise multiplier | global accuracy | attack AUC | TPR at 1% FPR "
           "| train time | command |", "|---|---:|---:|---:|---:|---:|---:|---|"]
  for name, experiment, overrides in CELLS[:4]:
    s = results.get(name)
    if s is None:
      continue
    p, m = s.get("privacy") or {}, s["audit"]["membership"]
    lines.append(f"| {'no DP' if name == 'nodp' else 'DP'} | {_fmt(p.get('epsilon'), '.2f')} "
                 f"| {_fmt(p.get('noise_multiplier'), '.2f')} | {s['global_accuracy']:.3f} "
                 f"| {m['auc']:.3f} | {m['tpr_at_1pct_fpr']:.3f} | {s['wall_time_s'] / 60:.1f} "
                 f"min | `{command(experiment, overrides)}` |")
  lines += ["", f"![accuracy against epsilon](results/{NAME}.png)", "",
            "The federated DDPM on a reduced budget (10 of `ddpm_fmnist`'s 200 rounds), "
            "without DP and with DP (10 clients, so delta 1e-2). Memorisation: generated "
            "images' distance to the closest training image of their class against the "
            "closest held-out one, in the CAS classifier's feature space (share closer to "
            "training: 0.5 = no memorisation, 1 = copies); near copies: share closer to a "
            "training image than 99% of held-out images are; membership: the denoising loss "
            "at 4 timesteps, 500 members against 500 test images.", "",
            "| generator | epsilon | CAS | Frechet | closer to training | near copies | "
            "attack AUC | TPR at 1% FPR | command |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
  for name, experiment, overrides in CELLS[4:]:
    s = results.get(name)
    if s is None:
      continue
    p, a = s.get("privacy") or {}, s["audit"]
    mem, mia = a["memorisation"], a["membership"]
    lines.append(f"| {'DDPM' if name == 'ddpm_nodp' else 'DP DDPM'} | "
                 f"{_fmt(p.get('epsilon'), '.2f')} | {s['cas']:.3f} | "
                 f"{s['frechet_distance']:.2f} | {mem['share_closer_to_train']:.3f} | "
                 f"{mem['near_copy_share']:.3f} | {mia['auc']:.3f} | "
                 f"{mia['tpr_at_1pct_fpr']:.3f} | `{command(experiment, overrides)}` |")
  lines += ["", "Reading: at 1,000 clients and 100 per round, epsilon 8 costs 3 points of "
            "accuracy and epsilon 4 costs 12; at epsilon 1 the noise (z = 16.8) leaves the "
            "model at chance. The loss-threshold attack barely separates members from "
            "non-members even without DP (AUC 0.51), so it cannot show what DP removes here. "
            "Both DDPMs are at chance after this tenth of their budget (CAS 0.10-0.12): their "
            "rows show the audit running, not a finding. Two limits of the audit show in them: "
            "the CAS classifier was trained on the training images, which pulls those "
            "together in its feature space, so a generator that copies nothing scores below "
            "0.5 there (0.19) while one that copies scores 1; and the DP DDPM's attack AUC of "
            "0.58 lies outside the spread expected at 500 against 500 (about 0.02) and was not "
            "explained (the two sets are drawn differently: random training images, the first "
            "test images).", "",
            "Measured on this 2-core CPU, one run at a time (the DDPM runs beside the test "
            "suite). Re-run: `python experiments/dp_bench.py --update-reports`.",
            f"<!-- {NAME}:end -->"]
  reports.write_section("RESULTS.md", NAME, "\n".join(lines), heading="# Results")


def plot(results: dict, reports: reports_lib.Reports) -> None:
  from matplotlib.figure import Figure
  cells = [(n, results[n]) for n, _, _ in CELLS[:4] if n in results]
  if not cells:
    return
  fig = Figure(figsize=(5.5, 3.6))
  ax = fig.add_subplot()
  private = sorted((s["privacy"]["epsilon"], s["global_accuracy"]) for n, s in cells
                   if s.get("privacy"))
  if private:
    ax.plot(*zip(*private), marker="o", label="DP-FedAvg")
  for n, s in cells:
    if not s.get("privacy"):
      ax.axhline(s["global_accuracy"], color="gray", linestyle="--", label="no DP")
  ax.set_xscale("log")
  ax.set_xticks([1, 2, 4, 8], labels=["1", "2", "4", "8"])
  ax.minorticks_off()
  ax.set_xlabel("epsilon (delta 1e-5)")
  ax.set_ylabel("global accuracy after 100 rounds")
  ax.set_title("dp_fmnist: 1,000 clients, 100 per round")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  reports.save_figure(f"results/{NAME}.png", fig, dpi=110)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--report-only", action="store_true",
                      help="report the cells that exist, run nothing")
  parser.add_argument("--cells", nargs="*", help="names of the cells to run (default: all)")
  reports_lib.add_arguments(parser, SCRIPT)
  args = parser.parse_args(argv)
  reports = reports_lib.Reports.from_args(args, SCRIPT)
  for name, experiment, overrides in CELLS:
    if not args.report_only and (not args.cells or name in args.cells):
      run_cell(name, experiment, overrides)
  results = {n: s for n, _, _ in CELLS if (s := summary(n)) is not None}
  reports.write_text(f"results/{NAME}.json", json.dumps(
      {n: {"command": command(e, o), "summary": results.get(n)} for n, e, o in CELLS
       if n in results}, indent=1) + "\n")
  write_report(results, reports)
  plot(results, reports)
  return 0


if __name__ == "__main__":
  sys.exit(main())
