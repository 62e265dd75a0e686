"""Datasets, client partitions and padded federated arrays."""

from fedjax_gen.data.datasets import (DATASETS, FASHION_MNIST_DIR, SOURCES,
                                      Dataset, from_arrays, load_dataset,
                                      read_idx)
from fedjax_gen.data.federated import (ClientArrays, FederatedData,
                                       local_split_seed, make_federated_data,
                                       stack_clients)
from fedjax_gen.data.options import DATASET_CLASSES
from fedjax_gen.data.partition import (PARTITIONS, dirichlet,
                                       format_label_counts, iid, label_counts,
                                       label_k, partition, quantity,
                                       save_label_heatmap, shards, split_local)

__all__ = [
    "DATASET_CLASSES", "DATASETS", "FASHION_MNIST_DIR", "SOURCES", "Dataset", "from_arrays", "load_dataset",
    "read_idx", "ClientArrays", "FederatedData", "local_split_seed",
    "make_federated_data", "stack_clients", "PARTITIONS", "dirichlet",
    "format_label_counts", "iid", "label_counts", "label_k", "partition",
    "quantity", "save_label_heatmap", "shards", "split_local",
]
