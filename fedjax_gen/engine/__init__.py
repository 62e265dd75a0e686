"""The simulation engine: vmapped local training, rounds, evaluation.

It knows no models, configs or files: it takes an algorithm's functions, the population's
arrays (or, `StreamedSimulation`, a host store of them) and an `ExecutionPlan`.
"""

from fedjax_gen.engine.evaluation import Evaluator, masked_cross_entropy, personalized_summary
from fedjax_gen.engine.local import LocalSchedule
from fedjax_gen.engine.simulation import ExecutionPlan, RoundMetrics, Simulation
from fedjax_gen.engine.streamed import StreamedSimulation
from fedjax_gen.types import ClientData

__all__ = ["ClientData", "Evaluator", "ExecutionPlan", "LocalSchedule", "RoundMetrics",
           "Simulation", "StreamedSimulation", "masked_cross_entropy", "personalized_summary"]
