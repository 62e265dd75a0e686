"""Gen-FedSD's fill rules: how many images each client generates for each class.

Gen-FedSD (Morafah et al., arXiv 2405.07925) lets every client look at its own label
histogram before federated training and generate the images that make its local data
(close to) IID. The paper's default fills every class up to the client's largest one; it
also mentions a fixed budget per client and matching the global label distribution. The
exact integer rules of the last two are ours (below); each is a pure NumPy function of the
`[clients, classes]` label counts, so the numbers can be checked by hand
(`tests/augment/test_fill.py`).
"""

from __future__ import annotations

import numpy as np

FILL_RULES = ("max", "budget", "global")


def _check_counts(label_counts) -> np.ndarray:
  counts = np.asarray(label_counts)
  if counts.ndim != 2:
    raise ValueError(f"label_counts must be [clients, classes], got shape {counts.shape}.")
  if counts.size and (counts.min() < 0 or not np.all(counts == np.round(counts))):
    raise ValueError("label_counts must hold non-negative integer counts.")
  return counts.astype(np.int64)


def fill_max(counts: np.ndarray) -> np.ndarray:
  """The paper's default: `n_gen[c] = max_c' n[c'] - n[c]` (every class up to the largest)."""
  return counts.max(axis=1, keepdims=True) - counts


def _water_fill(n: np.ndarray, budget: int) -> np.ndarray:
  """Exactly `budget` images over one client's classes, rarest first (see `fill_budget`)."""
  if budget == 0:
    return np.zeros_like(n)
  # The highest level L with sum_c max(0, L - n_c) <= budget (binary search on integers).
  lo, hi = int(n.min()), int(n.min()) + budget
  while lo < hi:
    mid = (lo + hi + 1) // 2
    if np.maximum(0, mid - n).sum() <= budget:
      lo = mid
    else:
      hi = mid - 1
  gen = np.maximum(0, lo - n)
  rest = budget - int(gen.sum())  # < number of classes now at level L, by maximality of L
  at_level = np.flatnonzero(n <= lo)
  gen[at_level[:rest]] += 1
  return gen


def fill_budget(counts: np.ndarray, budget: int) -> np.ndarray:
  """A fixed `budget` of images per client, spread over its rarest classes (ours).

  Water-filling: images are added one at a time, each to the class with the fewest
  (real + generated) examples, ties going to the lowest class index. Equivalently: every
  class is raised to the highest common level `L` that the budget affords
  (`sum_c max(0, L - n_c) <= budget`), and the `budget - sum` images left over go, one
  each, to the lowest-indexed classes at level `L`. Each client's row sums to `budget`
  exactly (a large budget raises every class above the largest one).
  """
  return np.stack([_water_fill(row, int(budget)) for row in counts]) if len(counts) else \
      np.zeros_like(counts)


def fill_global(counts: np.ndarray, global_counts: np.ndarray) -> np.ndarray:
  """Up to the global label distribution, without removing real data (ours).

  With `p = global_counts / sum(global_counts)`, a client with counts `n` is scaled to
  the smallest size `S` at which the global proportions hold every real example:
  `S = max_c n_c / p_c`; its target per class is `round(S * p_c)` (half up), never below
  `n_c`, and `n_gen = target - n`. The class attaining the maximum gets no images; a
  client whose distribution already equals the global one gets none at all. With a
  uniform global distribution this is the `max` rule. Computed in integers:
  `S * p_c = n_a * g_c / g_a` for the maximising class `a`.
  """
  g = np.asarray(global_counts)
  if g.shape != (counts.shape[1],):
    raise ValueError(f"global_counts must have one entry per class ({counts.shape[1]}), "
                     f"got shape {g.shape}.")
  g = g.astype(np.int64)
  if g.min() < 0:
    raise ValueError("global_counts must be non-negative.")
  out = np.zeros_like(counts)
  for k, n in enumerate(counts):
    if n.sum() == 0:
      continue
    missing = np.flatnonzero((n > 0) & (g == 0))
    if missing.size:
      raise ValueError(f"Client {k} holds class {int(missing[0])}, which global_counts "
                       "says no one holds; pass the counts of the whole population.")
    has = np.flatnonzero(g > 0)
    a = has[np.argmax(n[has] / g[has])]
    target = (2 * n[a] * g + g[a]) // (2 * g[a])  # round(n_a * g_c / g_a), half up
    out[k] = np.maximum(target, n) - n
  return out


def fill_counts(label_counts, rule: str = "max", *, budget: int = 0,
                global_counts=None) -> np.ndarray:
  """Images to generate per client and class, `[clients, classes]` int64.

  Args:
    label_counts: `[clients, classes]` real training label counts.
    rule: "max" (the paper's default, `fill_max`), "budget" (`fill_budget`) or "global"
      (`fill_global`).
    budget: images per client for rule="budget" (>= 0).
    global_counts: `[classes]` counts defining the global distribution for
      rule="global"; default: the column sums of `label_counts` (the whole population).
  """
  if rule not in FILL_RULES:
    raise ValueError(f"Unknown fill rule {rule!r}; valid rules: {', '.join(FILL_RULES)}.")
  if budget < 0 or int(budget) != budget:
    raise ValueError(f"The fill budget must be a non-negative integer (images per client), "
                     f"got {budget}.")
  counts = _check_counts(label_counts)
  if rule == "max":
    return fill_max(counts)
  if rule == "budget":
    return fill_budget(counts, int(budget))
  return fill_global(counts, counts.sum(axis=0) if global_counts is None else global_counts)
