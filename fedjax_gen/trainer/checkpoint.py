"""Checkpoints of the round loop with orbax-checkpoint (atomic: a killed save is ignored)."""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves `{"server", "clients", "elapsed_s"}` every few rounds into `workdir/checkpoints`."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_round(self) -> int:
    step = self.manager.latest_step()
    return 0 if step is None else int(step)

  def save(self, round_: int, server, clients, elapsed_s: float) -> None:
    state = {"server": server, "clients": clients, "elapsed_s": np.float64(elapsed_s)}
    self.manager.save(round_, args=ocp.args.StandardSave(state))

  def restore(self, server, clients):
    """Restores the latest checkpoint into the structure (and shardings) of the given states."""
    target = {"server": server, "clients": clients, "elapsed_s": np.float64(0)}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    state = self.manager.restore(self.manager.latest_step(),
                                 args=ocp.args.StandardRestore(abstract))
    return state["server"], state["clients"], float(state["elapsed_s"])

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
