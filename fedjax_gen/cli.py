"""`fedjax-gen` command line: `run EXPERIMENT [KEY=VALUE ...] --workdir DIR`, `eval --workdir
DIR [KEY=VALUE ...]` (the last checkpoint again, under other evaluation settings), `config
EXPERIMENT [KEY=VALUE ...]` (the resolved config with each key's meaning), `list` and
`bench`."""

from __future__ import annotations

import argparse
import json
import sys


def trainer(config):
  """The function that runs `config`, by its `task` key."""
  from fedjax_gen import trainer as trainer_lib
  if config.task == "ddpm":
    return trainer_lib.train_ddpm
  if config.task != "classify":
    raise ValueError(f"Unknown task {config.task!r}; valid: classify, ddpm.")
  return trainer_lib.train_and_evaluate


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="fedjax-gen", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  run = sub.add_parser("run", help="run (or resume) an experiment")
  run.add_argument("experiment", help="built-in name (see `fedjax-gen list`) or config path")
  run.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
  run.add_argument("--workdir", required=True, help="folder for metrics, plots, checkpoints")
  ev = sub.add_parser("eval", help="evaluate a run's last checkpoint again, with other "
                      "evaluation-only settings (e.g. personalized.newcomer_steps=50); writes nothing")
  ev.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
  ev.add_argument("--workdir", required=True, help="the folder of a `run`")
  cf = sub.add_parser("config", help="print an experiment's resolved config, each key with "
                      "its meaning")
  cf.add_argument("experiment", help="built-in name (see `fedjax-gen list`) or config path")
  cf.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
  sub.add_parser("list", help="list built-in experiments")
  sub.add_parser("bench", add_help=False, help="round-throughput benchmark vs a JAX loop, "
                 "PyTorch and FedJAX (experiments/benchmarks/round_bench.py; flags pass through)")
  args, extra = parser.parse_known_args(argv)
  if args.command == "bench":
    return _bench(extra)
  if extra and (args.command not in ("run", "eval", "config")
                or any("=" not in e for e in extra)):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  if extra:  # KEY=VALUE overrides given after --workdir
    args.overrides += extra

  from fedjax_gen import config as config_lib
  if args.command == "list":
    print("\n".join(config_lib.builtin_experiments()))
    return 0
  try:
    if args.command == "eval":
      from fedjax_gen.trainer import evaluate_checkpoint
      summary = evaluate_checkpoint(args.workdir, args.overrides)
    elif args.command == "config":
      config = config_lib.apply_overrides(config_lib.load_config(args.experiment),
                                          args.overrides)
      config_lib.validate(config)
      print(config_lib.describe(config))
      return 0
    else:
      config = config_lib.apply_overrides(config_lib.load_config(args.experiment),
                                          args.overrides)
      summary = trainer(config)(config, args.workdir)
  except (ValueError, FileNotFoundError, PermissionError, FloatingPointError, ImportError) as e:
    print(f"fedjax-gen: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary, indent=2))
  return 0


def _bench(argv: list[str]) -> int:
  """Runs `experiments/benchmarks/round_bench.py` of this checkout with `argv`."""
  import importlib.util
  import os
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.path.join(root, "experiments", "benchmarks", "round_bench.py")
  if not os.path.exists(path):
    print(f"fedjax-gen: error: {path} not found (needs a source checkout)", file=sys.stderr)
    return 2
  spec = importlib.util.spec_from_file_location("round_bench", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.main(argv)


if __name__ == "__main__":
  sys.exit(main())
