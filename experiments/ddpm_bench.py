"""The class-conditional DDPM on Fashion-MNIST, federated vs central: CAS, Frechet distance,
training time and sampling speed, written into `RESULTS.md` with sample grids.

Each run is `fedjax-gen run ddpm_fmnist ...` (resumed from its checkpoints in `--root` if
present). The table, `results/ddpm_fmnist.json` and the grids go into `--out` (default
`./fedjax-gen-out/ddpm_bench`, each path printed); `--update-reports` writes the committed
`experiments/RESULTS.md` and `experiments/results/` instead:

    python experiments/ddpm_bench.py                  # both runs, then the table
    python experiments/ddpm_bench.py --report-only    # table from the runs' summary.json
    python experiments/ddpm_bench.py --runs federated --set ddpm.guidance_scale=3
    python experiments/ddpm_bench.py --report-only --update-reports
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(HERE))  # fedjax_gen_bench of this checkout, if not installed
from fedjax_gen_bench import reports as reports_lib  # noqa: E402

SCRIPT = "ddpm_bench"  # its output folder, ./fedjax-gen-out/ddpm_bench
JSON = "results/ddpm_fmnist.json"
NAME = "ddpm_fmnist"  # its section of RESULTS.md
BEGIN, END = f"<!-- {NAME}:begin -->", f"<!-- {NAME}:end -->"
# name -> overrides of the built-in `ddpm_fmnist` config
RUNS = {
    "federated": [],
    "central": ["ddpm.central=true", "rounds=70", "local_steps=100"],
}


def run(name: str, root: str, extra: list[str]) -> None:
  from fedjax_gen import config as config_lib
  from fedjax_gen.trainer.ddpm import train_ddpm
  config = config_lib.apply_overrides(config_lib.load_config("ddpm_fmnist"), RUNS[name] + extra)
  train_ddpm(config, os.path.join(root, name))


def collect(name: str, workdir: str) -> dict:
  """A finished run's summary with its config and the command that reproduces it."""
  from fedjax_gen import config as config_lib
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  config = json.load(open(os.path.join(workdir, "config.json")))
  default = config_lib.load_config("ddpm_fmnist")
  overrides = [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
               for k, v in sorted(config.items())
               if k in default and k not in ("num_clients", "clients_per_round", "partition")
               and default[k] != v]
  if config["central"]:
    overrides = ["ddpm.central=true"] + [o for o in overrides if not o.startswith("ddpm.central=")]
  summary["command"] = "fedjax-gen run ddpm_fmnist " + " ".join(overrides) + " --workdir W"
  summary["config"] = config
  return summary


def write_report(results: dict, reports: reports_lib.Reports) -> None:
  lines = [BEGIN, "## Class-conditional DDPM on Fashion-MNIST (issue 5)", "",
           "A UNet noise predictor (`fedjax_gen/models/unet.py`) trained with the DDPM loss. "
           "**Federated**: FedAvg over the UNet's parameters through the fedjax-gen engine, "
           "10 clients on a Dirichlet(0.5) split, 5 sampled per round, 20 local Adam steps "
           "of batch 32 (no image leaves a client). **Central**: one client holding the "
           "whole training set (a server with data), the same code path. Samples: DDIM with "
           "classifier-free guidance. CAS = share of generated images that a simple-CNN "
           "trained on the real training set assigns to the conditioned class; Frechet "
           "distance in that classifier's 84-d feature space against real test images "
           "(the real train-vs-test distance beside it is the floor).", "",
           "| run | CAS | Frechet distance (real floor) | classifier test acc | client steps "
           "(sequential) | train wall time | sampling | command |",
           "|---|---|---|---|---|---|---|---|"]
  for name, s in results.items():
    c = s["config"]
    total = c["rounds"] * c["local_steps"] * (1 if c["central"] else c["clients_per_round"])
    seq = c["rounds"] * c["local_steps"]
    lines.append(
        f"| {name} | **{s['cas']:.3f}** | {s['frechet_distance']:.2f} "
        f"({s['frechet_distance_real_train_vs_test']:.2f}) | {s['classifier_test_accuracy']:.3f}"
        f" | {total} ({seq}) of batch {c['batch_size']} | {s['train_wall_time_s'] / 60:.1f} min"
        f" | {s['sample_images_per_s']:.1f} img/s ({c['sample_steps']} DDIM steps, guidance "
        f"{c['guidance_scale']}) | `{s['command']}` |")
  lines += ["", "Measured on this 2-core CPU (backend "
            f"{results[next(iter(results))]['backend']}), each run pinned to one core while "
            "other jobs used the other (wall times and sampling rates include waiting for "
            "them). Train wall time sums every session the run was resumed in, each with the "
            "code of its day (the runs began before the UNet's convolutions went native, "
            "~2x slower per step). Re-run: `python experiments/ddpm_bench.py "
            "--update-reports`.", ""]
  sweeps = {name: s["guidance_sweep"] for name, s in results.items() if s.get("guidance_sweep")}
  if sweeps:
    scales = sorted({row["guidance_scale"] for sweep in sweeps.values() for row in sweep})
    lines += ["CAS (Frechet distance) against the classifier-free guidance scale, the same "
              "trained generators and samples per class as above:", "",
              "| run | " + " | ".join(f"guidance {g:g}" for g in scales) + " |",
              "|---|" + "---|" * len(scales)]
    for name, sweep in sweeps.items():
      by = {row["guidance_scale"]: row for row in sweep}
      lines.append(f"| {name} | " + " | ".join(
          f"{by[g]['cas']:.3f} ({by[g]['frechet_distance']:.1f})" if g in by else "-"
          for g in scales) + " |")
    lines += ["", "Guidance trades diversity (Frechet distance) for class fidelity (CAS).", ""]
    lines += [f"![{name} guidance](results/ddpm_fmnist_{name}_guidance.png)" for name in sweeps]
    lines.append("")
  for name, r in results.items():
    if not r["central"]:
      lines += [f"Target (issue 5): federated CAS >= 0.80 at the run's guidance scale "
                f"({r['config']['guidance_scale']:g}): "
                + ("met." if r["cas"] >= 0.8 else "not met.") + f" ({name}: {r['cas']:.3f})", ""]
  lines += [f"![{name} samples](results/ddpm_fmnist_{name}_samples.png)" for name in results]
  lines.append(END)
  reports.write_section("RESULTS.md", NAME, "\n".join(lines), heading="# Results")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
  p.add_argument("--root", default=os.path.join(HERE, "runs", "ddpm_fmnist"))
  p.add_argument("--report-only", action="store_true")
  p.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE")
  reports_lib.add_arguments(p, SCRIPT)
  args = p.parse_args(argv)
  reports = reports_lib.Reports.from_args(args, SCRIPT)
  previous = reports.existing(JSON)  # the output folder's, else the committed results
  results = json.load(open(previous)) if previous else {}
  for name in args.runs:
    if not args.report_only:
      run(name, args.root, args.overrides)
    if os.path.exists(os.path.join(args.root, name, "summary.json")):
      results[name] = collect(name, os.path.join(args.root, name))
    for plot in ("samples", "guidance"):
      src = os.path.join(args.root, name, f"{plot}.png")
      if os.path.exists(src):
        reports.copy(src, f"results/ddpm_fmnist_{name}_{plot}.png")
    reports.write_text(JSON, json.dumps(results, indent=1))
  if results:
    write_report({k: results[k] for k in RUNS if k in results}, reports)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
