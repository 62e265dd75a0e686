"""Synthetic data added to clients' real data: Gen-FedSD's gap filling and GenFL's shares.

* `augment_clients` appends synthetic examples after each client's real ones (re-padded);
  real data is never replaced, reordered or dropped, and a boolean marker says which
  slots are synthetic.
* `gen_fedsd_data` (Gen-FedSD, arXiv 2405.07925): every client fills its label gaps
  (`fill.fill_counts`) with generated images before training. In the paper each client
  runs the generator locally; we simulate that with ONE `generate_cached` call over all
  clients' labels (concatenated in client order, then split back), which draws every
  image with its own noise just as K local calls would, keeps the sampler's compiled
  batch shape full, and gives one cache entry per run.
* `genfl_data` (GenFL, arXiv 2503.20166): a class-balanced synthetic set
  (`per_class` images per class) that the server keeps for generative aggregation, and
  a random share of it for each client (`share` of the set, drawn without replacement,
  per client, from the seed). Where the generator runs is a config choice
  (`generator_on`): "server" sends each client the subset itself (downlink images);
  "clients" has each client generate its own share, for the same labels, with its own
  noise (the FL-trained generator sits on every client) -- here one batched call with a
  seed distinct from the server's, so clients' images are fresh draws, not copies of the
  server's. In simulation both use the same generator.

Every function checks `check_compatible(generator, ...)` BEFORE generating anything.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from fedjax_gen.data.federated import ClientArrays, FederatedData
from fedjax_gen.diffusion.generator import Generator, check_compatible, generate_cached
from fedjax_gen.augment.fill import fill_counts

GENERATOR_LOCATIONS = ("server", "clients")


def augment_clients(train: ClientArrays, extra_x, extra_y,
                    per_client_indices: Sequence[np.ndarray]
                    ) -> tuple[ClientArrays, np.ndarray]:
  """Appends `extra_x[idx_k], extra_y[idx_k]` after client k's real examples.

  Returns:
    The augmented `ClientArrays` (padded to the new largest client; counts are real +
    synthetic) and `is_synthetic [clients, max_n]` bool, True exactly on the appended
    slots. Client k's first `train.count[k]` examples are its real ones, unchanged and in
    their order.
  """
  extra_x, extra_y = np.asarray(extra_x), np.asarray(extra_y)
  num_clients = len(train.count)
  if len(per_client_indices) != num_clients:
    raise ValueError(f"Got synthetic indices for {len(per_client_indices)} clients, "
                     f"the data has {num_clients}.")
  if len(extra_x) != len(extra_y):
    raise ValueError(f"extra_x and extra_y differ in length ({len(extra_x)} vs "
                     f"{len(extra_y)}).")
  if len(extra_x) and extra_x.shape[1:] != train.x.shape[2:]:
    raise ValueError(f"Synthetic examples have shape {extra_x.shape[1:]}, the clients' "
                     f"{train.x.shape[2:]}.")
  idx = [np.asarray(i, np.int64).reshape(-1) for i in per_client_indices]
  real = np.asarray(train.count, np.int64)
  added = np.array([len(i) for i in idx], np.int64)
  count = real + added
  max_n = max(int(count.max()) if num_clients else 0, 1)
  x = np.zeros((num_clients, max_n, *train.x.shape[2:]), train.x.dtype)
  y = np.zeros((num_clients, max_n), train.y.dtype)
  is_synthetic = np.zeros((num_clients, max_n), bool)
  for k in range(num_clients):
    n, m = real[k], added[k]
    x[k, :n], y[k, :n] = train.x[k, :n], train.y[k, :n]
    if m:
      x[k, n:n + m], y[k, n:n + m] = extra_x[idx[k]], extra_y[idx[k]]
      is_synthetic[k, n:n + m] = True
  return ClientArrays(x, y, count.astype(np.int32)), is_synthetic


def labels_of_counts(counts: np.ndarray) -> np.ndarray:
  """`[clients, classes]` counts -> the labels they ask for, client-major, class-sorted."""
  counts = np.asarray(counts, np.int64)
  c = counts.shape[1]
  return np.concatenate([np.repeat(np.arange(c), row) for row in counts] +
                        [np.zeros(0, np.int64)]).astype(np.int32)


def _split_points(sizes) -> list[np.ndarray]:
  """Consecutive index ranges of the given sizes: client k's slice of a concatenation."""
  ends = np.cumsum(sizes)
  return [np.arange(e - s, e) for s, e in zip(sizes, ends)]


# The cached sets (`generate_cached` names) and which algorithm generates which.
GEN_FEDSD_SET, GENFL_SERVER_SET, GENFL_CLIENTS_SET = "gen_fedsd", "genfl_server", "genfl_clients"
CACHE_NAMES = {"gen_fedsd": (GEN_FEDSD_SET,), "genfl": (GENFL_SERVER_SET, GENFL_CLIENTS_SET),
               "aigc_only": (GENFL_SERVER_SET,)}


def _generate(generator: Generator, labels: np.ndarray, seed: int, cache_dir, name: str
              ) -> np.ndarray:
  if len(labels) == 0:
    return np.zeros((0, *generator.image_shape), np.float32)
  images = np.asarray(generate_cached(generator, labels, seed, cache_dir, name=name),
                      np.float32)
  if images.shape != (len(labels), *generator.image_shape):
    raise ValueError(f"The generator returned images of shape {images.shape}, expected "
                     f"{(len(labels), *generator.image_shape)}.")
  return images


def _with_train(fed: FederatedData, train: ClientArrays) -> FederatedData:
  counts = np.zeros_like(fed.label_counts)
  for k in range(len(train.count)):
    counts[k] = np.bincount(train.y[k, :train.count[k]], minlength=fed.num_classes)
  return fed._replace(train=train, label_counts=counts)


@dataclasses.dataclass
class Augmented:
  """Augmented federated data and what was added."""
  fed: FederatedData             # train holds real + synthetic examples
  synthetic_per_client: np.ndarray  # [clients] int, synthetic examples each received
  is_synthetic: np.ndarray       # [clients, max_n] bool marker of synthetic slots
  server_x: np.ndarray | None = None  # GenFL/AIGC-only: the server-held synthetic set
  server_y: np.ndarray | None = None


def gen_fedsd_data(fed: FederatedData, generator: Generator, rule: str = "max",
                   budget: int = 0, seed: int = 0, cache_dir: str | None = None
                   ) -> Augmented:
  """Gen-FedSD: each client's label gaps filled with generated images (module docstring).

  Raises ValueError before generating anything if the generator's image shape or number
  of classes differs from the dataset's, or the fill rule / budget is bad.
  """
  check_compatible(generator, fed.train.x.shape[2:], fed.num_classes)
  n_gen = fill_counts(fed.label_counts, rule, budget=budget)
  labels = labels_of_counts(n_gen)
  images = _generate(generator, labels, seed, cache_dir, GEN_FEDSD_SET)
  sizes = n_gen.sum(axis=1)
  train, marker = augment_clients(fed.train, images, labels, _split_points(sizes))
  return Augmented(_with_train(fed, train), sizes.astype(np.int64), marker)


def balanced_labels(num_classes: int, per_class: int) -> np.ndarray:
  """`per_class` of each class, class-sorted: GenFL's synthetic label set."""
  return np.repeat(np.arange(num_classes, dtype=np.int32), per_class)


def share_indices(num_synthetic: int, num_clients: int, share: float, seed: int
                  ) -> list[np.ndarray]:
  """Each client's share: `round(share * num_synthetic)` indices into the synthetic set,
  drawn without replacement from `default_rng([seed, 6, k])` for client k, sorted."""
  if not 0 <= share <= 1:
    raise ValueError(f"genfl.share must be in [0, 1] (the share of the synthetic set each "
                     f"client receives), got {share}.")
  size = int(round(share * num_synthetic))
  return [np.sort(np.random.default_rng([seed, 6, k]).choice(num_synthetic, size,
                                                             replace=False))
          for k in range(num_clients)]


def clients_seed(seed: int) -> int:
  """The generation seed of clients' own shares (generator_on="clients")."""
  return int(np.random.SeedSequence([seed, 7]).generate_state(1)[0] >> 1)


def genfl_data(fed: FederatedData, generator: Generator, *, per_class: int, share: float,
               generator_on: str = "server", seed: int = 0, cache_dir: str | None = None,
               augment: bool = True) -> Augmented:
  """GenFL's synthetic data: the server-held balanced set and clients' shares.

  Args:
    per_class: synthetic images per class in the server's set (>= 1).
    share: fraction of the synthetic set each client adds to its data, in [0, 1].
    generator_on: "server" (clients receive subsets of the server's images) or
      "clients" (clients generate their shares themselves: fresh images, same labels).
    augment: False leaves clients' data untouched (the AIGC-only baseline).

  Raises ValueError before any generation on bad arguments or an incompatible generator.
  """
  if generator_on not in GENERATOR_LOCATIONS:
    raise ValueError(f"Unknown genfl.generator_on {generator_on!r}; valid: "
                     f"{', '.join(GENERATOR_LOCATIONS)}.")
  if per_class < 1:
    raise ValueError(f"genfl.synthetic_per_class must be >= 1, got {per_class}.")
  num_clients = len(fed.train.count)
  shares = share_indices(per_class * fed.num_classes, num_clients, share, seed)
  check_compatible(generator, fed.train.x.shape[2:], fed.num_classes)
  server_y = balanced_labels(fed.num_classes, per_class)
  server_x = _generate(generator, server_y, seed, cache_dir, GENFL_SERVER_SET)
  if not augment or share == 0:
    shares = [np.zeros(0, np.int64)] * num_clients
  if generator_on == "server":
    extra_x, extra_y, idx = server_x, server_y, shares
  else:
    extra_y = np.concatenate([server_y[i] for i in shares]).astype(np.int32)
    extra_x = _generate(generator, extra_y, clients_seed(seed), cache_dir, GENFL_CLIENTS_SET)
    idx = _split_points([len(i) for i in shares])
  train, marker = augment_clients(fed.train, extra_x, extra_y, idx)
  return Augmented(_with_train(fed, train), np.array([len(i) for i in shares], np.int64),
                   marker, server_x, server_y)
