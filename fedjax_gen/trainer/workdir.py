"""A run's work folder: held by one process at a time, its `config.json` written only once
setup has succeeded, and every way out of the round loop (an error, Ctrl-C, SIGTERM)
leaving only whole checkpoints behind and saying which one.

`open_run` holds the folder for a run; `training` guards its round loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from typing import Callable, Iterator

import ml_collections

from fedjax_gen.outputs import atomic_write, is_primary, saved_rounds
from fedjax_gen.trainer import options
from fedjax_gen.trainer.checkpoint import Checkpointer

try:
  import fcntl
except ImportError:  # Windows: no advisory locks; runs are not guarded against each other
  fcntl = None

LOCK = ".lock"


class Interrupted(KeyboardInterrupt):
  """Training stopped by Ctrl-C or SIGTERM; `checkpoint` is the newest saved round (0: none)."""

  def __init__(self, workdir: str, checkpoint: int, signum: int = signal.SIGINT):
    super().__init__(workdir, checkpoint)
    self.workdir, self.checkpoint, self.signum = workdir, checkpoint, signum

  def __str__(self) -> str:
    if self.checkpoint:
      return (f"interrupted after round {self.checkpoint} (checkpoint saved in "
              f"{self.workdir}); run the same command to resume")
    return "interrupted before the first checkpoint; run the same command to start again"


def check_workdir(config: ml_collections.ConfigDict, workdir: str, *,
                  resumable: tuple[str, ...] = (), custom: dict | None = None) -> dict:
  """The `config.json` this run will write, after checking, without writing, that the folder
  holds no run of another config (only keys whose role is "free", or in `resumable`, may
  differ) and none trained past `config.rounds`. `custom`: what the caller passed instead
  of the config's model, dataset or algorithm; part of the run's identity."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir {workdir!r} is a file, not a folder; pass a folder (it is "
                     "created if missing).")
  current = json.loads(config.to_json())
  if custom:
    current["custom"] = custom
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    try:
      with open(path) as f:
        saved = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
      raise ValueError(f"{path} is not valid JSON ({e}); it is not a run this version wrote: "
                       "use a new --workdir.") from None
    diff = options.changed(saved, current, allowed=("free", *resumable))
    if diff:
      old, new = options.flatten(saved), options.flatten(current)
      old = {options.RENAMED.get(k, k): v for k, v in old.items()}
      changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" if k in new
                          else f"{k}={old[k]!r}, a key this version no longer has"
                          for k in diff)
      raise ValueError(f"Work folder {workdir!r} holds a run of a different config "
                       f"({changes}). Use a new --workdir, or delete this one to start over.")
    if (saved.get("dp", {}).get("enabled") and saved["dp"].get("target_epsilon", 0) > 0
        and saved.get("rounds") != current["rounds"]):
      raise ValueError(f"Work folder {workdir!r} holds a run whose DP noise was calibrated "
                       f"to dp.target_epsilon over its rounds={saved.get('rounds')}; another "
                       "rounds would change its noise. Use a new --workdir.")
  done = max(saved_rounds(workdir), default=0)
  if done > config.rounds:
    raise ValueError(f"Work folder {workdir!r} holds a run already trained for {done} rounds; "
                     f"rounds={config.rounds} would relabel its results. Pass rounds>={done} "
                     "(or see them with `fedjax-gen eval --workdir`), or use a new --workdir.")
  return current


class _Signals:
  """SIGINT and SIGTERM while a run holds its folder. Before the round loop they raise
  KeyboardInterrupt (nothing to save yet); in it (`deferred`) the first only asks the loop
  to stop after the round, which saves a checkpoint, and a second raises at once. Each is
  also recorded, so one whose KeyboardInterrupt Python swallowed (raised inside a garbage
  collection callback, say) still stops the run before its next round."""

  def __init__(self, workdir: str):
    self.workdir, self.received, self.deferred = workdir, 0, False

  def __call__(self, signum, frame):
    first, self.received = not self.received, self.received or signum
    if self.deferred and first:
      print("fedjax-gen: stopping after this round to save a checkpoint (press Ctrl-C "
            "again to stop at once)", file=sys.stderr)
      return
    raise self.interrupted()

  def interrupted(self) -> Interrupted:
    return Interrupted(self.workdir, max(saved_rounds(self.workdir), default=0),
                       self.received or signal.SIGINT)


class Run:
  """What `open_run` yields: `commit()` writes `config.json` once setup has succeeded."""

  def __init__(self, workdir: str, current: dict):
    self.workdir, self.current, self.committed = workdir, current, False
    self.signals = _Signals(workdir)

  def commit(self) -> None:
    atomic_write(os.path.join(self.workdir, "config.json"),
                 json.dumps(self.current, indent=2, sort_keys=True) + "\n")
    self.committed = True


@contextlib.contextmanager
def open_run(config: ml_collections.ConfigDict, workdir: str, *,
             resumable: tuple[str, ...] = (), custom: dict | None = None) -> Iterator[Run]:
  """Holds `workdir` for one run of `config` (see `check_workdir`): a second process is
  refused while this one runs (an OS lock, released even when the process is killed), and
  Ctrl-C or SIGTERM end it in order (`_Signals`; main thread only). A folder this call
  created is removed again when the run fails before `commit()`."""
  current = check_workdir(config, workdir, resumable=resumable, custom=custom)
  created = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    lock = _lock(workdir) if is_primary() else None
  except OSError as e:
    raise PermissionError(f"Work folder {workdir!r} is not writable ({e.strerror}); pass "
                          "--workdir pointing to a folder you can write.") from None
  run = Run(workdir, current)
  main = threading.current_thread() is threading.main_thread()
  handler = lambda signum, frame: run.signals(signum, frame)  # runs may share one
  before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)
            } if main else {}
  try:
    run.current = check_workdir(config, workdir, resumable=resumable, custom=custom)  # held
    yield run
  finally:
    for s, handler in before.items():
      signal.signal(s, handler)
    if lock is not None:
      if created and not run.committed:
        os.remove(os.path.join(workdir, LOCK))
      os.close(lock)  # releases the lock
    if created and not run.committed:
      with contextlib.suppress(OSError):
        os.rmdir(workdir)  # only if empty: a generated-data cache, say, is kept


def _lock(workdir: str) -> int | None:
  """An exclusive lock on `workdir/.lock` (its file descriptor), or a one-line error naming
  the process that holds it."""
  if fcntl is None:
    return None
  path = os.path.join(workdir, LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
    os.close(fd)
    raise ValueError(f"Work folder {workdir!r} is in use by a run in progress (process "
                     f"{holder}); wait for it to end, or use another --workdir.") from None
  os.ftruncate(fd, 0)
  os.write(fd, f"{os.getpid()}\n".encode())
  return fd


def loss_not_finite(what: str, loss: float, round_: int, ckpt: Checkpointer,
                    hint: str) -> FloatingPointError:
  """The error that stops a round loop whose loss became NaN or infinite, naming the newest
  checkpoint once its pending save is on disk (or that none was saved)."""
  ckpt.wait()
  last = ckpt.latest_round()
  kept = (f"The last checkpoint (round {last}) is intact. " if last else
          "No checkpoint was saved before it. ")
  return FloatingPointError(f"{what} became {loss} at round {round_}; stopped. {kept}{hint}")


@contextlib.contextmanager
def training(run: Run, ckpt: Checkpointer) -> Iterator[Callable[[], int]]:
  """Guards a round loop: yields `stop_requested()` (the number of a signal received since
  the run began, else 0), after which the loop saves a checkpoint and raises `Interrupted`.
  On every way out a pending checkpoint save is finished, so each checkpoint on disk is
  whole; a KeyboardInterrupt becomes `Interrupted`, naming the newest one."""
  signals = run.signals
  signals.deferred = True
  try:
    if signals.received:  # a start-up interrupt that Python swallowed
      raise signals.interrupted()
    yield lambda: signals.received
  except KeyboardInterrupt:
    with contextlib.suppress(Exception):
      ckpt.close()
    raise signals.interrupted() from None  # names the checkpoint now on disk
  except BaseException:
    with contextlib.suppress(Exception):  # the error in flight is the one to report
      ckpt.close()
    raise
  finally:
    signals.deferred = False
  ckpt.close()
