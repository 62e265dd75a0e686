"""The data family of a run's config (`data.*`) and the checks of every data key."""

from __future__ import annotations

from fedjax_gen.data.datasets import DATASETS, SOURCES
from fedjax_gen.data.partition import PARTITIONS
from fedjax_gen.types import Option

DATASET_CLASSES = {"digits": 10, "fashion_mnist": 10, "mnist": 10, "cifar10": 10,
                   "cifar100": 100, "emnist": 47}

OPTIONS = (
    Option("dir", "", "where the dataset is read from (\"\" = its default location)", "free"),
    Option("source", "auto", "auto | sklearn | idx | tfds"),
    Option("shards_per_client", 2, "shards per client (partition=shards)"),
    Option("min_client_size", 10, "dirichlet/quantity redraw until every client has this many"),
    Option("test_fraction", 0.25, "each client's local test split (personalized evaluation)"),
    Option("show_label_counts", False, "print each client's label counts before training",
           "free"),
    Option("layout", "auto", "where the training clients' examples live: device (padded to "
           "the largest client, on the device for the run) | store (on the host, unpadded; "
           "each round's clients gathered and moved) | auto (device while the padded "
           "population takes at most a quarter of the device's memory); a run with client "
           "states resumes under the layout it started with", "free"),
)
LAYOUTS = ("auto", "device", "store")


def check_options(c) -> None:
  """Top-level data keys (dataset, partition, alpha, classes_per_client) and `c.data`."""
  for key, valid in (("dataset", DATASETS), ("partition", PARTITIONS)):
    if c[key] not in valid:
      raise ValueError(f"Unknown {key} {c[key]!r}; valid names: {', '.join(valid)}.")
  if c.data.layout not in LAYOUTS:
    raise ValueError(f"Unknown data.layout {c.data.layout!r}; valid: {', '.join(LAYOUTS)}.")
  if c.data.layout == "store" and c.get("task", "classify") != "classify":
    raise ValueError(f"data.layout=store trains classifiers (task=classify); a task={c.task} "
                     "run keeps its data on the device: use data.layout=auto or device.")
  if c.data.source not in SOURCES:
    raise ValueError(f"Unknown data.source {c.data.source!r}; valid: {', '.join(SOURCES)}.")
  if c.partition in ("dirichlet", "quantity") and not c.alpha > 0:
    raise ValueError(f"alpha must be > 0 for partition={c.partition}, got {c.alpha}: "
                     "small alpha (e.g. 0.1) is very non-IID, large (e.g. 100) near IID.")
  num_classes = DATASET_CLASSES[c.dataset]
  if (c.partition in ("label_k", "pathological")
      and not 1 <= c.classes_per_client <= num_classes):
    raise ValueError(f"classes_per_client={c.classes_per_client} is outside [1, "
                     f"{num_classes}]: {c.dataset} has {num_classes} classes.")
  if not 0 <= c.data.test_fraction < 1:
    raise ValueError(f"data.test_fraction must be in [0, 1), got {c.data.test_fraction}.")
