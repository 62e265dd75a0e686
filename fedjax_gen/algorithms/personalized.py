"""Personalized FL baselines built from FedAvg's pieces: Local-only, FedAvg+FT, FedPer,
FedBN, FedRep and FedBABU. (Ditto, APFL, pFedMe and Per-FedAvg have modules of their own.)

References:
  FedAvg+FT: fine-tuning the global model locally before evaluation, e.g. Wang et al.,
    "Federated Evaluation of On-device Personalization", arXiv 1910.10252.
  FedPer: Arivazhagan et al., "Federated Learning with Personalization Layers",
    arXiv 1912.00818 (the head stays on the client; the body is averaged).
  FedBN: Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
    Normalization", ICLR 2021 (arXiv 2102.07623): normalisation layers are never averaged.
    Our models use GroupNorm (ResNet-18) or no normalisation (the CNNs, where FedBN is
    FedAvg, as in PFLlib's 4-layer CNN).
  FedRep: Collins et al., "Exploiting Shared Representations for Personalized Federated
    Learning", ICML 2021 (arXiv 2102.07078): each round trains the head with the body
    frozen, then the body with the head frozen; only the body is averaged.
  FedBABU: Oh, Kim, Yun, "FedBABU: Towards Enhanced Representation for Federated Image
    Classification", ICLR 2022 (arXiv 2106.06042): the head stays at its random
    initialisation during FL; the whole model is fine-tuned before evaluation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from fedjax_gen.algorithms import base
from fedjax_gen.algorithms.fedavg import fedavg
from fedjax_gen.algorithms.finetune import finetune
from fedjax_gen.algorithms.layers import select, zero_where


def local_only(loss_fn, client_opt) -> base.FederatedAlgorithm:
  """Each client trains its own model from the shared initialisation; nothing is averaged.

  The server state keeps the initial model (what a newcomer starts from).
  """
  avg = fedavg(loss_fn, client_opt)

  def client_init(server, personal, key):
    del server, key
    return base.local_init(client_opt, personal)

  def client_final(server, personal, carry):
    return (), carry.params

  return avg._replace(
      client_state_init=lambda params: params, client_init=client_init,
      client_final=client_final, server_update=lambda server, uploads, weights: server,
      eval_params=lambda server, personal: personal,
      newcomer=finetune(loss_fn, client_opt))


def fedavg_ft(loss_fn, client_opt, server_opt) -> base.FederatedAlgorithm:
  """FedAvg whose clients fine-tune the global model locally before evaluation."""
  tune = finetune(loss_fn, client_opt)
  return fedavg(loss_fn, client_opt, server_opt)._replace(personalize=tune, newcomer=tune)


def partial_personalization(loss_fn, client_opt, server_opt, personal: base.PyTree
                            ) -> base.FederatedAlgorithm:
  """FedPer (personal = the head) and FedBN (personal = normalisation layers).

  The client state holds the whole model but only its `personal` part is used: the client
  trains [global shared part + its own personal part]; the shared part is averaged.
  Newcomers train only their personal part, from the global model.
  """
  avg = fedavg(loss_fn, client_opt, server_opt)
  merge = lambda server, own: select(personal, own, server.params)

  def client_init(server, own, key):
    del key
    return base.local_init(client_opt, merge(server, own))

  def client_final(server, own, carry):
    delta = base.tree_sub(server.params, carry.params)
    return zero_where(personal, delta), select(personal, carry.params, own)

  return avg._replace(
      client_state_init=lambda params: params, client_init=client_init,
      client_final=client_final, eval_params=merge,
      newcomer=finetune(loss_fn, client_opt, trainable=personal))


def fedrep(loss_fn, client_opt, server_opt, head: base.PyTree, *,
           head_fraction: float = 0.5) -> base.FederatedAlgorithm:
  """FedRep: the first `head_fraction` of each client's local steps train only its head
  (body frozen), the rest only the body (head frozen); the body is averaged.

  PFLlib's default (1 head epoch, 1 body epoch) is head_fraction=0.5.
  """
  if not 0 <= head_fraction <= 1:
    raise ValueError(f"FedRep head_fraction must be in [0, 1], got {head_fraction}.")
  base_alg = partial_personalization(loss_fn, client_opt, server_opt, head)

  def client_step(server, carry, batch):
    del server
    head_phase = batch.step < jnp.ceil(head_fraction * batch.num_steps)
    trainable = jax.tree.map(lambda h: head_phase == h, head)
    return base.local_step(loss_fn, client_opt, carry, batch, trainable)

  return base_alg._replace(client_step=client_step)


def fedbabu(loss_fn, client_opt, server_opt, head: base.PyTree) -> base.FederatedAlgorithm:
  """FedBABU: only the body trains during FL (the head keeps its initial values); before
  evaluation (and for newcomers) the whole model is fine-tuned locally."""
  body = jax.tree.map(lambda h: not h, head)
  avg = fedavg(loss_fn, client_opt, server_opt)
  tune = finetune(loss_fn, client_opt)

  def client_step(server, carry, batch):
    del server
    return base.local_step(loss_fn, client_opt, carry, batch, body)

  return avg._replace(client_step=client_step, personalize=tune, newcomer=tune)
