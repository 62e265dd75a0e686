"""`fedjax-gen sweep EXPERIMENT KEY=V1,V2 ... --workdir W`: every combination of the listed
values, each a run of its own in `W/KEY=V,KEY=V` (the files a single run writes, so `eval`,
`report` and resume work on it), then the runs compared (`report`): a Markdown table, seeds
pooled into mean ± std, in `W/report.md`, and a plot in `W/report.png`.

Runs that differ only in `seed` and float hyperparameters (`lr`, `fl.server_lr`, ...) train
side by side, one jitted round `vmap`ped over them (`trainer.runs`; `sweep.chunk` caps how
many, `sweep.vmap=false` turns it off); the others go one after another, and the reason is
printed. A rerun skips finished runs and resumes interrupted ones.

A comma splits the values of a key whose value is a number, true/false or a name from a
list of choices (`seed=0,1,2`, `lr=0.05,0.1`, `algorithm=fedavg,fedprox`); a key whose value
is itself a list (`ddpm.unet_channels=16,32,32`) takes its value whole.
"""

from __future__ import annotations

import itertools
import os
import sys
from typing import Callable, Sequence

import ml_collections

from fedjax_gen import config as config_lib
from fedjax_gen import report
from fedjax_gen.outputs import atomic_write
from fedjax_gen.trainer.options import flatten


def axes(config: ml_collections.ConfigDict, overrides: list[str]
         ) -> tuple[list[str], list[tuple[str, list[str]]]]:
  """`(fixed overrides, [(key, [value, ...]), ...])`: which overrides are swept."""
  choices, values = config_lib.all_options(), flatten(config)
  fixed, swept = [], []
  for item in overrides:
    key, _, text = item.partition("=")
    key = key.strip()
    current = values.get(key)
    option = choices.get(key)
    listable = not isinstance(current, str) or (option is not None and "|" in option.help)
    parts = [p.strip() for p in text.split(",")]
    if "," in text and listable and all(parts):
      swept.append((key, parts))
    else:
      fixed.append(item)
  return fixed, swept


def run_sweep(experiment: str, overrides: list[str], workdir: str,
              train: Callable[[Sequence[ml_collections.ConfigDict], Sequence[str]], list]
              ) -> tuple[str, str]:
  """Runs (or resumes) every combination with `train(configs, run_workdirs)`
  (`trainer.runs.train_runs`); returns the Markdown table and the plot's path. Every
  combination is checked before any runs."""
  base = config_lib.load_config(experiment)
  fixed, swept = axes(base, overrides)
  if not swept:
    raise ValueError("Nothing to sweep: give at least one KEY=V1,V2 (e.g. seed=0,1,2); "
                     "`fedjax-gen run` runs a single config.")
  runs = []
  for values in itertools.product(*(v for _, v in swept)):
    chosen = [f"{k}={v}" for (k, _), v in zip(swept, values)]
    config = config_lib.apply_overrides(base, fixed + chosen)
    config_lib.validate(config)
    runs.append((os.path.join(workdir, ",".join(chosen)), config))
  print(f"fedjax-gen: sweep of {len(runs)} runs in {workdir}", file=sys.stderr)
  train([config for _, config in runs], [run_dir for run_dir, _ in runs])
  rows = report.compare([run_dir for run_dir, _ in runs])
  table = report.markdown(rows)
  atomic_write(os.path.join(workdir, "report.md"), table + "\n")
  plot_path = os.path.join(workdir, "report.png")
  report.plot(rows, plot_path, report.plot_metric(rows))
  return table, plot_path
