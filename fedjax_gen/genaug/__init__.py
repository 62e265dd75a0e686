"""Generative augmentation against non-IID data: Gen-FedSD and GenFL (see `pipeline`).

* `fill`: Gen-FedSD's fill rules (images per client and class).
* `augment`: synthetic examples appended to clients' real data; Gen-FedSD's and GenFL's
  generated sets (one cached generation call each).
* `genfl`: GenFL's generative aggregation and the AIGC-only baseline as algorithms.
* `pipeline`: config checks, the generator, and what the trainer calls.
"""

from fedjax_gen.genaug.augment import (GENERATOR_LOCATIONS, Augmented, augment_clients,
                                       balanced_labels, gen_fedsd_data, genfl_data,
                                       labels_of_counts, share_indices)
from fedjax_gen.genaug.fill import FILL_RULES, fill_budget, fill_counts, fill_global, fill_max
from fedjax_gen.genaug.genfl import (LAM_POLICIES, AIGCServerState, GenFLServerState,
                                     aigc_only, genfl, lam_value, skew_factor, train_steps)
from fedjax_gen.genaug.pipeline import (GENERATIVE, GENERATORS, build_generator, check_config,
                                     fl_algorithm_name, make_generative_algorithm, prepare,
                                     resolve_generator_dir)

__all__ = [
    "AIGCServerState", "Augmented", "FILL_RULES", "GENERATIVE", "GENERATORS",
    "GENERATOR_LOCATIONS", "GenFLServerState", "LAM_POLICIES", "aigc_only",
    "augment_clients", "balanced_labels", "build_generator", "check_config",
    "fill_budget", "fill_counts", "fill_global", "fill_max", "fl_algorithm_name",
    "gen_fedsd_data", "genfl", "genfl_data", "labels_of_counts", "lam_value",
    "make_generative_algorithm", "prepare", "resolve_generator_dir", "share_indices",
    "skew_factor", "train_steps",
]
