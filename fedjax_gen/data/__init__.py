"""Datasets, client partitions, padded federated arrays and the host population store."""

from fedjax_gen.data.datasets import (DATASETS, FASHION_MNIST_DIR, SOURCES,
                                      Dataset, from_arrays, load_dataset,
                                      read_idx)
from fedjax_gen.data.federated import (ClientArrays, FederatedData, client_indices,
                                       federated_data, local_split_seed,
                                       make_federated_data, make_federated_store,
                                       stack_clients)
from fedjax_gen.data.options import DATASET_CLASSES
from fedjax_gen.data.partition import (PARTITIONS, dirichlet,
                                       format_label_counts, iid, label_counts,
                                       label_skew,
                                       label_k, partition, quantity,
                                       save_label_heatmap, shards, split_local)
from fedjax_gen.data.store import (FlatClients, PopulationStore, padded_bytes,
                                   power_law_population, power_law_sizes)

__all__ = [
    "DATASET_CLASSES", "DATASETS", "FASHION_MNIST_DIR", "SOURCES", "Dataset", "from_arrays", "load_dataset",
    "read_idx", "ClientArrays", "FederatedData", "local_split_seed",
    "make_federated_data", "stack_clients", "PARTITIONS", "dirichlet",
    "format_label_counts", "iid", "label_counts", "label_skew", "label_k", "partition",
    "quantity", "save_label_heatmap", "shards", "split_local", "client_indices",
    "federated_data", "make_federated_store", "FlatClients", "PopulationStore",
    "padded_bytes", "power_law_population", "power_law_sizes",
]
