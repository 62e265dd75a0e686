"""Label-based client partitions with NIID-Bench semantics.

Li et al., "Federated Learning on Non-IID Data Silos: An Experimental Study"
(ICDE 2022, arXiv 2102.02079). Every partition function takes the dataset's
labels, is deterministic for a seed, uses every example at most once and
returns one sorted ``np.int64`` index array (into ``labels``) per client.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PARTITIONS = ("iid", "dirichlet", "label_k", "pathological", "shards", "quantity")
_MAX_ATTEMPTS = 1000
_HOPELESS_AFTER = 20  # dirichlet: draws before judging whether success is out of reach


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_labels(labels, num_clients: int) -> np.ndarray:
  """Validates labels/num_clients and returns labels as an int64 array."""
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be a 1-D integer array, got shape "
                     f"{labels.shape} dtype {labels.dtype}; pass y_train.")
  if labels.size and labels.min() < 0:
    raise ValueError("labels must be non-negative class ids; remap them to "
                     "0..num_classes-1.")
  if not _is_int(num_clients) or num_clients < 1:
    raise ValueError(f"num_clients must be an integer >= 1, got "
                     f"{num_clients!r}.")
  if num_clients > len(labels):
    raise ValueError(f"num_clients={num_clients} exceeds the number of "
                     f"examples ({len(labels)}); use at most {len(labels)} "
                     "clients or a larger dataset.")
  return labels.astype(np.int64)


def _check_alpha(alpha: float) -> None:
  if not np.isfinite(alpha) or alpha <= 0:
    raise ValueError(f"alpha must be > 0 (Dirichlet concentration; small = "
                     f"more skewed, e.g. 0.5), got {alpha!r}.")


def _check_min_size(min_client_size: int, num_clients: int, n: int) -> int:
  """Validates min_client_size; returns the effective minimum (at least 1)."""
  if not _is_int(min_client_size) or min_client_size < 0:
    raise ValueError(f"min_client_size must be an integer >= 0, got {min_client_size!r}.")
  if min_client_size * num_clients > n:
    raise ValueError(f"min_client_size={min_client_size} x num_clients={num_clients} "
                     f"exceeds the {n} examples; lower min_client_size or "
                     "num_clients.")
  return max(int(min_client_size), 1)


def _finish(parts: Sequence, what: str) -> list[np.ndarray]:
  """Sorts each client's indices; raises if a client is empty."""
  out = [np.sort(np.asarray(p, np.int64)) for p in parts]
  empty = [i for i, p in enumerate(out) if p.size == 0]
  if empty:
    raise ValueError(f"{what} left {len(empty)} client(s) empty (e.g. client "
                     f"{empty[0]}); use fewer clients or more data.")
  return out


def iid(labels, num_clients: int, *, seed: int) -> list[np.ndarray]:
  """Homogeneous partition: shuffle, then split into near-equal parts.

  Args:
    labels: [N] integer class labels.
    num_clients: number of clients.
    seed: random seed.

  Returns:
    One sorted int64 index array per client; all examples are used.
  """
  labels = _check_labels(labels, num_clients)
  perm = np.random.default_rng(seed).permutation(len(labels))
  return _finish(np.array_split(perm, num_clients), "iid")


def dirichlet(labels, num_clients: int, *, alpha: float, seed: int,
              min_client_size: int = 10) -> list[np.ndarray]:
  """NIID-Bench "noniid-labeldir": per-class proportions ~ Dir(alpha).

  For each class, the shuffled examples are split by proportions drawn from
  Dir(alpha) over clients; clients already holding >= N/num_clients examples
  get proportion 0 (renormalised). The whole draw is repeated until every
  client has >= max(min_client_size, 1) examples.

  Args:
    labels: [N] integer class labels.
    num_clients: number of clients.
    alpha: Dirichlet concentration (> 0); smaller is more label-skewed.
    seed: random seed.
    min_client_size: minimum examples per client.

  Returns:
    One sorted int64 index array per client; all examples are used.
  """
  labels = _check_labels(labels, num_clients)
  _check_alpha(alpha)
  need = _check_min_size(min_client_size, num_clients, len(labels))
  rng = np.random.default_rng(seed)
  n = len(labels)
  by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
  short = []  # per complete draw: how many clients hold fewer than `need`
  for _ in range(_MAX_ATTEMPTS):
    parts = [[] for _ in range(num_clients)]
    sizes = np.zeros(num_clients, np.int64)
    for idx in by_class:
      idx = rng.permutation(idx)
      p = rng.dirichlet(np.full(num_clients, alpha)) * (sizes < n / num_clients)
      if not np.isfinite(p).all() or p.sum() <= 0:
        break  # degenerate draw (tiny alpha): resample everything
      cuts = (np.cumsum(p / p.sum()) * len(idx)).astype(int)[:-1]
      for q, chunk in zip(parts, np.split(idx, cuts)):
        q.append(chunk)
      sizes += np.diff(cuts, prepend=0, append=len(idx))
    else:
      if sizes.min() >= need:
        return _finish([np.concatenate(q) for q in parts], "dirichlet")
      short.append(int((sizes < need).sum()))
      if len(short) == _HOPELESS_AFTER and _hopeless(short):
        raise ValueError(
            f"dirichlet partition cannot give every client >= {need} examples (alpha="
            f"{alpha}, num_clients={num_clients}, N={n}): in {len(short)} draws "
            f"{min(short)}-{max(short)} clients fell short (mean {np.mean(short):.1f}), so "
            "a draw with none is out of reach; lower min_client_size, raise alpha, or lower "
            "num_clients (or partition fewer clients and split each).")
  raise ValueError(
      f"dirichlet partition found no draw with every client holding >= "
      f"{need} examples in {_MAX_ATTEMPTS} attempts (alpha={alpha}, "
      f"num_clients={num_clients}, N={n}); lower min_client_size, raise alpha, or "
      "lower num_clients.")


def _hopeless(short: list[int]) -> bool:
  """Whether draws whose shortfall counts were `short` leave a draw with none out of reach:
  under a negative binomial with their mean and variance (a Poisson if not overdispersed),
  all `_MAX_ATTEMPTS` draws would give one with probability below 1%."""
  m, v = float(np.mean(short)), float(np.var(short))
  if min(short) == 0:
    return False
  log_p0 = -m if v <= m else m * m / (v - m) * np.log(m / v)
  return log_p0 + np.log(_MAX_ATTEMPTS) < np.log(0.01)


def _check_k(labels, num_clients: int, k) -> tuple[np.ndarray, np.ndarray]:
  """The checked labels and their classes; raises unless 1 <= k <= number of classes."""
  labels = _check_labels(labels, num_clients)
  classes = np.unique(labels)
  if not _is_int(k) or not 1 <= k <= len(classes):
    raise ValueError(f"k (classes_per_client) must be an integer in "
                     f"[1, {len(classes)}] (the number of classes), got {k!r}.")
  return labels, classes


def label_k(labels, num_clients: int, *, k: int, seed: int
            ) -> list[np.ndarray]:
  """NIID-Bench "#C=k": each client holds examples of k distinct labels.

  Client i gets label ``i % K`` (K = number of distinct labels) plus k-1 other
  distinct labels drawn at random. Each label's shuffled examples are split
  evenly (`np.array_split`) among the clients holding it; labels held by no
  client are unused.

  Args:
    labels: [N] integer class labels.
    num_clients: number of clients.
    k: labels per client, 1 <= k <= K.
    seed: random seed.

  Returns:
    One sorted int64 index array per client.
  """
  labels, classes = _check_k(labels, num_clients, k)
  rng = np.random.default_rng(seed)
  held = []
  for i in range(num_clients):
    own = i % len(classes)
    others = np.delete(np.arange(len(classes)), own)
    held.append({own, *rng.choice(others, k - 1, replace=False).tolist()})
  parts = [[] for _ in range(num_clients)]
  for j, c in enumerate(classes):
    holders = [i for i in range(num_clients) if j in held[i]]
    if holders:
      idx = rng.permutation(np.flatnonzero(labels == c))
      for i, chunk in zip(holders, np.array_split(idx, len(holders))):
        parts[i].extend(chunk.tolist())
  return _finish(parts, f"label_k (k={k})")


def pathological(labels, num_clients: int, *, k: int, seed: int, min_client_size: int = 40
                 ) -> list[np.ndarray]:
  """PFLlib's "pat" split (Zhang et al., arXiv 2312.04992, `dataset_utils.separate_data`,
  unbalanced): the classes are dealt in order to the clients that still want one, each
  class to the first ceil(num_clients / K * k) of them, so clients hold k consecutive
  classes (20 clients, 10 classes, k=2: clients 0-3 hold {0, 1}, 4-7 {2, 3}, ...). A
  class is shared in random sizes: every holder but the last draws an integer in
  [max(n_c / h / 10, min_client_size / K), n_c / h) (n_c examples, h holders), the last gets the
  rest. Unlike `label_k` (NIID-Bench's #C=k: a client's other labels at random), the
  classes a client pairs are fixed, which decides how hard its local task is.

  Args:
    labels: [N] integer class labels.
    num_clients: number of clients.
    k: classes per client, 1 <= k <= K.
    seed: random seed (shuffles each class and draws the sizes).
    min_client_size: PFLlib's `least_samples`, the floor of the size draws (times K).

  Returns:
    One sorted int64 index array per client.
  """
  labels, classes = _check_k(labels, num_clients, k)
  rng = np.random.default_rng(seed)
  wants = np.full(num_clients, k)
  per_class = int(np.ceil(num_clients / len(classes) * k))
  parts = [[] for _ in range(num_clients)]
  for c in classes:
    holders = np.flatnonzero(wants > 0)[:per_class]
    if not len(holders):
      continue
    idx = rng.permutation(np.flatnonzero(labels == c))
    mean = len(idx) / len(holders)
    low = max(mean / 10, min_client_size / len(classes))
    sizes = (rng.integers(int(low), max(int(mean), int(low) + 1), len(holders) - 1)
             if low < mean else np.full(len(holders) - 1, int(mean)))
    sizes = [*sizes.tolist(), len(idx) - int(sizes.sum())]
    for i, chunk in zip(holders, np.split(idx, np.cumsum(sizes)[:-1])):
      parts[i].extend(chunk.tolist())
    wants[holders] -= 1
  return _finish(parts, f"pathological (k={k})")


def shards(labels, num_clients: int, *, shards_per_client: int = 2,
           seed: int) -> list[np.ndarray]:
  """McMahan et al. 2017 pathological split: label-sorted shards.

  The examples are sorted by label (random order within a label) and cut into
  ``num_clients * shards_per_client`` equal shards of ``N // num_shards``
  examples; each client gets `shards_per_client` random shards. When N is not
  divisible by the number of shards, ``N % num_shards`` random examples are
  left unused.

  Args:
    labels: [N] integer class labels.
    num_clients: number of clients.
    shards_per_client: shards per client (>= 1).
    seed: random seed.

  Returns:
    One sorted int64 index array per client.
  """
  labels = _check_labels(labels, num_clients)
  if not _is_int(shards_per_client) or shards_per_client < 1:
    raise ValueError(f"shards_per_client must be an integer >= 1, got "
                     f"{shards_per_client!r}.")
  num_shards = num_clients * shards_per_client
  size = len(labels) // num_shards
  if size == 0:
    raise ValueError(f"shards: {len(labels)} examples are too few for "
                     f"{num_shards} shards ({num_clients} clients x "
                     f"{shards_per_client}), which would leave clients empty; "
                     "lower num_clients or shards_per_client.")
  rng = np.random.default_rng(seed)
  keep = rng.permutation(len(labels))[:num_shards * size]
  order = keep[np.argsort(labels[keep], kind="stable")]
  pieces = order.reshape(num_shards, size)[rng.permutation(num_shards)]
  return _finish(pieces.reshape(num_clients, -1), "shards")


def quantity(labels, num_clients: int, *, alpha: float, seed: int,
             min_client_size: int = 10) -> list[np.ndarray]:
  """NIID-Bench "iid-diff-quantity": iid labels, client sizes ~ Dir(alpha).

  Args:
    labels: [N] integer class labels (only their number matters).
    num_clients: number of clients.
    alpha: Dirichlet concentration (> 0); smaller is more size-skewed.
    seed: random seed.
    min_client_size: minimum examples per client (at least 1 is enforced).

  Returns:
    One sorted int64 index array per client; all examples are used.
  """
  labels = _check_labels(labels, num_clients)
  _check_alpha(alpha)
  need = _check_min_size(min_client_size, num_clients, len(labels))
  rng = np.random.default_rng(seed)
  perm = rng.permutation(len(labels))
  for _ in range(_MAX_ATTEMPTS):
    p = rng.dirichlet(np.full(num_clients, alpha))
    if not np.isfinite(p).all() or p.sum() <= 0:
      continue
    cuts = (np.cumsum(p / p.sum()) * len(perm)).astype(int)[:-1]
    parts = np.split(perm, cuts)
    if min(len(q) for q in parts) >= need:
      return _finish(parts, "quantity")
  raise ValueError(
      f"quantity partition found no draw with every client holding >= {need} "
      f"examples in {_MAX_ATTEMPTS} attempts (alpha={alpha}, num_clients="
      f"{num_clients}, N={len(labels)}); lower min_client_size, raise alpha, or "
      "lower num_clients.")


def partition(labels, num_clients: int, method: str, *, seed: int,
              alpha: float = 0.5, classes_per_client: int = 2,
              shards_per_client: int = 2, min_client_size: int = 10
              ) -> list[np.ndarray]:
  """Dispatches to a partition function by name.

  Args:
    labels: [N] integer class labels.
    num_clients: number of clients.
    method: one of `PARTITIONS`.
    seed: random seed.
    alpha: Dirichlet concentration for "dirichlet" and "quantity".
    classes_per_client: k for "label_k" and "pathological".
    shards_per_client: shards per client for "shards".
    min_client_size: minimum client size for "dirichlet" and "quantity"; the size floor of
      "pathological".

  Returns:
    One sorted int64 index array per client.
  """
  if method == "iid":
    return iid(labels, num_clients, seed=seed)
  if method == "dirichlet":
    return dirichlet(labels, num_clients, alpha=alpha, seed=seed,
                     min_client_size=min_client_size)
  if method == "label_k":
    return label_k(labels, num_clients, k=classes_per_client, seed=seed)
  if method == "pathological":
    return pathological(labels, num_clients, k=classes_per_client, seed=seed,
                        min_client_size=min_client_size)
  if method == "shards":
    return shards(labels, num_clients, shards_per_client=shards_per_client,
                  seed=seed)
  if method == "quantity":
    return quantity(labels, num_clients, alpha=alpha, seed=seed,
                    min_client_size=min_client_size)
  raise ValueError(f"Unknown partition {method!r}; use one of {PARTITIONS}.")


def split_local(indices: Sequence[np.ndarray], *, test_fraction: float = 0.25,
                seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Splits each client's examples into local train and test parts.

  Each client's indices are shuffled and the first ``round(test_fraction *
  n)`` go to test, with at least 1 test example when ``test_fraction > 0``
  and at least 1 train example when the client has >= 2 examples.

  Args:
    indices: one index array per client.
    test_fraction: fraction of each client's examples held out, in [0, 1).
    seed: random seed.

  Returns:
    (train, test): lists of sorted int64 index arrays, one per client.
  """
  if not 0 <= test_fraction < 1:
    raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}; "
                     "use e.g. 0.25, or 0 for no local test split.")
  rng = np.random.default_rng(seed)
  train, test = [], []
  for idx in indices:
    idx = rng.permutation(np.asarray(idx, np.int64))
    n = len(idx)
    n_test = int(np.floor(test_fraction * n + 0.5))
    if test_fraction > 0:
      n_test = max(n_test, 1)
    if n >= 2:
      n_test = min(n_test, n - 1)
    n_test = min(n_test, n)
    test.append(np.sort(idx[:n_test]))
    train.append(np.sort(idx[n_test:]))
  return train, test


def label_counts(labels, indices: Sequence[np.ndarray], num_classes: int
                 ) -> np.ndarray:
  """Counts each client's examples per class.

  Args:
    labels: [N] integer class labels.
    indices: one index array per client.
    num_classes: number of classes (columns).

  Returns:
    [clients, num_classes] int64 counts.
  """
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must lie in [0, {num_classes}); got range "
                     f"[{labels.min()}, {labels.max()}]. Pass the dataset's "
                     "num_classes.")
  return np.stack([np.bincount(labels[np.asarray(i, np.int64)],
                               minlength=num_classes) for i in indices]
                  ) if len(indices) else np.zeros((0, num_classes), np.int64)


def label_skew(counts) -> float:
  """How far clients' labels are from the population's: the mean over clients of the total
  variation distance between a client's label distribution and the pooled one. 0 for IID
  clients; 1 - 1/classes when each client holds one class of a balanced dataset (0.9 for
  ten); with ten classes, two per client gives 0.8 and Dirichlet(0.5) about 0.5.

  Args:
    counts: [clients, classes] counts (`label_counts`); clients without examples are
      skipped.
  """
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 2:
    raise ValueError(f"counts must be [clients, classes], got shape {counts.shape}.")
  counts = counts[counts.sum(1) > 0]
  if not len(counts):
    return 0.0
  pooled = counts.sum(0) / counts.sum()
  client = counts / counts.sum(1, keepdims=True)
  return float(0.5 * np.abs(client - pooled).sum(1).mean())


def format_label_counts(counts, class_names: Sequence[str] | None = None
                        ) -> str:
  """Formats a [clients, classes] count matrix as a text table with totals.

  Args:
    counts: [clients, classes] integer counts (e.g. from `label_counts`).
    class_names: optional column names (default: class ids).

  Returns:
    The table: a header, one row per client (with its total) and a total row.
  """
  counts = np.asarray(counts)
  if counts.ndim != 2:
    raise ValueError(f"counts must be [clients, classes], got shape "
                     f"{counts.shape}; use label_counts(...).")
  names = [str(c) for c in (class_names if class_names is not None
                            else range(counts.shape[1]))]
  if len(names) != counts.shape[1]:
    raise ValueError(f"got {len(names)} class_names for {counts.shape[1]} "
                     "classes; pass one name per column.")
  rows = [["client", *names, "total"]]
  rows += [[str(i), *map(str, r), str(r.sum())] for i, r in enumerate(counts)]
  rows.append(["total", *map(str, counts.sum(0)), str(counts.sum())])
  widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
  lines = [" ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
  rule = "-" * len(lines[0])
  return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


def save_label_heatmap(counts, path: str, *,
                       class_names: Sequence[str] | None = None,
                       title: str | None = None) -> None:
  """Saves a clients x classes heatmap of label counts as a PNG.

  Counts are written into the cells when the matrix has at most 400 cells.
  The file is written atomically (temporary file, then `os.replace`).

  Args:
    counts: [clients, classes] integer counts.
    path: output PNG path (parent folders are created).
    class_names: optional x-axis labels.
    title: optional figure title.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from fedjax_gen.outputs import save_figure
  counts = np.asarray(counts)
  if counts.ndim != 2 or counts.size == 0:
    raise ValueError(f"counts must be a non-empty [clients, classes] matrix, "
                     f"got shape {counts.shape}; use label_counts(...).")
  n_clients, n_classes = counts.shape
  if class_names is not None and len(class_names) != n_classes:
    raise ValueError(f"got {len(class_names)} class_names for {n_classes} "
                     "classes; pass one name per column.")
  fig = Figure(figsize=(min(2 + 0.6 * n_classes, 20),
                        min(1.5 + 0.35 * n_clients, 20)))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  im = ax.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest")
  fig.colorbar(im, ax=ax, label="examples")
  ax.set_xlabel("class")
  ax.set_ylabel("client")
  if class_names is not None and n_classes <= 50:
    ax.set_xticks(range(n_classes), [str(c) for c in class_names],
                  rotation=90 if n_classes > 10 else 45, ha="right")
  if n_clients <= 50:
    ax.set_yticks(range(n_clients))
  if title:
    ax.set_title(title)
  if counts.size <= 400:
    mid = counts.max() / 2
    for (i, j), v in np.ndenumerate(counts):
      ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
              color="black" if v > mid else "white")
  fig.tight_layout()
  save_figure(fig, path, dpi=100)
