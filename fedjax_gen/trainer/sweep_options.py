"""`sweep.*`: how many runs share one jitted round (`trainer.runs`); never what a run
computes."""

from fedjax_gen.types import Option

OPTIONS = (
    Option("vmap", True, "train runs that differ only in seed and float hyperparameters "
           "side by side, in one jitted round", "free"),
    Option("chunk", 0, "at most this many runs per jitted round (0 = all that can); lower "
           "it when the stacked populations do not fit in memory", "free"),
)


def check_options(c) -> None:
  if c.sweep.chunk < 0:
    raise ValueError(f"sweep.chunk must be >= 0 (0 = no limit), got {c.sweep.chunk}.")
