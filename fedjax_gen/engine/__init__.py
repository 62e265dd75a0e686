"""The simulation engine: vmapped local training, rounds, evaluation."""

from fedjax_gen.engine.evaluation import Evaluator, masked_cross_entropy, personalized_summary
from fedjax_gen.engine.local import ClientData, LocalSchedule
from fedjax_gen.engine.simulation import (ExecutionPlan, RoundMetrics, Simulation, auto_plan,
                                          uses_conv)

__all__ = ["ClientData", "Evaluator", "ExecutionPlan", "LocalSchedule", "RoundMetrics",
           "Simulation", "auto_plan", "masked_cross_entropy", "personalized_summary",
           "uses_conv"]
