"""`train_runs(configs, workdirs)`: many runs, as many as possible side by side.

Runs whose configs differ only in `seed` and in float keys of `lr`, `momentum`, `fl.*` and
`personalized.*` train together, one jitted round `vmap`ped over the runs
(`engine.runs.StackedRuns`), the differing floats traced. Each run still gets its own
folder with the files a single run writes (config, metrics, checkpoints, summary), and
the numbers it would get alone (float tolerance). The others run one after another, and
the reason is printed: another model or client count (shapes differ), the host-loop plan,
DP, DDPM training, GenFL and pFedGPA (their server computations), several processes, or a
float the algorithm branches on in Python (caught by tracing the round before it runs).

Memory grows with the runs stacked: R populations and R client states on the device.
`sweep.chunk` caps the runs per jitted round.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Sequence

import jax
import ml_collections

from fedjax_gen import data as data_lib
from fedjax_gen.engine import runs as runs_lib
from fedjax_gen.outputs import saved_rounds
from fedjax_gen.trainer import options as options_lib
from fedjax_gen.trainer.ddpm import train_ddpm
from fedjax_gen.trainer.train import Member, _setup, train_and_evaluate, train_members
from fedjax_gen.trainer.workdir import open_run

_TRACED = ("lr", "momentum")
_TRACED_FAMILIES = ("fl", "personalized")
_SEQUENTIAL_ALGORITHMS = ("genfl", "aigc_only", "pfedgpa")


def traceable(key: str, value) -> bool:
  """A key whose values may differ between runs that share one jitted round."""
  return (isinstance(value, float)
          and (key in _TRACED or key.partition(".")[0] in _TRACED_FAMILIES))


def alone(config: ml_collections.ConfigDict, workdir: str) -> str | None:
  """Why this run cannot share a jitted round with others, or None."""
  if not config.sweep.vmap:
    return "sweep.vmap=false"
  if config.task != "classify":
    return f"task={config.task} trains one run at a time"
  if config.algorithm in _SEQUENTIAL_ALGORITHMS:
    return f"{config.algorithm} has its own server computation"
  if config.dp.enabled:
    return "client-level DP runs one at a time"
  if jax.process_count() > 1:
    return "a run over several processes trains one run at a time"
  if max(saved_rounds(workdir), default=0) >= config.rounds:
    return "already trained"
  return None


def groups(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]
           ) -> list[tuple[list[int], str | None, list[str]]]:
  """`[(run indices, why they run one after another or None, traced keys)]`: runs whose
  configs agree but for seed and traceable floats form a group, at most `sweep.chunk`."""
  out, by_shape = [], {}
  for i, (config, workdir) in enumerate(zip(configs, workdirs)):
    why = alone(config, workdir)
    if why:
      out.append(([i], why, []))
      continue
    flat = options_lib.identity(json.loads(config.to_json()))
    shape = json.dumps({k: v for k, v in flat.items()
                        if k != "seed" and not traceable(k, v)}, sort_keys=True)
    by_shape.setdefault(shape, []).append(i)
  for members in by_shape.values():
    chunk = configs[members[0]].sweep.chunk or len(members)
    for s in range(0, len(members), chunk):
      part = members[s:s + chunk]
      flats = [options_lib.flatten(configs[i]) for i in part]
      traced = sorted(k for k in flats[0]
                      if traceable(k, flats[0][k]) and len({f[k] for f in flats}) > 1)
      out.append((part, None if len(part) > 1 else "nothing to stack it with", traced))
  return sorted(out, key=lambda g: g[0][0])


def train_runs(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]
               ) -> list[dict]:
  """Trains (or resumes) every run, side by side where `groups` allows; their summaries,
  in order. Every config is checked before any run starts."""
  for config in configs:
    options_lib.validate(config)
  summaries = [None] * len(configs)
  for part, why, traced in groups(configs, workdirs):
    if why is None:
      _stacked(configs, workdirs, part, traced, summaries)
    else:
      for i in part:
        one = train_ddpm if configs[i].task == "ddpm" else train_and_evaluate
        summaries[i] = one(configs[i], workdirs[i])
  return summaries


def _say(text: str) -> None:
  print(f"fedjax-gen: {text}", file=sys.stderr)


def _stacked(configs, workdirs, part: list[int], traced: list[str], summaries) -> None:
  """Trains the runs `part` in one jitted round, or one after another (saying why) when
  their shapes or plan differ after setup, or tracing shows the algorithm needs a traced
  float as a Python value."""
  with contextlib.ExitStack() as held:
    members = []
    for i in part:
      run = held.enter_context(open_run(configs[i], workdirs[i]))
      s = _setup(configs[i], workdirs[i])
      run.commit()
      data_lib.save_label_heatmap(s.label_counts, f"{workdirs[i]}/label_counts.png",
                                  class_names=s.class_names,
                                  title=f"{configs[i].dataset} {configs[i].partition}")
      members.append(Member(configs[i], run, s, {}))
    sims = [m.setup.sim for m in members]
    names = ", ".join(workdirs[i].rstrip("/").rsplit("/", 1)[-1] for i in part)
    why = runs_lib.unstackable(sims)
    if why is None:
      values = [options_lib.flatten(m.config) for m in members]
      stacked = runs_lib.StackedRuns(sims, members[0].setup.alg_fn,
                                     {k: [v[k] for v in values] for k in traced},
                                     sharding=sims[0].sharding)
      try:
        stacked.check(jax.eval_shape(sims[0].init, members[0].setup.params))
      except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
              jax.errors.TracerIntegerConversionError, TypeError) as e:
        why = (f"the algorithm cannot take {', '.join(traced)} as traced values "
               f"({type(e).__name__})")
    if why is not None:
      _say(f"{len(part)} runs one after another ({names}): {why}")
      for i, m in zip(part, members):
        summaries[i] = train_members([m])[0]
      return
    _say(f"{len(part)} runs side by side in one jitted round ({names})"
         + (f", traced: {', '.join(traced)}" if traced else ""))
    for i, summary in zip(part, train_members(members, stacked)):
      summaries[i] = summary
