"""Gen-FedSD's data side: which images each client generates (`fill`), and synthetic
examples appended to clients' real data (`synthetic`: Gen-FedSD's and GenFL's generated
sets, one cached generation call each). GenFL's server algorithm is `algorithms.genfl`;
the trainer's glue is `trainer.generation`."""

from fedjax_gen.augment.fill import FILL_RULES, fill_budget, fill_counts, fill_global, fill_max
from fedjax_gen.augment.synthetic import (GENERATOR_LOCATIONS, Augmented, augment_clients,
                                          balanced_labels, gen_fedsd_data, genfl_data,
                                          labels_of_counts, share_indices)

__all__ = [
    "Augmented", "FILL_RULES", "GENERATOR_LOCATIONS", "augment_clients", "balanced_labels",
    "fill_budget", "fill_counts", "fill_global", "fill_max", "gen_fedsd_data", "genfl_data",
    "labels_of_counts", "share_indices",
]
