"""`fedjax-gen` command line: `run EXPERIMENT [KEY=VALUE ...] --workdir DIR`, `eval --workdir
DIR [KEY=VALUE ...]` (the last checkpoint again, under other evaluation settings), `config
EXPERIMENT [KEY=VALUE ...]` (the resolved config with each key's meaning), `list` (the
built-in experiments, each with a line on what it is), `report RUN_DIR ...` (runs compared:
a Markdown table of final metrics, seeds as mean ± std, and a plot), `bench` and
`--version`. `python -m fedjax_gen ...` is the same command."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import threading


def trainer(config):
  """The function that runs `config`, by its `task` key."""
  from fedjax_gen import trainer as trainer_lib
  if config.task == "ddpm":
    return trainer_lib.train_ddpm
  if config.task != "classify":
    raise ValueError(f"Unknown task {config.task!r}; valid: classify, ddpm.")
  return trainer_lib.train_and_evaluate


def version() -> str:
  """The installed fedjax-gen's version (pyproject.toml's); `fedjax_gen.__version__` in a
  checkout that is not installed."""
  import importlib.metadata
  try:
    return importlib.metadata.version("fedjax-gen")
  except importlib.metadata.PackageNotFoundError:
    import fedjax_gen
    return fedjax_gen.__version__


def experiments() -> list[tuple[str, str]]:
  """The built-in experiments (`fedjax_gen/configs/*.py`, as `config.builtin_experiments`),
  each with the first line of its module docstring, read from the file: listing them runs
  no config code and does not wait for JAX."""
  import ast
  import os
  import pkgutil
  folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
  out = []
  for name in sorted(m.name for m in pkgutil.iter_modules([folder])
                     if not m.name.startswith("_")):
    with open(os.path.join(folder, f"{name}.py")) as f:
      doc = ast.get_docstring(ast.parse(f.read())) or ""
    out.append((name, doc.strip().split("\n")[0] or "(no description)"))
  return out


def _report(args) -> int:
  """`fedjax-gen report`: the table to stdout, the plot's path to stderr."""
  from fedjax_gen import report
  try:
    rows = report.compare(args.runs)
    metric = report.plot_metric(rows, args.metric)
    print(report.markdown(rows))
    missing = report.plot(rows, args.plot, metric)
  except BrokenPipeError:
    raise
  except (ValueError, OSError) as e:
    print(f"fedjax-gen: error: {e}", file=sys.stderr)
    return 2
  for label in missing:
    print(f"fedjax-gen: {label} logged no {metric}; left out of the plot", file=sys.stderr)
  print(f"fedjax-gen: {metric} plot saved to {args.plot}", file=sys.stderr)
  return 0


def main(argv: list[str] | None = None, prog: str = "fedjax-gen") -> int:
  """Runs the command line on `argv`; returns the exit status."""
  try:
    return _main(argv, prog)
  except BrokenPipeError:  # `fedjax-gen config X | head`: the reader left early, no error
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second one at exit
    return 128 + signal.SIGPIPE


def _main(argv: list[str] | None, prog: str) -> int:
  parser = argparse.ArgumentParser(prog=prog, description=__doc__)
  parser.add_argument("--version", action="version", version=f"fedjax-gen {version()}")
  sub = parser.add_subparsers(dest="command", required=True)
  run = sub.add_parser("run", help="run (or resume) an experiment")
  run.add_argument("experiment", help="built-in name (see `fedjax-gen list`) or config path")
  run.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
  run.add_argument("--workdir", required=True, help="folder for metrics, plots, checkpoints")
  hosts = run.add_argument_group(
      "several processes (hosts) in one run, by jax.distributed; every process runs the same "
      "command on a shared --workdir, process 0 writes")
  hosts.add_argument("--coordinator", metavar="HOST:PORT",
                     help="process 0's address (with --num-processes and --process-id)")
  hosts.add_argument("--num-processes", type=int, metavar="N")
  hosts.add_argument("--process-id", type=int, metavar="I")
  hosts.add_argument("--distributed", action="store_true",
                     help="join a run whose processes JAX finds itself (TPU pods, SLURM, "
                     "Kubernetes: jax.distributed.initialize() with no arguments)")
  sw = sub.add_parser("sweep", help="run every combination of KEY=V1,V2 values (each in "
                      "its own sub-folder), then compare them (report.md, report.png)")
  sw.add_argument("experiment", help="built-in name (see `fedjax-gen list`) or config path")
  sw.add_argument("overrides", nargs="*", metavar="KEY=V1,V2",
                  help="KEY=V1,V2,... sweeps; KEY=VALUE fixes")
  sw.add_argument("--workdir", required=True, help="folder holding the runs and the report")
  ev = sub.add_parser("eval", help="evaluate a run's last checkpoint again, with other "
                      "evaluation-only settings (e.g. personalized.newcomer_steps=50); writes nothing")
  ev.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
  ev.add_argument("--workdir", required=True, help="the folder of a `run`")
  cf = sub.add_parser("config", help="print an experiment's resolved config, each key with "
                      "its meaning")
  cf.add_argument("experiment", help="built-in name (see `fedjax-gen list`) or config path")
  cf.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
  sub.add_parser("list", help="list built-in experiments, each with a one-line description")
  rp = sub.add_parser("report", help="compare runs: a Markdown table of their final metrics "
                      "(runs differing only in seed as mean ± std) and a plot")
  rp.add_argument("runs", nargs="+", metavar="RUN_DIR",
                  help="a run's --workdir, or a folder holding runs")
  rp.add_argument("--plot", default="report.png", metavar="PATH",
                  help="where to save the plot (default: report.png)")
  rp.add_argument("--metric", default=None, metavar="KEY",
                  help="the metrics.jsonl key to plot against round (default: "
                  "global_accuracy, or the first accuracy the runs logged)")
  sub.add_parser("bench", add_help=False, help="round-throughput benchmark vs a JAX loop, "
                 "PyTorch and FedJAX (fedjax_gen_bench.round_bench; flags pass through, "
                 "`fedjax-gen bench --help` lists them; writes ./fedjax-gen-out/round_bench; "
                 "torch and FedJAX: pip install \"fedjax-gen[bench]\")")
  args, extra = parser.parse_known_args(argv)
  if args.command == "bench":
    return _bench(extra)
  if args.command == "report" and not extra:
    return _report(args)
  if args.command == "list" and not extra:
    listed = experiments()
    width = max((len(name) for name, _ in listed), default=0)
    print("\n".join(f"{name:<{width}}  {line}" for name, line in listed))
    return 0
  if extra and (args.command not in ("run", "eval", "config", "sweep")
                or any("=" not in e for e in extra)):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  if extra:  # KEY=VALUE overrides given after --workdir
    args.overrides += extra
  if threading.current_thread() is not threading.main_thread():
    return _dispatch(args)
  before = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
  hook, sys.unraisablehook = sys.unraisablehook, _quiet_unraisable
  _signal_received[0] = 0
  try:
    return _dispatch(args)
  finally:  # as they were: main() may be called from Python
    for s, handler in before.items():
      signal.signal(s, handler)
    sys.unraisablehook = hook


def _dispatch(args) -> int:
  """`run`, `eval` and `config`: the summary (or config) to stdout, errors in one line."""
  try:  # imports too: a Ctrl-C while JAX loads is one line like any other
    from absl import logging as absl_logging
    # orbax reports a failed background save (a full disk) in absl's log, pages of it, as
    # well as by raising; the raised error is what we print.
    absl_logging.set_verbosity(absl_logging.FATAL)
    if args.command == "run" and _join_processes(args):
      # gloo writes its connection log to the process's stdout: to stderr with it, so that
      # stdout carries only the summary
      sys.stdout.flush()
      stdout, _ = os.dup(1), os.dup2(2, 1)
      restore = lambda: (sys.stdout.flush(), os.dup2(stdout, 1))
    else:
      restore = lambda: None
    from fedjax_gen import config as config_lib
    if args.command == "eval":
      from fedjax_gen.trainer import evaluate_checkpoint
      summary = evaluate_checkpoint(args.workdir, args.overrides)
    elif args.command == "sweep":
      from fedjax_gen import sweep
      from fedjax_gen.trainer.runs import train_runs
      table, plot_path = sweep.run_sweep(args.experiment, args.overrides, args.workdir,
                                         train_runs)
      print(table)
      print(f"fedjax-gen: report in {os.path.join(args.workdir, 'report.md')}, plot in "
            f"{plot_path}", file=sys.stderr)
      return 0
    elif args.command == "config":
      config = config_lib.apply_overrides(config_lib.load_config(args.experiment),
                                          args.overrides)
      config_lib.validate(config)
      print(config_lib.describe(config))
      return 0
    else:
      config = config_lib.apply_overrides(config_lib.load_config(args.experiment),
                                          args.overrides)
      train = trainer(config)
      if _signal_received[0]:  # a Ctrl-C that Python swallowed while JAX loaded
        raise KeyboardInterrupt
      summary = train(config, args.workdir)
      restore()
  except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (`_interrupt`)
    return _interrupted(e, getattr(args, "workdir", None) if args.command == "run" else None)
  except BrokenPipeError:
    raise
  except (ValueError, OSError, FloatingPointError, ImportError) as e:
    workdir = args.workdir if args.command == "run" else None
    print(f"fedjax-gen: error: {_one_line(e, workdir)}", file=sys.stderr)
    _exit_at_once[0] = True
    return 2
  print(json.dumps(summary, indent=2))
  return 0


def _join_processes(args) -> bool:
  """`jax.distributed.initialize` for a run over several processes, before JAX starts its
  backends: with the coordinator's address, the process count and this process's id, or
  found by JAX (--distributed). CPU processes talk through gloo. Whether it joined."""
  given = [args.coordinator, args.num_processes, args.process_id]
  if not args.distributed and all(v is None for v in given):
    return False
  if not args.distributed and any(v is None for v in given):
    raise ValueError("--coordinator, --num-processes and --process-id go together (or pass "
                     "--distributed where JAX finds them: TPU pods, SLURM, Kubernetes).")
  if args.num_processes is not None and not 0 <= args.process_id < args.num_processes:
    raise ValueError(f"--process-id must be in [0, {args.num_processes}), got "
                     f"{args.process_id}.")
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if args.distributed:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
  return True


def _one_line(e: BaseException, workdir: str | None = None) -> str:
  """A user-facing error as one line; an OSError from deep inside (a full disk, say, also
  when orbax's TensorStore reports it as a ValueError) names what failed and what to do."""
  text = str(e).strip()
  full = ((isinstance(e, OSError) and e.errno == errno.ENOSPC)
          or "No space left on device" in text)
  if full or (isinstance(e, OSError) and e.strerror
              and not isinstance(e, (FileNotFoundError, PermissionError))):
    what = os.strerror(errno.ENOSPC) if full else e.strerror
    where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
    from fedjax_gen.outputs import saved_rounds
    last = max(saved_rounds(workdir), default=0) if workdir else 0
    kept = (f"the checkpoint of round {last} is kept; " if last else
            "no checkpoint was saved yet; " if workdir else "")
    fix = "free disk space" if full else "fix this"
    return (f"{what}{where}; {kept}{fix}, then run the same command"
            + (" to resume." if last else " again."))
  return text.splitlines()[0] if text else type(e).__name__


_signal_received = [0]
_exit_at_once = [False]


def _interrupt(signum, frame):
  """Ctrl-C and SIGTERM (a preemptible machine going away, `kill`) alike: recorded, then
  KeyboardInterrupt. A run replaces this while it holds its folder (`trainer.workdir`)."""
  _signal_received[0] = _signal_received[0] or signum
  raise KeyboardInterrupt


def _quiet_unraisable(unraisable):
  """Python prints an "Exception ignored" traceback for an error it cannot raise: a Ctrl-C
  that lands in a garbage-collection callback (recorded by `_interrupt` and acted on), or
  asyncio callbacks in orbax's save threads after a failed save (the failure itself is
  raised and reported). The command line shows neither."""


def _interrupted(e: KeyboardInterrupt, workdir: str | None) -> int:
  """One line for an interrupted command; exit status 128 + the signal's number."""
  from fedjax_gen.outputs import saved_rounds  # light: JAX may be half imported
  signum = getattr(e, "signum", None) or _signal_received[0] or signal.SIGINT
  if getattr(e, "checkpoint", None) is not None:  # trainer.workdir.Interrupted
    message = str(e)
  elif workdir:
    last = max(saved_rounds(workdir), default=0)
    message = (f"interrupted; the checkpoint of round {last} is kept; run the same command "
               "to resume" if last else
               "interrupted before training began; run the same command to start")
  else:
    message = "interrupted"
  print(f"fedjax-gen: {message}", file=sys.stderr)
  _exit_at_once[0] = True
  return 128 + int(signum)


def console(prog: str = "fedjax-gen") -> None:
  """The `fedjax-gen` program. After an interrupt or an error it exits without the
  interpreter's teardown, which can crash while JAX is half initialised or log the leftovers
  of a failed background save (everything that can be saved is by then)."""
  code = main(prog=prog)
  if _exit_at_once[0]:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  sys.exit(code)


def _bench(argv: list[str]) -> int:
  """Runs the round benchmark, `fedjax_gen_bench.round_bench` (installed beside
  `fedjax_gen`, which never imports it otherwise: it holds the torch and FedJAX runners)."""
  import importlib.util
  if importlib.util.find_spec("fedjax_gen_bench") is None:
    print("fedjax-gen: error: the benchmark package fedjax_gen_bench is not installed; "
          "reinstall fedjax-gen (pip install -e . in a source checkout)", file=sys.stderr)
    return 2
  from fedjax_gen_bench import round_bench
  return round_bench.main(argv, prog="fedjax-gen bench")


if __name__ == "__main__":
  console()
