"""Local fine-tuning as an `Adaptation`: the shared piece of FedAvg+FT, FedBABU, FedRep's
head training and the newcomer recipes."""

from __future__ import annotations

from typing import Callable, Optional

import optax

from fedjax_gen.algorithms import base


def finetune(loss_fn: base.LossFn, opt: optax.GradientTransformation, *,
             start: Callable[[base.PyTree, base.PyTree], base.Params] = lambda s, c: s.params,
             trainable: Optional[base.PyTree] = None) -> base.Adaptation:
  """Local SGD from `start(server, client_state)` (default: the global model).

  Args:
    trainable: optional boolean pytree over the params; frozen leaves keep their value
      exactly (see `base.local_step`).
  """

  def init(server, client_state, key):
    del key
    return base.local_init(opt, start(server, client_state))

  def step(server, carry, batch):
    del server
    return base.local_step(loss_fn, opt, carry, batch, trainable)

  def final(server, client_state, carry):
    return carry.params

  return base.Adaptation(init, step, final)
