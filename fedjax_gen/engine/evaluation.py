"""Evaluation: the global model on the global test set, and each client's model on its
own local test split (personalized accuracy: mean, std and the mean of the worst 10%)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_gen.types import Batch


def masked_cross_entropy(apply_fn: Callable) -> Callable:
  """`loss_fn(params, batch)`: mean softmax cross-entropy over the batch's real examples."""
  def loss_fn(params, batch: Batch):
    ce = optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, batch.x), batch.y)
    mask = batch.mask.astype(ce.dtype)
    return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
  return loss_fn


def _batch_stats(apply_fn, params, x, y, mask):
  logits = apply_fn(params, x)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  correct = (jnp.argmax(logits, -1) == y) & mask
  return correct, jnp.where(mask, ce, 0.0)


class Evaluator:
  """Jitted evaluation over fixed-size batches (one compile per shape).

  Args:
    apply_fn: `apply_fn(params, x) -> logits`.
    test_x, test_y: the global test set (NumPy), moved to the device once.
    local_x, local_y, local_count: clients' padded local test splits.
    batch_size: examples per evaluation batch.
  """

  def __init__(self, apply_fn, test_x, test_y, local_x, local_y, local_count, *,
               batch_size: int = 1000):
    self.apply_fn, self.batch_size = apply_fn, batch_size
    self.test = self._flat_batches(test_x, test_y, np.ones(len(test_y), bool))
    c, t = local_y.shape
    mask = np.arange(t)[None, :] < np.asarray(local_count)[:, None]
    self.num_clients = c
    self.local_count = np.asarray(local_count)
    self.local = self._flat_batches(local_x.reshape(c * t, *local_x.shape[2:]),
                                    local_y.reshape(-1), mask.reshape(-1))
    self.local_stacked = (jax.device_put(local_x), jax.device_put(local_y), jax.device_put(mask))
    self._stats = jax.jit(lambda p, x, y, m: _batch_stats(apply_fn, p, x, y, m))
    self._client_stats = jax.jit(jax.vmap(
        lambda p, x, y, m: _batch_stats(apply_fn, p, x, y, m)))

  def _flat_batches(self, x, y, mask):
    n = len(y)
    b = max(1, min(self.batch_size, n))
    pad = (-n) % b
    padded = lambda a: np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
    x, y, mask = padded(np.asarray(x)), padded(np.asarray(y, np.int32)), padded(mask)
    shape = lambda a: a.reshape(-1, b, *a.shape[1:])
    return tuple(jax.device_put(shape(a)) for a in (x, y, mask))

  def _run(self, params, batches):
    correct, losses = [], []
    for x, y, m in zip(*batches):
      c, l = self._stats(params, x, y, m)
      correct.append(c)
      losses.append(l)
    return jnp.concatenate(correct), jnp.concatenate(losses)

  def global_metrics(self, params) -> dict[str, float]:
    correct, losses = self._run(params, self.test)
    n = float(np.asarray(self.test[2]).sum())
    return {"global_accuracy": float(correct.sum()) / n, "global_loss": float(losses.sum()) / n}

  def client_accuracies(self, ids, params=None, client_params=None,
                        chunk: int = 8) -> np.ndarray:
    """Accuracy of clients `ids` on their local test splits; NaN where a split is empty.

    Pass `params` (one model for every client) or `client_params` (stacked over `ids`,
    evaluated `chunk` clients at a time).
    """
    ids = np.asarray(ids)
    if client_params is None:
      correct, _ = self._run(params, self.local)  # flat [clients * max_test + padding]
      per_example = np.asarray(correct)[: self.local_stacked[1].size]
      hits = per_example.reshape(self.num_clients, -1).sum(1)[ids]
    else:
      x, y, m = self.local_stacked
      hits = []
      for s in range(0, len(ids), chunk):
        sel = jnp.asarray(ids[s:s + chunk])
        p = jax.tree.map(lambda a: a[s:s + chunk], client_params)
        c, _ = self._client_stats(p, x[sel], y[sel], m[sel])
        hits.append(np.asarray(c.sum(1)))
      hits = np.concatenate(hits)
    count = self.local_count[ids]
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(count > 0, hits / count, np.nan)


def personalized_summary(acc: np.ndarray, prefix: str = "personalized"
                         ) -> dict[str, float | None]:
  """Mean, std and worst-10% mean (at least one client) of per-client accuracies."""
  acc = acc[~np.isnan(acc)]
  if acc.size == 0:
    return {f"{prefix}_accuracy": None, f"{prefix}_std": None, f"{prefix}_worst10": None}
  worst = np.sort(acc)[: max(1, int(np.ceil(0.1 * acc.size)))]
  return {f"{prefix}_accuracy": float(acc.mean()), f"{prefix}_std": float(acc.std()),
          f"{prefix}_worst10": float(worst.mean())}
