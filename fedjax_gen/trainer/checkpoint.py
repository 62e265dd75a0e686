"""Checkpoints of the round loop with orbax-checkpoint (atomic: a killed save is ignored)."""

from __future__ import annotations

import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from fedjax_gen.outputs import saved_rounds

__all__ = ["Checkpointer", "saved_rounds"]


class Checkpointer:
  """Saves `{"server", "clients", "elapsed_s"}` every few rounds into `workdir/checkpoints`."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.workdir = os.path.abspath(workdir)
    self.manager = ocp.CheckpointManager(
        os.path.join(self.workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_handlers=ocp.StandardCheckpointHandler())  # metadata readable before a restore

  def latest_round(self) -> int:
    step = self.manager.latest_step()
    return 0 if step is None else int(step)

  def save(self, round_: int, server, clients, elapsed_s: float) -> None:
    state = {"server": server, "clients": clients, "elapsed_s": np.float64(elapsed_s)}
    self.manager.save(round_, args=ocp.args.StandardSave(state))

  def restore(self, server, clients, *, set_aside: bool = True, at_most: int | None = None,
              saved_shapes: bool = False):
    """`(server, clients, elapsed_s, round)` from the newest readable checkpoint (of a round
    <= `at_most`, when given), into the structure (and shardings) of the given states. An
    unreadable newer one is named in a one-line warning and, with `set_aside`, moved to
    `workdir/unreadable-checkpoint-N` (the run will save that round again). None readable:
    a ValueError naming the folders. `saved_shapes`: `clients` is a flat dict of arrays
    whose shapes grow during a run (`engine.StreamedSimulation`'s): read them as saved."""
    target = {"server": server, "clients": clients, "elapsed_s": np.float64(0)}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    bad = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      if at_most is not None and step > at_most:
        continue
      self._check_layout(step, saved_shapes, clients)
      try:
        if saved_shapes and clients:
          meta = self.manager.item_metadata(step)["clients"]
          abstract["clients"] = {k: jax.ShapeDtypeStruct(tuple(meta[k].shape), meta[k].dtype)
                                 for k in clients}
        state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # orbax and TensorStore raise many kinds on a damaged file
        first = (str(e).splitlines() or [""])[0]
        first = first if len(first) <= 150 else first[:150] + "..."
        bad.append((step, f"{type(e).__name__}: {first}"))
        continue
      for b, why in bad:
        self._unreadable(b, why, step, set_aside)
      return state["server"], state["clients"], float(state["elapsed_s"]), int(step)
    folders = ", ".join(os.path.join(self.workdir, "checkpoints", str(b)) for b, _ in bad)
    raise ValueError(f"No checkpoint in {self.workdir!r} can be read ({folders}: "
                     f"{bad[0][1] if bad else 'none saved'}). If the run's code or config "
                     "changed, use a new --workdir; if the files are damaged, remove "
                     "those folders to start over.")

  def _check_layout(self, step: int, saved_shapes: bool, clients) -> None:
    """One line where the checkpoint's client states were written under the other
    `data.layout` (their forms differ; algorithms without client states resume either way)."""
    try:
      saved = self.manager.item_metadata(step)["clients"]
    except Exception:  # unreadable: restore says so
      return
    stored = isinstance(saved, dict) and set(saved) == {"slot", "rows", "init"}
    if clients and saved and stored != saved_shapes:
      was, now = ("store", "device") if stored else ("device", "store")
      raise ValueError(f"The checkpoints in {self.workdir!r} hold client states written with "
                       f"data.layout={was}; this run has data.layout={now}. Resume it with "
                       f"data.layout={was}.")

  def discard_after(self, round_: int) -> None:
    """Deletes the checkpoints of rounds after `round_`: a run resumed from an older one
    (to stay in step with runs it trains beside) computes those rounds again, identically."""
    for step in self.manager.all_steps():
      if step > round_:
        self.manager.delete(step)

  def _unreadable(self, step: int, why: str, fallback: int, set_aside: bool) -> None:
    folder = os.path.join(self.workdir, "checkpoints", str(step))
    if set_aside:
      moved = os.path.join(self.workdir, f"unreadable-checkpoint-{step}")
      shutil.rmtree(moved, ignore_errors=True)
      shutil.move(folder, moved)
      self.manager.reload()
      where = f"moved to {moved}"
    else:
      where = "left in place"
    print(f"fedjax-gen: warning: checkpoint {folder} is unreadable ({why}); {where}, "
          f"using round {fallback}", file=sys.stderr)

  def wait(self) -> None:
    """Blocks until a pending (asynchronous) save is on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
