"""`fedjax-gen` command line: `run EXPERIMENT [KEY=VALUE ...] --workdir DIR` and `list`."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="fedjax-gen", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  run = sub.add_parser("run", help="run (or resume) an experiment")
  run.add_argument("experiment", help="built-in name (see `fedjax-gen list`) or config path")
  run.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
  run.add_argument("--workdir", required=True, help="folder for metrics, plots, checkpoints")
  sub.add_parser("list", help="list built-in experiments")
  args, extra = parser.parse_known_args(argv)
  if extra and (args.command != "run" or any("=" not in e for e in extra)):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  if extra:  # KEY=VALUE overrides given after --workdir
    args.overrides += extra

  from fedjax_gen import config as config_lib
  if args.command == "list":
    print("\n".join(config_lib.builtin_experiments()))
    return 0
  try:
    config = config_lib.apply_overrides(config_lib.load_config(args.experiment), args.overrides)
    from fedjax_gen.run import train_and_evaluate  # imports JAX: after the cheap checks
    summary = train_and_evaluate(config, args.workdir)
  except (ValueError, FileNotFoundError, PermissionError, FloatingPointError, ImportError) as e:
    print(f"fedjax-gen: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
