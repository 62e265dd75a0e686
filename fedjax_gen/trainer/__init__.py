"""The trainer layer: `train_and_evaluate` (classifiers, any algorithm), `train_ddpm` (the
federated DDPM), generation glue, the plan and convolution choice, checkpoints, and the
options every run understands (`options`)."""

from fedjax_gen.trainer.ddpm import train_ddpm
from fedjax_gen.trainer.options import base_config, validate
from fedjax_gen.trainer.train import (evaluate_checkpoint, read_run_config, restore_run,
                                      train_and_evaluate)

__all__ = ["base_config", "evaluate_checkpoint", "read_run_config", "restore_run",
           "train_and_evaluate", "train_ddpm", "validate"]
