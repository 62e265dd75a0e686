"""When does generated data help? Gen-FedSD and GenFL against FedAvg, mapped against rounds,
generator quality and label skew.

Three tables and plots, each cell with its rounds and seeds:

* **gain vs rounds**: Gen-FedSD and GenFL minus FedAvg (global test accuracy, points) at
  rounds 5, 10, 20 and the last, and the first round each reaches the target accuracy
  (the communication claim apart from the accuracy claim). Digits #C=2 always; with `--fmnist`,
  Fashion-MNIST #C=2 too (`genaug_fmnist`, 50 rounds, plotted in `genaug_map_fmnist.png`),
  its generator the config's federated DDPM (`ddpm_fmnist`), trained here stage by stage
  like the digits one and kept at each stage (`ROOT/fmnist/generators/ddpm-rN`);
  `--fmnist-set KEY=VALUE ...` changes its cells.
* **gain vs generator quality**: digits #C=2 with federated DDPMs stopped after 2, 5, 10, 20
  and 40 rounds (one training, resumed stage by stage; each stage's generator is kept in
  `ROOT/generators/ddpm-rN` with its CAS and Frechet distance).
* **gain vs skew**: digits #C=1, #C=2, #C=3, Dir(0.1), Dir(0.5) (each with its label skew,
  `fedjax_gen.data.label_skew`, what the run-time guard reads) with the best generator,
  and Gen-FedSD's fill rules (`max`, `budget`, `global`) on #C=2.

Every cell is `train_and_evaluate` (through `trainer.runs.train_runs`, which trains the
seeds of a cell side by side where it can) in its own folder under `--root`, so a rerun
resumes and `--report-only` redraws from what is on disk. Output: `--out` (default
`./fedjax-gen-out/genaug_map`), or the committed `experiments/RESULTS.md` and
`experiments/results/` with `--update-reports`.

    python experiments/genaug_map.py                      # digits: generators, the three maps
    python experiments/genaug_map.py --seeds 0 1 2        # more seeds (resumes the rest)
    python experiments/genaug_map.py --fmnist             # + Fashion-MNIST #C=2, 50 rounds
    python experiments/genaug_map.py --fmnist --fmnist-set local_epochs=2  # cheaper rounds
    python experiments/genaug_map.py --tiny --root /tmp/m # plumbing only (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(HERE))  # fedjax_gen_bench of this checkout, if not installed
from fedjax_gen_bench import reports as reports_lib  # noqa: E402

NAME = "genaug_map"
METHODS = ("gen_fedsd", "genfl")
SPLITS = {"c1": ("#C=1", ["partition=label_k", "classes_per_client=1"]),
          "c2": ("#C=2", ["partition=label_k", "classes_per_client=2"]),
          "c3": ("#C=3", ["partition=label_k", "classes_per_client=3"]),
          "dir0.1": ("Dir(0.1)", ["partition=dirichlet", "alpha=0.1"]),
          "dir0.5": ("Dir(0.5)", ["partition=dirichlet", "alpha=0.5"])}
FILL_RULES = {"max": [], "budget": ["genaug.fill_rule=budget", "genaug.fill_budget=100"],
              "global": ["genaug.fill_rule=global"]}
AT_ROUNDS = (5, 10, 20)
DIGITS_TARGET, FMNIST_TARGET = 0.9, 0.8

# Digits: the notebook's setup (quickstart's MLP and optimizer, 10 clients all per round).
DIGITS = ["num_clients=10", "clients_per_round=10", "rounds=30", "eval_every=1",
          "checkpoint_every=10", "progress=false", "genaug.sample_steps=25",
          "genfl.synthetic_per_class=100", "genfl.server_steps=10"]
DIGITS_DDPM = ["dataset=digits", "progress=false", "num_clients=10", "clients_per_round=5",
               "local_steps=20", "ddpm.unet_channels=16,32", "ddpm.guidance_scale=2",
               "ddpm.eval_guidance_scales=", "ddpm.eval_samples_per_class=50",
               "ddpm.sample_steps=25", "ddpm.audit_examples=100", "checkpoint_every=5"]
DDPM_STAGES = (2, 5, 10, 20, 40)
# Fashion-MNIST #C=2: `genaug_fmnist` (NIID-Bench's setup) with the bounded fill of the
# 10-round comparison in RESULTS.md (Gen-FedSD's `max` rule would generate ~24,000 images
# a client on #C=2) and the config's DDPM (200 rounds; the 50-round stage kept as well).
FMNIST = ["partition=label_k", "classes_per_client=2", "progress=false", "eval_every=1",
          "checkpoint_every=5", "genaug.fill_rule=budget", "genaug.fill_budget=200",
          "genfl.synthetic_per_class=50"]
FMNIST_DDPM = ["progress=false", "ddpm.eval_guidance_scales="]
FMNIST_DDPM_STAGES = (50, 200)
TINY = {"digits": ["rounds=2", "local_epochs=1", "eval_every=1", "genaug.sample_steps=2",
                   "genaug.batch_size=64", "genaug.fill_rule=budget", "genaug.fill_budget=8",
                   "genfl.synthetic_per_class=5", "genfl.server_steps=2"],
        "ddpm": ["local_steps=2", "num_clients=3", "clients_per_round=2",
                 "ddpm.unet_channels=8,8", "ddpm.eval_samples_per_class=2",
                 "ddpm.sample_batch_size=20", "ddpm.sample_steps=2",
                 "ddpm.classifier_epochs=1", "ddpm.audit_examples=10"],
        "stages": (1, 2), "splits": ("c2",)}


# --- running ---------------------------------------------------------------------------
def _config(experiment: str, overrides: list[str]):
  from fedjax_gen import config as config_lib
  return config_lib.apply_overrides(config_lib.load_config(experiment), overrides)


def train_generators(root: str, stages, overrides: list[str]) -> list[dict]:
  """One federated DDPM (`ddpm_fmnist` with `overrides`) trained stage by stage in
  `ROOT/ddpm` (resumed, never restarted: its lr is constant); each stage's generator copied
  to `ROOT/generators/ddpm-rN` with its quality."""
  from fedjax_gen.trainer import train_ddpm
  for rounds in stages:
    keep = _stage_dir(root, rounds)
    if not os.path.exists(os.path.join(keep, "quality.json")):
      summary = train_ddpm(_config("ddpm_fmnist", overrides + [f"rounds={rounds}"]),
                           os.path.join(root, "ddpm"))
      shutil.rmtree(keep, ignore_errors=True)
      shutil.copytree(summary["generator_dir"], keep)
      with open(os.path.join(keep, "quality.json"), "w") as f:
        json.dump({"rounds": rounds, "cas": summary["cas"],
                   "frechet_distance": summary["frechet_distance"],
                   "train_wall_time_s": summary["train_wall_time_s"]}, f)
  out = saved_generators(root, stages)
  for g in out:
    print(f"genaug_map: generator {g['dir']}: CAS {g['cas']:.3f}", file=sys.stderr)
  return out


def _stage_dir(root: str, rounds: int) -> str:
  return os.path.join(root, "generators", f"ddpm-r{rounds}")


def saved_generators(root: str, stages) -> list[dict]:
  """The stages `train_generators` has finished, each its quality and folder."""
  out = []
  for rounds in stages:
    path = os.path.join(_stage_dir(root, rounds), "quality.json")
    if os.path.exists(path):
      with open(path) as f:
        out.append({**json.load(f), "dir": os.path.dirname(path)})
  return out


def cell_dir(root: str, part: str, name: str, algorithm: str, seed: int) -> str:
  return os.path.join(root, part, name, f"{algorithm}-seed{seed}")


def run_cells(cells: list[tuple[str, str, list[str]]]) -> None:
  """`(experiment, workdir, overrides)` each: trained (resumed) together; a cell whose
  summary already covers its rounds is not opened again."""
  from fedjax_gen.trainer.runs import train_runs
  todo = [(_config(e, o), w) for e, w, o in cells]
  todo = [(c, w) for c, w in todo if (summary(w) or {}).get("rounds", 0) < c.rounds]
  print(f"genaug_map: {len(todo)} of {len(cells)} runs to train", file=sys.stderr)
  if todo:
    train_runs([c for c, _ in todo], [w for _, w in todo])


def plan_cells(args, generators: list[dict], fmnist_generators=()
               ) -> list[tuple[str, str, list[str]]]:
  """Every cell of the three maps (a cell shared by two maps runs once); Fashion-MNIST's
  with its last generator."""
  tiny = TINY["digits"] if args.tiny else []
  best = generators[-1]["dir"]
  cells = {}

  def add(part, name, algorithm, split, extra=(), experiment="quickstart", base=DIGITS):
    for seed in args.seeds:
      workdir = cell_dir(args.root, part, name, algorithm, seed)
      cells[workdir] = (experiment, workdir, [*base, *SPLITS[split][1], *tiny, *extra,
                                              f"algorithm={algorithm}", f"seed={seed}"])

  def add_split(split):
    add("split", split, "fedavg", split)
    for method in METHODS:
      add("split", split, method, split, [f"genaug.generator_dir={best}"])

  order = sorted(args.splits, key=lambda s: s != "c2")  # #C=2 first: every map uses it
  add_split(order[0])
  for g in generators[:-1]:  # the last generator's cells are the split map's #C=2
    for method in METHODS:
      add("cas", os.path.basename(g["dir"]), method, "c2", [f"genaug.generator_dir={g['dir']}"])
  for split in order[1:]:
    add_split(split)
  for rule, extra in FILL_RULES.items():
    if rule != "max" and not args.tiny:
      add("fill", rule, "gen_fedsd", "c2", [f"genaug.generator_dir={best}", *extra])
  if args.fmnist and fmnist_generators:
    rounds = f"rounds={args.fmnist_rounds}"  # --fmnist-set last: it overrides the rest
    add("fmnist", "c2", "fedavg", "c2", [rounds, *args.fmnist_set],
        experiment="genaug_fmnist", base=FMNIST)
    for method in METHODS:
      add("fmnist", "c2", method, "c2",
          [rounds, f"genaug.generator_dir={fmnist_generators[-1]['dir']}", *args.fmnist_set],
          experiment="genaug_fmnist", base=FMNIST)
  return list(cells.values())


# --- reading ---------------------------------------------------------------------------
def curve(workdir: str) -> dict[int, float]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {r["round"]: r["global_accuracy"] for r in rows
          if r.get("global_accuracy") is not None}


def summary(workdir: str) -> dict | None:
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def gains(root: str, part: str, name: str, method: str, seeds, baseline=("split", None)):
  """Per seed: `{round: method - fedavg}` in points, over the rounds both logged."""
  out = []
  for seed in seeds:
    base = curve(cell_dir(root, baseline[0], baseline[1] or name, "fedavg", seed))
    ours = curve(cell_dir(root, part, name, method, seed))
    if base and ours and summary(cell_dir(root, part, name, method, seed)):
      out.append({r: 100 * (ours[r] - base[r]) for r in ours if r in base})
  return out


def _mean(values) -> str:
  if not values:
    return "—"
  m = statistics.mean(values)
  return f"{m:+.1f}" if len(values) == 1 else f"{m:+.1f} ± {statistics.stdev(values):.1f}"


def _at(gain_runs, r):
  """Gains at round `r` (the last logged round where r is None)."""
  return [g[r if r is not None else max(g)] for g in gain_runs if (r is None or r in g) and g]


def first_reaching(c: dict[int, float], target: float) -> int | None:
  return next((r for r in sorted(c) if c[r] >= target), None)


def rounds_table(root, seeds, part, name, target, baseline) -> list[str]:
  lines = ["| method | " + " | ".join(f"r{r}" for r in AT_ROUNDS) + " | last (r) | "
           f"first round at {100 * target:.0f}% (FedAvg: per seed) |",
           "|---" * (len(AT_ROUNDS) + 3) + "|"]
  base_first = [first_reaching(curve(cell_dir(root, baseline[0], baseline[1] or name,
                                              "fedavg", s)), target) for s in seeds]
  for method in METHODS:
    g = gains(root, part, name, method, seeds, baseline)
    if not g:
      continue
    last = sorted({max(x) for x in g})
    firsts = [first_reaching(curve(cell_dir(root, part, name, method, s)), target)
              for s in seeds]
    lines.append(f"| {method} | " + " | ".join(_mean(_at(g, r)) for r in AT_ROUNDS)
                 + f" | {_mean(_at(g, None))} ({'/'.join(map(str, last))}) | "
                 + "/".join("—" if f is None else str(f) for f in firsts)
                 + f" ({'/'.join('—' if f is None else str(f) for f in base_first)}) |")
  return lines


def plateau(root, seeds, algorithm, last: int = 10) -> str:
  """An algorithm's mean Fashion-MNIST #C=2 accuracy over its last `last` logged rounds and
  its best round, per seed: one noisy last round says little about where a run settles."""
  out = []
  for seed in seeds:
    c = curve(cell_dir(root, "fmnist", "c2", algorithm, seed))
    if c:
      tail = sorted(c)[-last:]
      best = max(c, key=c.get)
      out.append(f"{100 * statistics.mean(c[r] for r in tail):.1f}% over rounds "
                 f"{tail[0]}-{tail[-1]} (best {100 * c[best]:.1f}% at r{best})")
  return f"{algorithm} " + (", ".join(out) or "—")


def split_skews(split: str, seeds) -> list[float]:
  """The digits split's label skew per seed, from the partition the runs train on."""
  from fedjax_gen import data as data_lib
  from fedjax_gen.trainer.train import load_federated_data
  return [data_lib.label_skew(load_federated_data(_config(
      "quickstart", [*DIGITS, *SPLITS[split][1], f"seed={seed}"])).label_counts)
          for seed in seeds]


def report(args, generators: list[dict], fmnist_generators=()) -> None:
  reports = reports_lib.Reports.from_args(args, NAME)
  seeds, root = args.seeds, args.root
  n = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))})"
  lines = [f"<!-- {NAME}:begin -->", "## When does generated data help?", "",
           "`python experiments/genaug_map.py` (resumable). Cells: Gen-FedSD or GenFL minus "
           "FedAvg, global test accuracy in points, mean ± std over "
           f"{n}; digits: the notebook's setup (quickstart's MLP, 10 clients all per round, "
           "2 local epochs, 30 rounds), generators: one federated DDPM on digits "
           "(10 clients Dir(0.5), UNet 16,32) stopped after each number of rounds, "
           "sampled with 25 DDIM steps at guidance 2.", "",
           "**Gain against rounds, digits #C=2:**", "",
           *rounds_table(root, seeds, "split", "c2", DIGITS_TARGET, ("split", None))]
  if args.fmnist and fmnist_generators:
    g = fmnist_generators[-1]
    changed = " ".join(f"`{o}`" for o in args.fmnist_set) or "none"
    lines += ["", f"**Gain against rounds, Fashion-MNIST #C=2** (`genaug_fmnist`, "
              f"{args.fmnist_rounds} rounds, fill budget 200, GenFL 50 images a class; "
              f"changed from the config: {changed}; generator: `ddpm_fmnist` after "
              f"{g['rounds']} rounds, CAS {g['cas']:.2f}, Frechet distance "
              f"{g['frechet_distance']:.1f}"
              + "".join(f" (after {e['rounds']}: CAS {e['cas']:.2f})"
                        for e in fmnist_generators[:-1])
              + "; FedAvg's accuracy per seed at the last round: "
              + "/".join(f"{100 * c[max(c)]:.1f}" for s in seeds
                         for c in [curve(cell_dir(root, "fmnist", "c2", "fedavg", s))] if c)
              + "%):", "",
              *rounds_table(root, seeds, "fmnist", "c2", FMNIST_TARGET, ("fmnist", None)),
              "", "Where each levels off: " + "; ".join(plateau(root, seeds, a)
                                                      for a in ("fedavg", *METHODS)) + "."]
  lines += ["", "**Gain against generator quality, digits #C=2** (last round):", "",
            "| generator | CAS | Frechet distance | gen_fedsd | genfl |", "|---|---|---|---|---|"]
  cas_points = []
  for g in generators:
    name = os.path.basename(g["dir"])
    part, cell = ("split", "c2") if g is generators[-1] else ("cas", name)
    row = [_mean(_at(gains(root, part, cell, m, seeds, ("split", "c2")), None))
           for m in METHODS]
    cas_points.append((g["cas"], row))
    lines.append(f"| {name} | {g['cas']:.2f} | {g['frechet_distance']:.1f} | "
                 + " | ".join(row) + " |")
  lines += ["", "**Gain against skew, digits** (last round; FedAvg's accuracy in %; label "
            "skew: `fedjax_gen.data.label_skew` of the split, what the run-time guard reads):",
            "", "| split | label skew | FedAvg | gen_fedsd | genfl |", "|---|---|---|---|---|"]
  for split in args.splits:
    accs = [100 * c[max(c)] for s in seeds
            for c in [curve(cell_dir(root, "split", split, "fedavg", s))] if c]
    lines.append(f"| {SPLITS[split][0]} | {statistics.mean(split_skews(split, seeds)):.2f} | "
                 f"{_mean(accs).lstrip('+')} | " + " | ".join(
        _mean(_at(gains(root, "split", split, m, seeds), None)) for m in METHODS) + " |")
  if not args.tiny:
    lines += ["", "Gen-FedSD's fill rules on digits #C=2 (last round): " + ", ".join(
        f"{rule} {_mean(_at(gains(root, 'fill' if rule != 'max' else 'split', 'c2' if rule == 'max' else rule, 'gen_fedsd', seeds, ('split', 'c2')), None))}"
        for rule in FILL_RULES) + "."]
  costs = [s["generation_s"] for split in args.splits for m in METHODS for seed in seeds
           for s in [summary(cell_dir(root, "split", split, m, seed))] if s and
           s.get("generation_s")]
  if costs:
    lines += ["", f"Generation cost per run on this 2-core CPU: median "
              f"{statistics.median(costs):.0f} s (range {min(costs):.0f}-{max(costs):.0f})."]
  planned = plan_cells(args, generators, fmnist_generators)
  done = sum(summary(w) is not None for _, w, _ in planned)
  if done < len(planned):
    lines += ["", f"**Partial:** {done} of the {len(planned)} runs of this map have finished; "
              "cells marked — have not run yet, so no reading is drawn here."]
  lines += ["", f"![gain maps](results/{NAME}.png)"]
  if args.fmnist and fmnist_generators:
    lines += ["", f"![Fashion-MNIST #C=2](results/{NAME}_fmnist.png)"]
  fmnist = (" --fmnist" + "".join(f" --fmnist-set {o}" if i == 0 else f" {o}"
                                  for i, o in enumerate(args.fmnist_set))
            if args.fmnist and fmnist_generators else "")
  lines += ["", "Re-run or extend: "
            f"`python experiments/genaug_map.py --seeds 0 1 2{fmnist} --update-reports`.",
            f"<!-- {NAME}:end -->"]
  reports.write_section("RESULTS.md", NAME, "\n".join(lines), heading="# Results")
  _plot(args, generators, reports)
  if args.fmnist and fmnist_generators:
    _plot_fmnist(args, reports)


def _plot(args, generators, reports) -> None:
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure
  fig = Figure(figsize=(12, 3.4))
  ax1, ax2, ax3 = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
  for method in METHODS:
    g = gains(args.root, "split", "c2", method, args.seeds)
    if g:
      rounds = sorted(set.intersection(*(set(x) for x in g)))
      ax1.plot(rounds, [statistics.mean(x[r] for x in g) for r in rounds], marker="o",
               markersize=3, label=method)
    xs, ys = [], []
    for gen in generators:
      name = os.path.basename(gen["dir"])
      part, cell = ("split", "c2") if gen is generators[-1] else ("cas", name)
      values = _at(gains(args.root, part, cell, method, args.seeds, ("split", "c2")), None)
      if values:
        xs.append(gen["cas"])
        ys.append(statistics.mean(values))
    ax2.plot(xs, ys, marker="o", label=method)
    vals = [statistics.mean(v) if v else float("nan") for split in args.splits
            for v in [_at(gains(args.root, "split", split, method, args.seeds), None)]]
    offset = -0.2 if method == METHODS[0] else 0.2
    ax3.bar([i + offset for i in range(len(args.splits))], vals, width=0.4, label=method)
  ax3.set_xticks(range(len(args.splits)), [SPLITS[s][0] for s in args.splits])
  for ax, title, xlabel in ((ax1, "digits #C=2: gain by round", "round"),
                            (ax2, "digits #C=2: gain by generator CAS", "CAS"),
                            (ax3, "digits: gain by split", "")):
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(title=title, xlabel=xlabel, ylabel="accuracy gain over FedAvg (points)")
    ax.legend(fontsize=8)
  fig.tight_layout()
  reports.save_figure(f"results/{NAME}.png", fig, dpi=110)


def _plot_fmnist(args, reports) -> None:
  """Global test accuracy per round of the three Fashion-MNIST #C=2 runs (mean over seeds)."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure
  fig = Figure(figsize=(6, 3.6))
  ax = fig.add_subplot(1, 1, 1)
  for algorithm in ("fedavg", *METHODS):
    curves = [c for s in args.seeds
              for c in [curve(cell_dir(args.root, "fmnist", "c2", algorithm, s))] if c]
    if curves:
      rounds = sorted(set.intersection(*(set(c) for c in curves)))
      ax.plot(rounds, [100 * statistics.mean(c[r] for c in curves) for r in rounds],
              label=algorithm)
  ax.axhline(100 * FMNIST_TARGET, color="gray", lw=0.8, ls="--")
  ax.set(title=f"Fashion-MNIST #C=2 ({len(args.seeds)} seed{'s' * (len(args.seeds) > 1)})",
         xlabel="round", ylabel="global test accuracy (%)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  reports.save_figure(f"results/{NAME}_fmnist.png", fig, dpi=110)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seeds", nargs="+", type=int, default=[0])
  parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
  parser.add_argument("--root", default=os.path.join(HERE, "runs", NAME),
                      help="where the runs live (resumed from there)")
  parser.add_argument("--fmnist", action="store_true",
                      help="add Fashion-MNIST #C=2 (trains its DDPM first: ~1 h here)")
  parser.add_argument("--fmnist-rounds", type=int, default=50)
  parser.add_argument("--fmnist-set", nargs="*", default=[], metavar="KEY=VALUE",
                      help="overrides of the Fashion-MNIST cells (e.g. local_epochs=2)")
  parser.add_argument("--tiny", action="store_true", help="tiny sizes: plumbing only")
  parser.add_argument("--report-only", action="store_true")
  reports_lib.add_arguments(parser, NAME)
  args = parser.parse_args(argv)
  if args.tiny:
    args.splits = [s for s in args.splits if s in TINY["splits"]] or list(TINY["splits"])
  stages = TINY["stages"] if args.tiny else DDPM_STAGES
  fmnist_root = os.path.join(args.root, "fmnist")
  if args.report_only:
    generators = saved_generators(args.root, stages)
    fmnist_generators = saved_generators(fmnist_root, FMNIST_DDPM_STAGES) if args.fmnist else []
  else:
    generators = train_generators(args.root, stages,
                                  DIGITS_DDPM + (TINY["ddpm"] if args.tiny else []))
    fmnist_generators = (train_generators(fmnist_root, FMNIST_DDPM_STAGES, FMNIST_DDPM)
                         if args.fmnist else [])
    run_cells(plan_cells(args, generators, fmnist_generators))
  if generators:
    report(args, generators, fmnist_generators)
  return 0


if __name__ == "__main__":
  sys.exit(main())
