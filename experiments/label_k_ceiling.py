"""How high can personalized accuracy go on a 2-class split? Two pooled-data references.

A client of `pfllib_fmnist` with 2 classes only has to tell its 2 classes apart. This script
scores each client's local test split with the prediction restricted to that client's
classes (argmax over its 2 logits), for the config's CNN trained with Adam on
* "central": the union of all clients' local TRAIN splits (no local test image), and
* "specialist": only the images of that client's 2 classes from that union: every example
  of its task the whole federation holds.
The mean over clients estimates (it does not prove) the ceiling of personalized accuracy:
a personalized method has no more data for a client's task than the specialist. PFLlib's
consecutive pairs ({T-shirt, Trouser}, ...) are easy; #C=2 (`label_k`) draws the second
class at random and can give a client Shirt vs T-shirt.

    python experiments/label_k_ceiling.py                    # label_k and pathological, seed 0
    python experiments/label_k_ceiling.py --seeds 0 1 2 --epochs 5
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np
import optax

from fedjax_gen import config as config_lib
from fedjax_gen.models import get_model, init_params
from fedjax_gen.trainer.train import load_federated_data


def _valid(arrays):
  """A split's real examples (the padding dropped): x [n, ...], y [n], client [n]."""
  mask = np.arange(arrays.y.shape[1])[None] < arrays.count[:, None]
  client = np.broadcast_to(np.arange(len(arrays.count))[:, None], mask.shape)
  return arrays.x[mask], arrays.y[mask], client[mask]


def _trainer(model, *, batch_size: int = 128, lr: float = 1e-3):
  """`train(params, x, y, epochs, seed)`: Adam on the cross-entropy, `epochs` shuffled
  passes; and `logits(params, x)`. Each jitted once for every call."""
  opt = optax.adam(lr)

  @jax.jit
  def step(params, opt_state, xb, yb):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, xb), yb).mean()
    updates, opt_state = opt.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def train(params, x, y, epochs, seed):
    opt_state = opt.init(params)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
      order = rng.permutation(len(y))
      for i in range(0, len(y) - batch_size + 1, batch_size):
        params, opt_state = step(params, opt_state, x[order[i:i + batch_size]],
                                 y[order[i:i + batch_size]])
    return params

  apply = jax.jit(lambda params, xb: model.apply({"params": params}, xb))

  def logits(params, x):
    return np.concatenate([np.asarray(apply(params, x[i:i + 1000]))
                           for i in range(0, len(x), 1000)])

  return train, logits


def reference_accuracies(config, *, epochs: int) -> dict:
  """Each client's test-split accuracy with the logits restricted to its train classes,
  for (a) `config.model` trained on all clients' train splits ("central") and (b) one
  trained on the pooled train data of that client's classes only ("specialist")."""
  data = load_federated_data(config)
  x, y, _ = _valid(data.train)
  tx, ty, tc = _valid(data.test)
  model = get_model(config.model, num_classes=data.num_classes, input_shape=x.shape[1:])
  init = init_params(model, x.shape[1:], jax.random.key(config.seed))
  present = data.label_counts > 0  # [clients, classes]
  train, logits_of = _trainer(model)

  def restricted_accuracy(logits, clients):
    pred = np.where(present[tc[clients]], logits, -np.inf).argmax(-1)
    return float((pred == ty[clients]).mean())

  logits = logits_of(train(init, x, y, epochs, config.seed), tx)
  central = [restricted_accuracy(logits[tc == c], tc == c) for c in range(len(present))]
  print(f"  central model: 10-class accuracy {100 * (logits.argmax(-1) == ty).mean():.1f}%",
        file=sys.stderr, flush=True)

  specialist = [0.0] * len(present)
  for classes in sorted({tuple(np.flatnonzero(p)) for p in present}):
    pooled = np.isin(y, classes)
    params = train(init, x[pooled], y[pooled], epochs, config.seed)
    for c in np.flatnonzero((present == np.isin(np.arange(data.num_classes),
                                                classes)).all(-1)):
      specialist[c] = restricted_accuracy(logits_of(params, tx[tc == c]), tc == c)
  names = data.class_names
  return {"classes": [[names[k] for k in np.flatnonzero(p)] for p in present],
          "central": central, "specialist": specialist}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", nargs="+", type=int, default=[0])
  parser.add_argument("--epochs", type=int, default=5)
  parser.add_argument("--partitions", nargs="+", default=["label_k", "pathological"])
  args = parser.parse_args(argv)
  if args.epochs < 1:
    parser.error(f"--epochs must be >= 1, got {args.epochs}")
  for partition in args.partitions:
    for seed in args.seeds:
      config = config_lib.apply_overrides(config_lib.load_config("pfllib_fmnist"),
                                          [f"partition={partition}", f"seed={seed}"])
      r = reference_accuracies(config, epochs=args.epochs)
      print(f"\n{partition} seed {seed}, mean over clients of the 2-class accuracy: "
            f"central {100 * np.mean(r['central']):.1f}%, "
            f"specialist {100 * np.mean(r['specialist']):.1f}%; hardest clients:")
      for c in np.argsort(r["specialist"])[:5]:
        print(f"  client {c:2d} {' vs '.join(r['classes'][c]):28s} central "
              f"{100 * r['central'][c]:.1f}%, specialist {100 * r['specialist'][c]:.1f}%")
  return 0


if __name__ == "__main__":
  sys.exit(main())
