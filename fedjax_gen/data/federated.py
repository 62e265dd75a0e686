"""Federated datasets as padded dense arrays (one device transfer per run), or with the
training part in a host `PopulationStore` (`data.store`)."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from fedjax_gen.data.partition import label_counts as _label_counts
from fedjax_gen.data.partition import partition as _partition
from fedjax_gen.data.partition import split_local
from fedjax_gen.data.datasets import Dataset
from fedjax_gen.data.store import PopulationStore


class ClientArrays(NamedTuple):
  """Per-client examples stacked along a leading client axis, zero padded."""
  x: np.ndarray  # [clients, max_n, *example_shape] float32, zero padded
  y: np.ndarray  # [clients, max_n] int32, padded with 0
  count: np.ndarray  # [clients] int32, number of real examples per client


def stack_clients(x, y, indices: Sequence[np.ndarray], *,
                  pad_to: int | None = None) -> ClientArrays:
  """Gathers each client's examples into padded dense arrays.

  Args:
    x: [N, *example_shape] examples.
    y: [N] integer labels.
    indices: one index array into x/y per client; a client's examples keep
      the order of its index array.
    pad_to: pad the example axis to at least this length (default: the
      largest client).

  Returns:
    `ClientArrays`; entries past ``count[c]`` are zeros.
  """
  x, y = np.asarray(x), np.asarray(y)
  if len(x) != len(y):
    raise ValueError(f"x and y must have the same length, got {len(x)} and "
                     f"{len(y)}; pass matching examples and labels.")
  if len(indices) == 0:
    raise ValueError("indices is empty; pass one index array per client.")
  idx = [np.asarray(i, np.int64).reshape(-1) for i in indices]
  for c, i in enumerate(idx):
    if i.size and (i.min() < 0 or i.max() >= len(x)):
      raise ValueError(f"client {c} has indices outside [0, {len(x)}); "
                       "indices must point into x/y.")
  count = np.array([len(i) for i in idx], np.int32)
  max_n = int(count.max())
  if pad_to is not None:
    if pad_to < max_n:
      raise ValueError(f"pad_to={pad_to} is smaller than the largest client "
                       f"({max_n} examples); use pad_to >= {max_n} or None.")
    max_n = int(pad_to)
  xs = np.zeros((len(idx), max_n, *x.shape[1:]), np.float32)
  ys = np.zeros((len(idx), max_n), np.int32)
  for c, i in enumerate(idx):
    xs[c, :len(i)] = x[i]
    ys[c, :len(i)] = y[i]
  return ClientArrays(xs, ys, count)


class FederatedData(NamedTuple):
  """A partitioned dataset ready for simulation."""
  train: ClientArrays | PopulationStore  # clients' local training data
  test: ClientArrays  # clients' local test splits (personalized evaluation)
  global_test_x: np.ndarray  # dataset's test split
  global_test_y: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]
  label_counts: np.ndarray  # [clients, classes] train label counts


def local_split_seed(seed: int) -> int:
  """The seed `make_federated_data` uses for the local train/test split."""
  return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def client_indices(dataset: Dataset, *, num_clients: int, partition: str, seed: int,
                   alpha: float = 0.5, classes_per_client: int = 2, shards_per_client: int = 2,
                   min_client_size: int = 10, test_fraction: float = 0.25
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """`(train, test)`: each client's local train and test examples as index arrays into the
  dataset's train split: the partition ``partition.partition(..., seed=seed)``, each
  client's share split with ``split_local(..., seed=local_split_seed(seed))``. What
  `make_federated_data` pads and `make_federated_store` stores (arguments as there)."""
  parts = _partition(
      dataset.y_train, num_clients, partition, seed=seed, alpha=alpha,
      classes_per_client=classes_per_client,
      shards_per_client=shards_per_client, min_client_size=min_client_size)
  return split_local(parts, test_fraction=test_fraction, seed=local_split_seed(seed))


def federated_data(dataset: Dataset, train: Sequence[np.ndarray], test: Sequence[np.ndarray],
                   *, store: bool = False) -> FederatedData:
  """The `FederatedData` of per-client index lists (`client_indices`): the train part as
  padded `ClientArrays`, or with `store` as a `PopulationStore` (no padding; the local test
  parts stay padded either way)."""
  return FederatedData(
      train=(PopulationStore.from_indices(dataset.x_train, dataset.y_train, train) if store
             else stack_clients(dataset.x_train, dataset.y_train, train)),
      test=stack_clients(dataset.x_train, dataset.y_train, test),
      global_test_x=dataset.x_test,
      global_test_y=dataset.y_test,
      num_classes=dataset.num_classes,
      class_names=tuple(dataset.class_names),
      label_counts=_label_counts(dataset.y_train, train, dataset.num_classes))


def make_federated_data(dataset: Dataset, *, num_clients: int,
                        partition: str, seed: int, alpha: float = 0.5,
                        classes_per_client: int = 2, shards_per_client: int = 2,
                        min_client_size: int = 10, test_fraction: float = 0.25
                        ) -> FederatedData:
  """Partitions a dataset's train split across clients and stacks it.

  The train split is partitioned with ``partition.partition(..., seed=seed)``;
  each client's share is then split into local train/test parts with
  ``split_local(..., seed=local_split_seed(seed))`` (`client_indices`).

  Args:
    dataset: the centralised `Dataset`.
    num_clients: number of clients.
    partition: one of `partition.PARTITIONS`.
    seed: random seed.
    alpha: Dirichlet concentration ("dirichlet", "quantity").
    classes_per_client: labels per client ("label_k").
    shards_per_client: shards per client ("shards").
    min_client_size: minimum client size ("dirichlet", "quantity").
    test_fraction: fraction of each client's data held out locally, [0, 1).

  Returns:
    The `FederatedData`.
  """
  return federated_data(dataset, *client_indices(
      dataset, num_clients=num_clients, partition=partition, seed=seed, alpha=alpha,
      classes_per_client=classes_per_client, shards_per_client=shards_per_client,
      min_client_size=min_client_size, test_fraction=test_fraction))


def make_federated_store(dataset: Dataset, **kwargs) -> FederatedData:
  """`make_federated_data`'s partition (same arguments, same clients and examples) with the
  train part as a `PopulationStore`: no padding to the largest client."""
  return federated_data(dataset, *client_indices(dataset, **kwargs), store=True)
